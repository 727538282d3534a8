"""bench/formats.py: every generated file is recognised by its source and parses whole."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_format_bench_runs_on_small_files():
    r = subprocess.run([sys.executable, str(REPO / "bench" / "formats.py"), "--rows", "1500"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = {line[:34].strip(): line.split() for line in r.stdout.splitlines()[2:-1]}
    assert set(rows) == {"orders export (CSV)", "WeChat Pay trade bill (v3 ALL)", "Alipay trade bill (zip, GBK)",
                         "WeChat Pay fund-flow bill", "MT940", "camt.053 (v02)", "Stripe itemized balance report"}
    for name in ("Alipay trade bill (zip, GBK)", "WeChat Pay fund-flow bill", "MT940", "camt.053 (v02)",
                 "Stripe itemized balance report"):
        assert rows[name][-5] == "1,500", rows[name]  # every generated row was read
