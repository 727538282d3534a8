"""End-to-end benchmark: one synthetic business day through `recon`, as an operator runs it,
beside two baselines on the same files.

    make bench                                   # N = 100_000, 1_000_000 and 10_000_000
    .venv/bin/python bench/bench_day.py --sizes 10000
    .venv/bin/python bench/bench_day.py --sizes 1000000 --baselines duckdb

For each N: generate (or reuse from bench/out/) the day's orders CSV and WeChat Pay trade
bill (bench/gen_day.py, in a process of its own), write a config TOML with a fresh SQLite
database in a temporary folder, then run, each as its own process:

    recon db upgrade --config C
    recon ingest orders.csv wechatpay_tradebill_ALL_2026-11-20.csv --config C
    recon run --day 2026-11-20 --config C
    python bench/baseline_duckdb.py orders.csv wechatpay_tradebill_ALL_2026-11-20.csv
    python bench/baseline_pandas.py orders.csv wechatpay_tradebill_ALL_2026-11-20.csv

Each step's wall time, CPU time and its own peak RSS (from wait4() on that process alone,
not the cumulative RUSAGE_CHILDREN maximum) are measured. After ingest and after run the
database must pass `PRAGMA quick_check`, and `recon breaks --format json` must report
exactly the planted breaks by type; the pandas baseline must count the same breaks, and the
DuckDB join the unmatched and mismatched rows planted.json implies. Any difference is
printed loudly and makes the exit code non-zero. A step whose RSS would pass what the
machine has free (MemAvailable at the start, less 1 GiB; `--max-rss-gib`) is stopped and
reported as such, so that pandas at 10M cannot take the shared machine down.

Printed: the steps; one side-by-side table (reconbot's ingest + run, each baseline, the
ratios, peak RSS); the issue's goals with PASS or MISS: must 1M <= 10 s, 10M <= 120 s and
<= 8 GiB peak; target 1M <= 5 s, within 5x of bare DuckDB, >= 10x faster than pandas.

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
import signal
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gen_day  # noqa: E402

GIB = 2**30
# The goals (ingest + run, wall seconds; peak RSS of any reconbot step)
MUST_S = {1_000_000: 10.0, 10_000_000: 120.0}
MUST_RSS = {10_000_000: 8 * GIB}
TARGET_S = {1_000_000: 5.0}
TARGET_VS_DUCKDB = 5.0  # reconbot at most 5x the bare DuckDB join
TARGET_VS_PANDAS = 10.0  # pandas at least 10x reconbot
RATIO_FROM_N = 1_000_000  # below this, process start-up (~1 s a step) dominates every ratio
BASELINES = {"duckdb": ("bare DuckDB", "baseline_duckdb.py"), "pandas": ("pandas", "baseline_pandas.py")}
POLL_S = 0.05  # how often a step's RSS is looked at

console = Console() if sys.stdout.isatty() else Console(width=150)


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
    stopped_at_mib: float | None = None  # RSS at which the bench stopped it (memory cap)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.stopped_at_mib is None

    def failure(self) -> str:
        if self.stopped_at_mib is not None:
            return (f"stopped at {self.stopped_at_mib / 1024:.1f} GiB RSS after {self.wall_s:.0f} s: "
                    "more memory than this machine had free")
        if self.returncode == -signal.SIGKILL:
            return (f"killed (SIGKILL) after {self.wall_s:.0f} s, peak RSS {self.peak_rss_mib / 1024:.1f} GiB: "
                    "out of memory?")
        return f"exited {self.returncode}"


def recon_exe() -> str:
    here = Path(sys.executable).parent / "recon"
    if here.exists():
        return str(here)
    found = shutil.which("recon")
    if not found:
        sys.exit("bench: `recon` not found: run `make install` (or activate the venv) first")
    return found


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def mem_available() -> int | None:
    """MemAvailable from /proc/meminfo (bytes), None where there is no /proc."""
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_step(n: int, name: str, argv: list[str], cwd: Path, logs: Path, rows: int | None,
             max_rss: int | None = None) -> Step:
    """Run argv as a child process; wall time, CPU and that process's own peak RSS (wait4).
    With `max_rss`, the child is stopped (SIGKILL) once its RSS passes it."""
    log = logs / f"{name.replace(' ', '_').replace(':', '')}.log"
    stopped = None
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "COLUMNS": "160"})
        if max_rss is None:
            _pid, status, usage = os.wait4(proc.pid, 0)
        else:
            # polled here, not from a thread: the pid is ours until wait4 reaps it, so the
            # kill can never hit a reused pid
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                rss = _rss_bytes(proc.pid)
                if stopped is None and rss > max_rss:
                    stopped = rss / 2**20
                    os.kill(proc.pid, signal.SIGKILL)
                time.sleep(POLL_S)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    return Step(n, name, wall, usage.ru_utime + usage.ru_stime, rss, rows, proc.returncode, log, stopped)


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


def day_files(n: int) -> tuple[gen_day.DayFiles, float, bool]:
    """The day's files; generated in a process of its own when not cached: a child's peak RSS
    as wait4() reports it starts at its parent's own peak (vfork + exec, see README), so
    generating here would inflate every later step's figure."""
    cached = (gen_day.folder_for(n) / "planted.json").exists()
    t0 = time.perf_counter()
    if not cached:
        subprocess.run([sys.executable, str(HERE / "gen_day.py"), str(n)], check=True, stdout=subprocess.DEVNULL)
    return gen_day.generate(n), time.perf_counter() - t0, cached


