"""End-to-end benchmark: one synthetic business day through `recon`, as an operator runs it.

    make bench                                   # N = 100_000 and 1_000_000
    .venv/bin/python bench/bench_day.py --sizes 10000

For each N: generate (or reuse from bench/out/) the day's orders CSV and WeChat Pay trade
bill (bench/gen_day.py), write a config TOML with a fresh SQLite database in a temporary
folder, then run, each as its own process:

    recon db upgrade --config C
    recon ingest orders.csv wechatpay_tradebill_ALL_2026-11-20.csv --config C
    recon run --day 2026-11-20 --config C

Each step's wall time, and its own peak RSS (from wait4() on that process alone, not the
cumulative RUSAGE_CHILDREN maximum), are measured. After ingest and after run the database
must pass `PRAGMA quick_check`, and `recon breaks --format json` must report exactly the
planted breaks by type; any difference is printed loudly and makes the exit code non-zero.
Target: ingest + run for 1M orders <= 10 s on 2 cores (aim: 5 s).

The integrity check guards a bug fixed in c0d78cf: the ORM (Python's sqlite3) and ADBC (its own
SQLite copy) held the same WAL file open in one process, and `recon ingest` left a corrupt
database behind. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_day  # noqa: E402

LIMIT_S = 10.0  # for 1M orders end to end (ingest + run) on 2 cores
AIM_S = 5.0
LIMIT_N = 1_000_000

console = Console() if sys.stdout.isatty() else Console(width=120)


@dataclass
class Step:
    n: int
    name: str
    wall_s: float
    cpu_s: float  # user + system CPU of the step's process: less sensitive than wall time to a busy machine
    peak_rss_mib: float
    rows: int | None
    returncode: int
    log: Path


def recon_exe() -> str:
    here = Path(sys.executable).parent / "recon"
    if here.exists():
        return str(here)
    found = shutil.which("recon")
    if not found:
        sys.exit("bench: `recon` not found: run `make install` (or activate the venv) first")
    return found


def run_step(n: int, name: str, argv: list[str], cwd: Path, logs: Path, rows: int | None) -> Step:
    """Run argv as a child process; wall time and that process's own peak RSS (wait4)."""
    log = logs / f"{name.replace(' ', '_')}.log"
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "160"})
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    return Step(n, name, wall, usage.ru_utime + usage.ru_stime, rss, rows, proc.returncode, log)


def write_config(folder: Path) -> Path:
    db = folder / "reconbot.db"
    cfg = folder / "bench.toml"
    cfg.write_text(f"""\
[database]
url = "sqlite:///{db.as_posix()}"

[[merchants]]
id = "bench"
name = "Bench Coffee"
timezone = "Asia/Shanghai"
currency = "CNY"

[[merchants.sources]]
name = "orders"
kind = "orders"

[[merchants.sources]]
name = "wechatpay"
kind = "wechatpay"
timezone = "Asia/Shanghai"
settlement_lag_days = 0
""", encoding="utf-8")
    return cfg


