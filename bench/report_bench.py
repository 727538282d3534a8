"""Benchmark of `recon report` on a reconciled synthetic day (bench/gen_day.py), as an
operator runs it:

    .venv/bin/python bench/report_bench.py                  # N = 100_000 and 1_000_000
    .venv/bin/python bench/report_bench.py --sizes 10000

Per N: generate (or reuse) the day, then as their own processes `recon db upgrade`,
`recon ingest`, `recon run` (not timed here: bench_day.py measures those), and the timed
steps `recon report --format json`, `--format xlsx` and `--format json --chart` (the chart's
cost is the difference). The JSON report must agree with the planted breaks (count by type),
or the exit code is non-zero. Prints one table: wall time, CPU and peak RSS per step.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_day  # noqa: E402
from bench_day import recon_exe, run_step, write_config  # noqa: E402

console = Console()


def bench_size(n: int) -> tuple[list, list[str]]:
    # generated in a process of its own: a child's peak RSS as wait4() reports it starts at
    # this process's own peak (vfork + exec), which generating a million rows here would raise
    subprocess.run([sys.executable, str(Path(__file__).with_name("gen_day.py")), str(n)], check=True,
                   stdout=subprocess.DEVNULL)
    files = gen_day.generate(n)  # now only reads the cache
    recon = recon_exe()
    work = Path(tempfile.mkdtemp(prefix=f"recon-report-bench-{n}-"))
    cfg = write_config(work)
    steps, problems = [], []
    try:
        for name, argv in [("db upgrade", ["db", "upgrade"]), ("ingest", ["ingest", str(files.orders), str(files.bill)]),
                           ("run", ["run", "--day", gen_day.DAY, "--no-notify"])]:
            step = run_step(n, name, [recon, *argv, "--config", str(cfg)], work, work, None)
            if step.returncode:
                return steps, [f"`recon {name}` exited {step.returncode}: {step.log.read_text()[-2000:]}"]
        report = ["report", "--day", gen_day.DAY, "--config", str(cfg)]
        timed = [("report json", [*report, "--format", "json", "--output", "r.json"]),
                 ("report xlsx", [*report, "--format", "xlsx", "--output", "r.xlsx"]),
                 ("report json + chart", [*report, "--format", "json", "--output", "r2.json", "--chart", "c.png"])]
        for name, argv in timed:
            step = run_step(n, name, [recon, *argv], work, work, None)
            steps.append(step)
            if step.returncode:
                return steps, [f"`recon {name}` exited {step.returncode}: {step.log.read_text()[-2000:]}"]
        data = json.loads((work / "r.json").read_text(encoding="utf-8"))
        found = Counter({k: v["count"] for k, v in data["total"]["breaks"].items()})
        expected = Counter({k: v for k, v in files.expected_breaks.items() if v})
        if found != expected:
            problems.append(f"N={n}: the report's breaks by type {dict(found)} differ from the planted {dict(expected)}")
        if data["total"]["internal"]["payments"] == 0:
            problems.append(f"N={n}: the report has no payments")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return steps, problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated numbers of orders")
    args = ap.parse_args(argv)
    table = Table(title="recon report on one reconciled day (SQLite)", title_justify="left")
    for col in ("orders", "step", "wall s", "cpu s", "peak RSS MiB"):
        table.add_column(col, justify="left" if col == "step" else "right")
    problems = []
    for n in (int(x) for x in args.sizes.split(",")):
        steps, found = bench_size(n)
        problems += found
        for s in steps:
            table.add_row(f"{n:,}", s.name, f"{s.wall_s:.2f}", f"{s.cpu_s:.2f}", f"{s.peak_rss_mib:.0f}")
    console.print(table)
    for p in problems:
        console.print(f"[red]{p}[/red]", highlight=False)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