def _last_json(log: Path) -> dict | None:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def expected_join_counts(files: gen_day.DayFiles) -> dict[str, int]:
    """What the bare DuckDB join must count on this day (see baseline_duckdb.py)."""
    p = files.planted["planted"]
    return {"orders_unmatched": p["short"], "bill_unmatched": p["long"] + p["duplicate_charge"] + p["unpaid_collected"],
            "amount_mismatched": p["amount_mismatch"]}


def check_baseline(key: str, step: Step, files: gen_day.DayFiles) -> str | None:
    """None when the baseline counted what was planted, else what differs."""
    out = _last_json(step.log)
    if out is None:
        return f"baseline {key} printed no result:\n{step.log.read_text(errors='replace')[-2000:]}"
    if key == "pandas":
        found, expected = out["breaks"], files.expected_breaks
    else:
        found, expected = {k: out["counts"][k] for k in expected_join_counts(files)}, expected_join_counts(files)
    if found != expected:
        diff = ", ".join(f"{k}: expected {expected.get(k)} found {found.get(k)}"
                         for k in sorted(set(found) | set(expected)) if found.get(k) != expected.get(k))
        return f"baseline {key} counted differently from planted.json: {diff}"
    return None


def bench_recon(n: int, files: gen_day.DayFiles, work: Path, max_rss: int | None) -> tuple[list[Step], list[str]]:
    recon = recon_exe()
    cfg = write_config(work)
    rows_in = files.orders_rows + files.bill_rows
    steps: list[Step] = []
    plan = [
        ("db upgrade", [recon, "db", "upgrade", "--config", str(cfg)], None),
        ("ingest", [recon, "ingest", str(files.orders), str(files.bill), "--config", str(cfg)], rows_in),
        ("run", [recon, "run", "--day", gen_day.DAY, "--config", str(cfg)], rows_in),
    ]
    for name, argv, rows in plan:
        step = run_step(n, name, argv, work, work, rows, max_rss)
        steps.append(step)
        if not step.ok:
            return steps, [f"`recon {name}` {step.failure()}:\n{step.log.read_text(errors='replace')[-3000:]}"]
        if name != "db upgrade":
            check = quick_check(work / "reconbot.db")
            if check != "ok":
                return steps, [f"database corrupt after `recon {name}` (PRAGMA quick_check: {check[:300]})"]
    out = subprocess.run([recon, "breaks", "--format", "json", "--day", gen_day.DAY, "--config", str(cfg)],
                         cwd=work, capture_output=True, text=True)
    if out.returncode != 0:
        return steps, [f"`recon breaks` exited {out.returncode}: {out.stderr[-2000:]}"]
    breaks = json.loads(out.stdout)
    found = Counter(b["type"] for b in breaks)
    expected = Counter({k: v for k, v in files.expected_breaks.items() if v})
    problems = []
    if found != expected:
        diff = ", ".join(f"{t}: expected {expected.get(t, 0)} found {found.get(t, 0)}"
                         for t in sorted(set(found) | set(expected)) if found.get(t, 0) != expected.get(t, 0))
        problems.append(f"breaks differ from the planted ones: {diff}")
    not_open = Counter(b["status"] for b in breaks if b["status"] != "open")
    if not_open:
        problems.append(f"breaks not open (settlement_lag_days=0 should leave nothing in transit): {dict(not_open)}")
    if not problems:
        console.print(f"[green]N={n:,}: reconbot's breaks as planted[/green] {dict(sorted(found.items()))}",
                      highlight=False)
    return steps, problems