def quick_check(db: Path) -> str:
    """'ok', or what SQLite says is wrong with the file."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute("PRAGMA quick_check").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return f"{exc}"
    return "ok" if rows == [("ok",)] else "; ".join(r[0] for r in rows[:3])


def bench_size(n: int, keep: bool) -> tuple[list[Step], list[str], float]:
    """-> steps, problems (empty when the run found exactly the planted breaks), generation seconds."""
    t0 = time.perf_counter()
    cached = (gen_day.folder_for(n) / "planted.json").exists()
    files = gen_day.generate(n)
    gen_s = time.perf_counter() - t0
    console.print(f"[dim]N={n:,}: data {'reused' if cached else 'generated'} in {gen_s:.2f}s: {files.folder}[/dim]",
                  highlight=False)
    recon = recon_exe()
    work = Path(tempfile.mkdtemp(prefix=f"recon-bench-{n}-"))
    cfg = write_config(work)
    rows_in = files.orders_rows + files.bill_rows
    steps: list[Step] = []
    problems: list[str] = []
    try:
        plan = [
            ("db upgrade", [recon, "db", "upgrade", "--config", str(cfg)], None),
            ("ingest", [recon, "ingest", str(files.orders), str(files.bill), "--config", str(cfg)], rows_in),
            ("run", [recon, "run", "--day", gen_day.DAY, "--config", str(cfg)], rows_in),
        ]
        for name, argv, rows in plan:
            step = run_step(n, name, argv, work, work, rows)
            steps.append(step)
            if step.returncode != 0:
                problems.append(f"`recon {name}` exited {step.returncode}:\n{step.log.read_text(errors='replace')[-3000:]}")
                return steps, problems, gen_s
            if name != "db upgrade":
                check = quick_check(work / "reconbot.db")
                if check != "ok":
                    problems.append(f"database corrupt after `recon {name}` (PRAGMA quick_check: {check[:300]})")
                    return steps, problems, gen_s
        out = subprocess.run([recon, "breaks", "--format", "json", "--day", gen_day.DAY, "--config", str(cfg)],
                             cwd=work, capture_output=True, text=True)
        if out.returncode != 0:
            problems.append(f"`recon breaks` exited {out.returncode}: {out.stderr[-2000:]}")
            return steps, problems, gen_s
        breaks = json.loads(out.stdout)
        found = Counter(b["type"] for b in breaks)
        expected = Counter({k: v for k, v in files.expected_breaks.items() if v})
        if found != expected:
            types = sorted(set(found) | set(expected))
            diff = ", ".join(f"{t}: expected {expected.get(t, 0)} found {found.get(t, 0)}" for t in types
                             if found.get(t, 0) != expected.get(t, 0))
            problems.append(f"breaks differ from the planted ones: {diff}")
        not_open = Counter(b["status"] for b in breaks if b["status"] != "open")
        if not_open:
            problems.append(f"breaks not open (settlement_lag_days=0 should leave nothing in transit): {dict(not_open)}")
        if not problems:
            console.print(f"[green]N={n:,}: breaks as planted[/green] {dict(sorted(found.items()))}", highlight=False)
    finally:
        if keep or problems:
            console.print(f"[dim]kept {work} (config, database, logs)[/dim]", highlight=False)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return steps, problems, gen_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000",
                    help="comma-separated order counts (default: 100000,1000000)")
    ap.add_argument("--keep", action="store_true", help="keep each run's temp folder (config, database, logs)")
    args = ap.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]

    cores = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = (f"reconbot bench · day {gen_day.DAY} · {cores} cores (os.cpu_count) · load {load:.1f} at start · "
              f"{platform.machine()} · Python {platform.python_version()} · SQLite")
    console.rule(header)
    if cores and load > 0.5 * cores:
        console.print(f"[yellow]note:[/yellow] load average {load:.1f} on {cores} cores: other work is running, "
                      "timings will be inflated", highlight=False)

    all_steps: list[Step] = []
    failures: dict[int, list[str]] = {}
    for n in sizes:
        steps, problems, _gen_s = bench_size(n, args.keep)
        all_steps += steps
        if problems:
            failures[n] = problems
            for p in problems:
                console.print(f"[bold red]!!! N={n:,}: {p}[/bold red]", highlight=False)

    t = Table(title=header, title_justify="left")
    for col, just in (("N", "right"), ("step", "left"), ("wall s", "right"), ("cpu s", "right"), ("peak RSS MiB", "right"),
                      ("rows/s", "right"), ("", "left")):
        t.add_column(col, justify=just)
    for n in sizes:
        steps = [s for s in all_steps if s.n == n]
        for s in steps:
            rate = f"{s.rows / s.wall_s:,.0f}" if s.rows else "—"
            t.add_row(f"{n:,}", s.name, f"{s.wall_s:.2f}", f"{s.cpu_s:.2f}", f"{s.peak_rss_mib:.0f}", rate,
                      "" if s.returncode == 0 else f"[red]exit {s.returncode}[/red]")
        e2e = [s for s in steps if s.name in ("ingest", "run")]
        if len(e2e) == 2:
            total = sum(s.wall_s for s in e2e)
            rows = e2e[0].rows or 0
            # the limit is stated for 1M orders (pro rata above); smaller days only inform
            limit = LIMIT_S * n / LIMIT_N
            ok = total <= limit and n not in failures
            if n >= LIMIT_N:
                verdict = ("[green]PASS[/green]" if ok else "[bold red]MISS[/bold red]") + f" vs {limit:.3g} s"
                verdict += f" (aim {AIM_S * n / LIMIT_N:.3g} s)"
            else:
                verdict = f"[dim]target is for {LIMIT_N:,}[/dim]"
            if n in failures:
                verdict += " [bold red](FAILED checks)[/bold red]"
            t.add_row(f"{n:,}", "[bold]ingest + run[/bold]", f"[bold]{total:.2f}[/bold]", f"{sum(s.cpu_s for s in e2e):.2f}",
                      f"{max(s.peak_rss_mib for s in e2e):.0f}", f"{rows / total:,.0f}", verdict, end_section=True)
    console.print(t)
    console.print("rows = input data rows (orders CSV rows + bill rows); cpu = user + system seconds; "
                  "peak RSS and cpu are each step's own process; "
                  f"target: 1M orders ingest + run <= {LIMIT_S:.0f} s on 2 cores (aim {AIM_S:.0f} s)", highlight=False)
    if failures:
        console.print(f"[bold red]FAILED: wrong or missing results for N = {', '.join(f'{n:,}' for n in failures)}[/bold red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
