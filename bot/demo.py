"""`recon demo`: the bundled example days, end to end, on embedded defaults.

SQLite in the output folder, the console channel, no token and no server. The database
is made fresh each time so the output is the same on every machine.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from bot.alerts import alert_merchant
from bot.cards import break_card
from channels.console import ConsoleChannel
from core.breaks import list_breaks
from core.config import load as config_load
from models import db

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "demo"
DAYS = (date(2026, 11, 20), date(2026, 11, 21))
REGULAR_PAYER = "oUpF8uMuAJO_M2pxb1Q9zNjW1027"  # pays W-M001 (¥84.50) in the real demo files


def demo_config_text(output: Path) -> str:
    """The demo's configuration, written next to its database so every command can reuse it."""
    return f"""# written by `recon demo`: try  recon breaks --config {output / 'recon.toml'}
[database]
url = "sqlite:///{(output / 'reconbot.db').resolve()}"

[fx]
rates = {{ "USD/CNY" = "7.10" }}

[[merchants]]
id = "demo-shop"
name = "晨光咖啡 Morning Light Coffee"
timezone = "Asia/Shanghai"
currency = "CNY"

  [[merchants.sources]]
  name = "orders"
  kind = "orders"
  files = ["{EXAMPLES}/orders_*.csv"]

  [[merchants.sources]]
  name = "wechatpay"
  kind = "wechatpay"
  files = ["{EXAMPLES}/wechatpay_*"]
  settlement_lag_days = 1
  fee_rate = "0.006"

  [[merchants.sources]]
  name = "alipay"
  kind = "alipay"
  files = ["{EXAMPLES}/2088*.csv.zip"]
  settlement_lag_days = 1
  fee_rate = "0.006"
"""


def demo_config(output: Path):
    path = output / "recon.toml"
    path.write_text(demo_config_text(output), encoding="utf-8")
    return config_load(path)


def anomaly_history(cfg, merchant, days: int = 60) -> str:
    """Two real days are too few to learn from: SYNTHETIC history (labelled so in the store,
    ending before the engine's window) gives the anomaly model something to compare with.
    Trains the merchant's model on it; returns what to tell the reader."""
    import pyarrow as pa

    from core.anomaly import synthetic
    from core.anomaly.training import train

    last = DAYS[0] - timedelta(days=4)
    first = last - timedelta(days=days - 1)
    fake = synthetic.SyntheticMerchant(merchant.id, per_day=250, median_minor=3600)
    # one of the demo's real payers (order W-M001, ¥84.50 on the 20th) made a regular of ¥6.00 espressos
    habit = synthetic.regular(fake, REGULAR_PAYER, "wechatpay", 600, first, days)
    history = pa.concat_tables([synthetic.normal_traffic(fake, first, days), habit])
    synthetic.write(cfg.database.url, fake, history, "demo-history")
    trained = train(cfg, [merchant.id], last)
    return (f"anomaly model: trained on {days} days of SYNTHETIC history ({trained[0].rows} transactions, "
            f"{first}..{last}), because the demo has only two real days; in it, payer {REGULAR_PAYER} is a "
            f"regular who pays ¥6.00")


def run_demo(output: Path, console: Console) -> None:
    from bot.cli import ingest_many, print_summary, run_with_progress

    output.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{output / 'reconbot.db'}{suffix}").unlink(missing_ok=True)
    cfg = demo_config(output)
    merchant = cfg.merchants[0]
    console.print(Rule(f"reconbot demo · {merchant.name}"))
    console.print(f"database: {output / 'reconbot.db'} (SQLite) · chat: console", highlight=False)
    db.upgrade(cfg.database.url)

    files = sorted(p for p in EXAMPLES.iterdir() if p.is_file())
    results, failures = ingest_many(cfg, merchant, files, None, console)
    for r in results:
        console.print(f"  {Path(r.path).name}: {r.format}, {r.rows} rows, day {r.business_day}", highlight=False)
    if failures:
        raise SystemExit(1)

    console.print(anomaly_history(cfg, merchant), highlight=False)
    for day in DAYS:
        summary = run_with_progress(cfg, merchant, day, console)
        print_summary(console, summary)

    rows = list_breaks(cfg.database.url, merchant.id)
    channel = ConsoleChannel(console)
    # every break in full (type, amounts, explanation, file:line evidence), as `recon breaks` lists them
    console.print(Rule(f"{len(rows)} breaks to look at"))
    for row in rows:
        channel.send("", break_card(row))
    # then what a chat gets: the large breaks as cards, the small ones in one digest per source and day
    console.print(Rule("what the chats get: the alert pipeline's cards"))
    report = alert_merchant(cfg, {"console": channel}, merchant.id)
    console.print(report.line(), highlight=False)
    console.print(f"List them again with: recon breaks --config {output / 'recon.toml'}", highlight=False)
    console.print(Rule("report and charts"))
    for path in write_report_and_chart(cfg, merchant, output):
        console.print(f"wrote {path}", highlight=False)
    console.print(f"Again, for any day: recon report --config {output / 'recon.toml'} --day {DAYS[0]} "
                  f"--format xlsx --chart chart.png", highlight=False)


def write_report_and_chart(cfg, merchant, output: Path) -> list[Path]:
    """The XLSX report of each demo day and the trend charts up to the last one."""
    from bot.report_xlsx import write_xlsx
    from core.charts import render_dashboard
    from core.report import day_report, trend

    paths = [write_xlsx(day_report(cfg, merchant.id, day), output / f"recon-report-{merchant.id}-{day}.xlsx")
             for day in DAYS]
    chart = output / f"recon-chart-{merchant.id}-{DAYS[-1]}.png"
    chart.write_bytes(render_dashboard(trend(cfg, merchant.id, DAYS[-1]), cfg))
    return paths + [chart]