@dataclass
class SizeResult:
    n: int
    recon: list[Step]
    baselines: dict[str, Step]
    problems: list[str]  # wrong or missing results: exit code 1
    notes: list[str]  # a baseline that could not finish (memory): printed, not a failure

    def recon_total(self) -> tuple[float, float, float] | None:
        """(wall, cpu, peak RSS MiB) of ingest + run, when both finished."""
        e2e = [s for s in self.recon if s.name in ("ingest", "run") and s.ok]
        if len(e2e) != 2:
            return None
        return sum(s.wall_s for s in e2e), sum(s.cpu_s for s in e2e), max(s.peak_rss_mib for s in self.recon)


def bench_size(n: int, baselines: list[str], keep: bool, max_rss: int | None) -> SizeResult:
    files, gen_s, cached = day_files(n)
    mib = (files.orders.stat().st_size + files.bill.stat().st_size) / 2**20
    console.print(f"[dim]N={n:,}: data {'reused' if cached else 'generated'} in {gen_s:.2f}s ({mib:,.0f} MiB): "
                  f"{files.folder}[/dim]", highlight=False)
    work = Path(tempfile.mkdtemp(prefix=f"recon-bench-{n}-"))
    result = SizeResult(n, [], {}, [], [])
    try:
        result.recon, result.problems = bench_recon(n, files, work, max_rss)
        # the database is no longer needed: free its disk before the baselines run
        for p in work.glob("reconbot.db*"):  # the file, its WAL, its column snapshots
            if not (keep or result.problems):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        for key in baselines:
            label, script = BASELINES[key]
            argv = [sys.executable, str(HERE / script), str(files.orders), str(files.bill)]
            step = run_step(n, f"baseline {key}", argv, work, work, files.orders_rows + files.bill_rows, max_rss)
            result.baselines[key] = step
            if step.stopped_at_mib is not None or step.returncode == -signal.SIGKILL:
                result.notes.append(f"{label} could not run N={n:,} on this machine: {step.failure()}")
            elif step.returncode != 0:
                log = step.log.read_text(errors="replace")[-2000:]
                result.problems.append(f"baseline {key} {step.failure()}:\n{log}")
            else:
                problem = check_baseline(key, step, files)
                if problem:
                    result.problems.append(problem)
                else:
                    console.print(f"[green]N={n:,}: {label} counted as planted[/green]", highlight=False)
    finally:
        if keep or result.problems:
            console.print(f"[dim]kept {work} (config, database, logs)[/dim]", highlight=False)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return result


# -- tables ------------------------------------------------------------------------------

def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _mib(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def _ratio(x: tuple[float, float] | None) -> str:
    """wall ratio (cpu ratio)"""
    return "—" if x is None else f"{x[0]:.2f}× ({x[1]:.2f}×)"


def steps_table(results: list[SizeResult]) -> Table:
    t = Table(title="steps, each its own process", title_justify="left")
    for col, just in (("N", "right"), ("step", "left"), ("wall s", "right"), ("cpu s", "right"),
                      ("peak RSS MiB", "right"), ("rows/s", "right"), ("", "left")):
        t.add_column(col, justify=just)
    for r in results:
        steps = r.recon + list(r.baselines.values())
        for i, s in enumerate(steps):
            rate = f"{s.rows / s.wall_s:,.0f}" if s.rows and s.ok else "—"
            t.add_row(f"{r.n:,}", s.name, f"{s.wall_s:.2f}", f"{s.cpu_s:.2f}", f"{s.peak_rss_mib:,.0f}", rate,
                      "" if s.ok else f"[red]{s.failure()}[/red]", end_section=i == len(steps) - 1)
    return t


def _baseline(r: SizeResult, key: str) -> Step | None:
    s = r.baselines.get(key)
    return s if s is not None and s.ok else None


def side_by_side(results: list[SizeResult]) -> Table:
    t = Table(title="side by side: same files; wall seconds (cpu seconds), ratios of wall (of cpu), peak RSS MiB",
              title_justify="left")
    for col in ("N", "reconbot ingest+run", "bare DuckDB", "pandas", "reconbot ÷ DuckDB", "pandas ÷ reconbot",
                "RSS reconbot", "RSS DuckDB", "RSS pandas"):
        t.add_column(col, justify="right")
    for r in results:
        total = r.recon_total()
        duck, pandas = _baseline(r, "duckdb"), _baseline(r, "pandas")

        def cell(step: Step | None, key: str) -> str:
            if step is not None:
                return f"{step.wall_s:.2f} ({step.cpu_s:.1f})"
            s = r.baselines.get(key)
            return "not run" if s is None else f"[red]{s.failure().split(':')[0]}[/red]"

        recon_cell = f"{total[0]:.2f} ({total[1]:.1f})" if total else "[red]failed[/red]"
        vs_duck = (total[0] / duck.wall_s, total[1] / duck.cpu_s) if total and duck else None
        vs_pandas = (pandas.wall_s / total[0], pandas.cpu_s / total[1]) if total and pandas else None
        stopped = r.baselines.get("pandas")
        pandas_rss = (_mib(pandas.peak_rss_mib) if pandas else
                      f"> {stopped.stopped_at_mib:,.0f}" if stopped is not None and stopped.stopped_at_mib else "—")
        t.add_row(f"{r.n:,}", recon_cell, cell(duck, "duckdb"), cell(pandas, "pandas"), _ratio(vs_duck),
                  _ratio(vs_pandas), _mib(total[2] if total else None), _mib(duck.peak_rss_mib if duck else None),
                  pandas_rss)
    return t


def goals(results: list[SizeResult]) -> tuple[Table, list[str]]:
    """The issue's goals, each PASS, MISS or not run; -> table, the verdict words."""
    by_n = {r.n: r for r in results}
    rows: list[tuple[str, str, str, str]] = []
    verdicts = []

    def verdict(ok: bool | None, r: SizeResult | None) -> str:
        if ok is None:
            return "[dim]not run[/dim]"
        if r is not None and r.problems:
            return "[bold red]MISS (wrong results)[/bold red]"
        verdicts.append("PASS" if ok else "MISS")
        return "[green]PASS[/green]" if ok else "[bold red]MISS[/bold red]"

    for n, limit in MUST_S.items():
        r = by_n.get(n)
        total = r.recon_total() if r else None
        ok = None if r is None else (total is not None and total[0] <= limit)
        rows.append(("must", f"{n:,}: ingest + run ≤ {limit:.0f} s", f"{total[0]:.1f} s" if total else "—",
                     verdict(ok, r)))
        if n in MUST_RSS:
            cap = MUST_RSS[n]
            peak = max((s.peak_rss_mib for s in r.recon), default=None) if r else None
            ok = None if r is None else (total is not None and peak * 2**20 <= cap)
            rows.append(("must", f"{n:,}: peak RSS ≤ {cap / GIB:.0f} GiB",
                         f"{peak / 1024:.2f} GiB" if peak is not None else "—", verdict(ok, r)))
    for n, limit in TARGET_S.items():
        r = by_n.get(n)
        total = r.recon_total() if r else None
        ok = None if r is None else (total is not None and total[0] <= limit)
        rows.append(("target", f"{n:,}: ingest + run ≤ {limit:.0f} s", f"{total[0]:.1f} s" if total else "—",
                     verdict(ok, r)))
    for r in results:
        if r.n < RATIO_FROM_N:
            continue
        total = r.recon_total()
        duck, pandas = _baseline(r, "duckdb"), _baseline(r, "pandas")
        if "duckdb" in r.baselines:
            x = total[0] / duck.wall_s if total and duck else None
            rows.append(("target", f"{r.n:,}: within {TARGET_VS_DUCKDB:.0f}× of bare DuckDB",
                         f"reconbot ÷ DuckDB {x:.1f}×" if x else "—",
                         verdict(None if x is None else x <= TARGET_VS_DUCKDB, r)))
        if "pandas" in r.baselines:
            x = pandas.wall_s / total[0] if total and pandas else None
            shown = f"pandas ÷ reconbot {x:.2f}×" if x else "pandas did not finish" if total else "—"
            rows.append(("target", f"{r.n:,}: ≥ {TARGET_VS_PANDAS:.0f}× faster than pandas", shown,
                         verdict(None if x is None else x >= TARGET_VS_PANDAS, r)))
    t = Table(title="goals (issue 3): wall time on this machine", title_justify="left")
    for col, just in (("", "left"), ("goal", "left"), ("measured", "right"), ("", "left")):
        t.add_column(col, justify=just)
    for row in rows:
        t.add_row(*row)
    return t, verdicts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000,10000000",
                    help="comma-separated order counts (default: 100000,1000000,10000000)")
    ap.add_argument("--baselines", default="duckdb,pandas",
                    help="comma-separated baselines to run beside reconbot: duckdb, pandas, or none")
    ap.add_argument("--max-rss-gib", type=float, default=None,
                    help="stop any step whose RSS passes this (default: MemAvailable at start less 1 GiB)")
    ap.add_argument("--keep", action="store_true", help="keep each run's temp folder (config, database, logs)")
    args = ap.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip() and b.strip() != "none"]
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        ap.error(f"unknown baseline {', '.join(unknown)} (known: {', '.join(BASELINES)})")
    available = mem_available()
    max_rss = (int(args.max_rss_gib * GIB) if args.max_rss_gib else
               max(GIB, available - GIB) if available else None)

    cores = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = (f"reconbot bench · day {gen_day.DAY} · {cores} cores (os.cpu_count) · load {load:.1f} at start · "
              f"{platform.machine()} · Python {platform.python_version()} · SQLite")
    console.rule(header)
    if cores and load > 0.5 * cores:
        console.print(f"[yellow]note:[/yellow] load average {load:.1f} on {cores} cores: other work is running, "
                      "timings will be inflated", highlight=False)
    if max_rss:
        console.print(f"[dim]memory: {available / GIB:.1f} GiB available at start; a step passing "
                      f"{max_rss / GIB:.1f} GiB RSS is stopped[/dim]" if available else
                      f"[dim]a step passing {max_rss / GIB:.1f} GiB RSS is stopped[/dim]", highlight=False)

    results = []
    for n in sizes:
        r = bench_size(n, baselines, args.keep, max_rss)
        results.append(r)
        for p in r.problems:
            console.print(f"[bold red]!!! N={n:,}: {p}[/bold red]", highlight=False)
        for note in r.notes:
            console.print(f"[yellow]N={n:,}: {note}[/yellow]", highlight=False)

    console.print(steps_table(results))
    console.print("rows = input data rows (orders CSV rows + bill rows); cpu = user + system seconds; "
                  "peak RSS and cpu are each step's own process", highlight=False)
    console.print(side_by_side(results))
    table, _verdicts = goals(results)
    console.print(table)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    console.print(f"load average {load:.1f} at start, {load_end:.1f} at the end; on a busy machine compare cpu s",
                  highlight=False)
    failed = [r.n for r in results if r.problems]
    if failed:
        sizes_failed = ", ".join(f"{n:,}" for n in failed)
        console.print(f"[bold red]FAILED: wrong or missing results for N = {sizes_failed}[/bold red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
