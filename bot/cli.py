"""The `recon` command line.

Contract other issues and the docs rely on:
  recon demo
  recon db upgrade
  recon ingest FILE... [--merchant M] [--day YYYY-MM-DD]
  recon run [--day YYYY-MM-DD] [--merchant M]
  recon breaks [--day D] [--format table|csv|json]
  recon pull [--day D] [--merchant M] [--source S]... [--folder]
  recon users add|list|link ...     people, roles, chat accounts
  recon approve|assign|resolve BREAK ...   the card buttons, from the console
  recon silence add|list|end ...            time-boxed silences of alerts
  recon alerts send|drain|routes|enable ... the alert pipeline and its outbox
  recon serve [--host H] [--port P]         inbound endpoints for Slack, Telegram, WeCom
  recon model train [--merchant M] [--until YYYY-MM-DD]     (docs/anomaly.md)
  recon anomaly expected BREAK [--by NAME] [--note TEXT]
  recon report [--day D] [--merchant M] [--format table|json|csv|xlsx] [--output PATH] [--chart PATH]
  recon scheduler                           the scheduled jobs alone (recon serve runs them too)
  recon jobs [--format table|json]          the schedule, next run times, pending retries and escalations
  recon jobs run KIND [--merchant M] [--source S] [--day D]   one run of a job now (pull|reconcile|hourly|retrain)
Every command takes `--config PATH` (or RECON_CONFIG); without one, embedded defaults.
Errors are printed as one clear line each and the exit code is non-zero.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import date, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core import config as config_mod
from core.config import Config, ConfigError
from core.money import display
from models import db

if TYPE_CHECKING:
    from core.runs import RunSummary

app = typer.Typer(add_completion=False, no_args_is_help=True, help="reconbot: reconcile payment channels against your orders.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")
users_app = typer.Typer(no_args_is_help=True, help="People who act on breaks, and their chat accounts.")
app.add_typer(users_app, name="users")
model_app = typer.Typer(no_args_is_help=True, help="The anomaly model (Isolation Forest).")
app.add_typer(model_app, name="model")
anomaly_app = typer.Typer(no_args_is_help=True, help="Verdicts on anomaly alerts.")
app.add_typer(anomaly_app, name="anomaly")
silence_app = typer.Typer(no_args_is_help=True, help="Time-boxed silences: no new alert cards for matching breaks.")
app.add_typer(silence_app, name="silence")
alerts_app = typer.Typer(no_args_is_help=True, help="The alert pipeline: send, drain the outbox, routes.")
app.add_typer(alerts_app, name="alerts")
jobs_app = typer.Typer(invoke_without_command=True,
                       help="The scheduled jobs: the schedule with next run times (no command), or run one now.")
app.add_typer(jobs_app, name="jobs")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Config file (else $RECON_CONFIG, else embedded defaults).")]
MerchantOpt = Annotated[Optional[str], typer.Option("--merchant", "-m", help="Merchant id (needed when several are configured).")]


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _fail(message: str, code: int = 1):
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def _load(config: Path | None, schema: bool = True) -> Config:
    """The config, and (unless `schema` is False) a database whose schema is current."""
    try:
        cfg = config_mod.load(config)
    except ConfigError as exc:
        _fail(str(exc), 2)
    if schema:
        try:
            db.check_schema(cfg.database.url)
        except db.SchemaError as exc:
            _fail(str(exc), 2)
    return cfg


def _day(value: str | None, merchant_tz: str) -> date:
    if value is None:  # yesterday in the merchant's own time zone
        return datetime.now(ZoneInfo(merchant_tz)).date() - timedelta(days=1)
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail(f"--day {value!r} is not a date (YYYY-MM-DD)", 2)


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None, revision: str = "head") -> None:
    """Create or migrate the schema (Alembic)."""
    cfg = _load(config, schema=False)
    db.upgrade(cfg.database.url, revision)
    out.print(f"database at {_safe_url(cfg.database.url)} is at revision {revision}")


@app.command()
def ingest(
    files: Annotated[Optional[list[Path]], typer.Argument(
        help="Statement files (any mix of supported formats). Default: the configured files and folders.")] = None,
    config: ConfigOpt = None,
    merchant: MerchantOpt = None,
    day: Annotated[Optional[str], typer.Option(help="Business day, when the file does not say.")] = None,
) -> None:
    """Ingest statement and order files; a file already ingested is skipped."""
    from core.ingest import configured_files  # the parsers load only for the commands that read files

    cfg = _load(config)
    m = _merchant(cfg, merchant)
    files = files or configured_files(cfg, m)
    if not files:
        _fail(f"no files given and none configured for merchant {m.id} (set `files` or `folder` on its sources)", 2)
    results, failures = ingest_many(cfg, m, files, _day(day, m.timezone) if day else None, err)
    for r in results:
        note = "already ingested, skipped" if r.already_ingested else f"{r.rows} rows, {r.new_rows} new"
        out.print(f"{r.path}: {r.format} -> {r.source} ({r.business_day or '—'}): {note}", highlight=False)
    if failures:
        raise typer.Exit(1)


def ingest_many(cfg, merchant, files, day, console: Console):
    from core.ingest import ingest_files

    results, failures = [], []
    with _progress(console) as progress:
        task = progress.add_task(f"ingesting {len(files)} files", total=len(files))
        outcomes = ingest_files(cfg, merchant, list(files), day, on_done=lambda _p: progress.advance(task))
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                failures.append(str(outcome))
                progress.console.print(f"[red]rejected:[/red] {outcome}", highlight=False)
            else:
                results.append(outcome)
        progress.update(task, description="ingested", completed=len(files))
    return results, failures


@app.command()
def pull(
    config: ConfigOpt = None,
    merchant: MerchantOpt = None,
    day: Annotated[Optional[str], typer.Option(help="Business day to pull (default: yesterday, merchant time).")] = None,
    source: Annotated[Optional[list[str]], typer.Option("--source", "-s", help="Only this source (repeatable).")] = None,
    folder: Annotated[bool, typer.Option("--folder", help="Only scan drop folders for new files (no API calls).")] = False,
) -> None:
    """Fetch statements (channel APIs, the orders database, drop folders) and ingest them."""
    from core.pull import pull_day

    cfg = _load(config)
    m = _merchant(cfg, merchant)
    the_day = _day(day, m.timezone)
    try:
        outcomes = pull_day(cfg, m, the_day, source, apis=not folder)
    except ConfigError as exc:
        _fail(str(exc), 2)
    colour = {"ingested": "green", "already_ingested": "dim", "not_available": "yellow"}
    for o in outcomes:
        out.print(f"[{colour.get(o.status, 'red')}]{o.status}[/]: {escape(o.source)}: {escape(o.detail)}",
                  highlight=False)
    if not outcomes:
        out.print(f"nothing new to pull for {m.id} {the_day}", highlight=False)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


@app.command()
def run(
    config: ConfigOpt = None,
    merchant: MerchantOpt = None,
    day: Annotated[Optional[str], typer.Option(help="Business day (default: yesterday, merchant time).")] = None,
    notify: Annotated[bool, typer.Option(help="Alert the merchant's chat routes (the alert pipeline).")] = True,
) -> None:
    """Reconcile one business day for a merchant."""
    cfg = _load(config)
    m = _merchant(cfg, merchant)
    summary = run_with_progress(cfg, m, _day(day, m.timezone), err)
    print_summary(out, summary)
    if notify:
        from bot.alerts import alert_merchant

        err.print(alert_merchant(cfg, _channels(cfg), m.id).line(), style="dim", highlight=False)


def _channels(cfg: Config, quiet: bool = False) -> dict:
    """The configured channels; `quiet`: the console channel prints nothing (its card was
    just shown by the command itself)."""
    import channels

    built = channels.build(cfg)
    if "console" in built:
        built["console"].console = Console(file=io.StringIO()) if quiet else out
    return built


def _actor(cfg: Config, as_user: str | None):
    """Who acts from the console: --as NAME, else the user linked to this login."""
    import getpass

    from bot.users import UserError, get_user, identify

    url = cfg.database.url
    try:
        actor = get_user(url, as_user) if as_user else identify(url, "console", getpass.getuser())
    except UserError as exc:
        _fail(str(exc), 2)
    if actor is None:
        _fail(f"who is acting? pass --as NAME, or link your login once: "
              f"recon users link NAME --platform console --id {getpass.getuser()}", 2)
    return actor


@silence_app.command("add")
def silence_add(
    for_: Annotated[str, typer.Option("--for", help="How long: 2d, 36h, 1d12h, 90m.")],
    reason: Annotated[str, typer.Option(help="Why, for the others (\"bank holiday, T+2 expected\").")],
    merchant: MerchantOpt = None,
    source: Annotated[Optional[str], typer.Option(help="Only this source.")] = None,
    type_: Annotated[Optional[str], typer.Option("--type", help="Only this break type (short, long, ...).")] = None,
    day: Annotated[Optional[str], typer.Option(help="Only breaks of this business day (YYYY-MM-DD).")] = None,
    config: ConfigOpt = None,
    as_: Annotated[Optional[str], typer.Option("--as", help="Who silences (an approver or admin).")] = None,
) -> None:
    """Silence alerts for a while: matching breaks get no new card and do not escalate."""
    from bot.silences import Matchers, SilenceError, add, parse_duration

    cfg = _load(config)
    m = _merchant(cfg, merchant)
    actor = _actor(cfg, as_)
    try:
        the_day = date.fromisoformat(day) if day else None
    except ValueError:
        _fail(f"--day {day!r} is not a date (YYYY-MM-DD)", 2)
    try:
        row = add(cfg, actor, Matchers(m.id, source, type_, the_day), parse_duration(for_), reason)
    except (SilenceError, ConfigError) as exc:
        _fail(str(exc), 2)
    out.print(f"silence #{row.id}: {Matchers(m.id, source, type_, the_day).describe()} until "
              f"{row.ends_at:%Y-%m-%d %H:%M} UTC, by {row.author}: {row.reason}", highlight=False)


@silence_app.command("list")
def silence_list(config: ConfigOpt = None,
                 all_: Annotated[bool, typer.Option("--all", help="Also the silences that are over.")] = False) -> None:
    """The silences in force (with --all: every one)."""
    from datetime import timezone

    from bot.silences import listing

    cfg = _load(config)
    t = _table("id", "merchant", "source", "type", "day", "until (UTC)", "by", "reason", "state")
    now = datetime.now(timezone.utc)
    for x in listing(cfg.database.url, now, include_over=all_):
        ends = x.ends_at if x.ends_at.tzinfo else x.ends_at.replace(tzinfo=timezone.utc)
        state = f"ended by {x.ended_by}" if x.ended_at else ("over" if ends <= now else "active")
        t.add_row(str(x.id), x.merchant_id, x.source or "*", x.type or "*", str(x.business_day or "*"),
                  f"{ends:%Y-%m-%d %H:%M}", x.author, x.reason, state)
    out.print(t)


@silence_app.command("end")
def silence_end(
    silence_id: Annotated[int, typer.Argument(metavar="ID")],
    config: ConfigOpt = None,
    as_: Annotated[Optional[str], typer.Option("--as", help="Who ends it (an approver or admin).")] = None,
) -> None:
    """End a silence now; what it held back is sent at once."""
    from bot.alerts import alert_merchant
    from bot.silences import SilenceError, end

    cfg = _load(config)
    actor = _actor(cfg, as_)
    try:
        row = end(cfg, actor, silence_id)
    except SilenceError as exc:
        _fail(str(exc), 2)
    out.print(f"silence #{row.id} ended by {row.ended_by}", highlight=False)
    err.print(alert_merchant(cfg, _channels(cfg), row.merchant_id).line(), style="dim", highlight=False)


@alerts_app.command("send")
def alerts_send(merchant: MerchantOpt = None, config: ConfigOpt = None) -> None:
    """Run the alert pipeline over a merchant's current breaks (what `recon run` does after a run)."""
    from bot.alerts import alert_merchant

    cfg = _load(config)
    m = _merchant(cfg, merchant)
    out.print(alert_merchant(cfg, _channels(cfg), m.id).line(), highlight=False)


@alerts_app.command("drain")
def alerts_drain(config: ConfigOpt = None) -> None:
    """Send what is due in the outbox (and escalations that are due)."""
    from bot.alerts import drain_outbox, escalate_due

    cfg = _load(config)
    chans = _channels(cfg)
    sent = drain_outbox(cfg, chans)
    levels = escalate_due(cfg, chans)
    out.print(f"{sent} message(s) delivered, {levels} escalation(s) sent", highlight=False)


@alerts_app.command("routes")
def alerts_routes(config: ConfigOpt = None) -> None:
    """The alert routes, with the ones the outbox disabled after a permanent error."""
    from sqlmodel import Session, select

    from models.tables import AlertRoute

    cfg = _load(config)
    t = _table("merchant", "channel", "target", "severity", "state")
    chans = _channels(cfg)
    from bot.outbox import stored_target

    with Session(db.get_engine(cfg.database.url)) as s:
        off = {(r.channel, r.target): r for r in s.exec(select(AlertRoute)).all()}
    for r in cfg.chat.routes:
        stored = stored_target(chans, r)
        d = off.get((r.channel, stored))
        t.add_row(r.merchant, r.channel, stored or "—", ",".join(r.severity),
                  f"disabled {d.disabled_at:%Y-%m-%d %H:%M}: {d.reason}" if d else "active")
    out.print(t)


@alerts_app.command("enable")
def alerts_enable(channel: str, target: Annotated[str, typer.Argument()] = "", config: ConfigOpt = None) -> None:
    """Use a route the outbox disabled again (after fixing it: bot invited, id corrected)."""
    from bot.outbox import enable_route

    cfg = _load(config)
    if not enable_route(cfg.database.url, channel, target):
        _fail(f"{channel} {target} is not disabled", 1)
    out.print(f"{channel} {target} enabled; the next pass sends what it missed", highlight=False)


ActorOpt = Annotated[Optional[str], typer.Option("--as", help="Act as this reconbot user (else the one linked to "
                                                 "your login: recon users link NAME --platform console --id $USER).")]


@users_app.command("add")
def users_add(
    name: str,
    role: Annotated[str, typer.Option(help="viewer | reviewer | approver | admin")] = "reviewer",
    merchants: Annotated[str, typer.Option(help="Comma-separated merchant ids, or * for all.")] = "*",
    limit: Annotated[Optional[str], typer.Option(
        help="Largest adjustment this user may approve (major units).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Add a user."""
    from bot.users import UserError, add_user

    cfg = _load(config)
    try:
        u = add_user(cfg.database.url, name, role, merchants, limit)
    except UserError as exc:
        _fail(str(exc), 2)
    out.print(f"added {u.name}: {u.role}, merchants {','.join(u.merchants)}, "
              f"approval limit {u.approval_limit if u.approval_limit is not None else 'none'}", highlight=False)


@users_app.command("list")
def users_list(config: ConfigOpt = None) -> None:
    """List users with their roles, scopes, limits and linked chat accounts."""
    from bot.users import list_users

    cfg = _load(config)
    t = _table("user", "role", "merchants", "approval limit", "linked accounts")
    for u, linked in list_users(cfg.database.url):
        t.add_row(u.name, u.role, ",".join(u.merchants), str(u.approval_limit or "—"), ", ".join(linked) or "—")
    out.print(t)


@users_app.command("link")
def users_link(
    name: str,
    platform: Annotated[Optional[str], typer.Option(help="console | slack | telegram | wecom")] = None,
    id: Annotated[Optional[str], typer.Option("--id", help="The user's id on that platform.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Link a chat account to a user: directly (--platform, --id), or print a one-time code
    the user types in the chat as /recon link CODE."""
    from bot.users import UserError, link_identity, new_link_code

    cfg = _load(config)
    try:
        if platform or id:
            if not (platform and id):
                _fail("give both --platform and --id, or neither (to get a code)", 2)
            link_identity(cfg.database.url, name, platform, id)
            out.print(f"{platform}:{id} now acts as {name}", highlight=False)
            return
        code = new_link_code(cfg.database.url, name, cfg.chat.link_code_minutes)
    except UserError as exc:
        _fail(str(exc), 2)
    out.print(f"{name} types this in Slack, Telegram or WeCom within {cfg.chat.link_code_minutes} minutes:\n"
              f"  /recon link {code}", highlight=False)


def _console_act(config, break_id: int, action: str, as_user: str | None, arg: str | None = None) -> None:
    from bot.actions import Click, Workflow
    from bot.alerts import alert_merchant
    from models.tables import Break

    cfg = _load(config)
    url = cfg.database.url
    actor = _actor(cfg, as_user)
    from sqlmodel import Session

    with Session(db.get_engine(url)) as s:
        b = s.get(Break, break_id)
        version = b.version if b else 0
        b_merchant = b.merchant_id if b else None
    workflow = Workflow(cfg)
    outcome = workflow.act(actor, Click(action, break_id, version, arg, "console"))
    if outcome.card is not None:
        from channels.console import ConsoleChannel

        ConsoleChannel(out).send("", outcome.card)
    if outcome.status in ("refused", "lost", "stale"):
        _fail(outcome.message, 1)
    out.print(outcome.message, highlight=False)
    if outcome.changed:  # the break's cards in every chat follow (the pipeline's update path)
        alert_merchant(cfg, _channels(cfg, quiet=True), b_merchant)


@app.command()
def approve(break_id: Annotated[int, typer.Argument(metavar="BREAK")], config: ConfigOpt = None,
            as_: ActorOpt = None) -> None:
    """Approve a break's adjustment (as the card's button does)."""
    _console_act(config, break_id, "approve", as_)


@app.command()
def assign(break_id: Annotated[int, typer.Argument(metavar="BREAK")], user: str, config: ConfigOpt = None,
           as_: ActorOpt = None) -> None:
    """Assign a break to a user."""
    from bot.users import UserError, get_user

    cfg = _load(config)
    try:
        target = get_user(cfg.database.url, user)
    except UserError as exc:
        _fail(str(exc), 2)
    _console_act(config, break_id, "assign_to", as_, str(target.id))


@app.command()
def resolve(break_id: Annotated[int, typer.Argument(metavar="BREAK")], config: ConfigOpt = None,
            as_: ActorOpt = None) -> None:
    """Mark a break resolved."""
    _console_act(config, break_id, "resolve", as_)


@app.command("telegram-webhook")
def telegram_webhook(url: Annotated[str, typer.Argument(help="Public HTTPS URL of /telegram/webhook.")],
                     config: ConfigOpt = None) -> None:
    """Point Telegram at `recon serve` (setWebhook with the configured secret_token)."""
    from bot.transport import TransportError
    from channels.telegram import TelegramChannel

    cfg = _load(config, schema=False)
    if cfg.chat.telegram is None:
        _fail("no [chat.telegram] section in the configuration", 2)
    try:
        TelegramChannel.from_config(cfg).set_webhook(url)
    except TransportError as exc:
        _fail(exc.message)
    out.print(f"Telegram now posts updates to {url}", highlight=False)


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Listen address (default: [chat.server] host).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default: [chat.server] port).")] = None,
    scheduler: Annotated[bool, typer.Option(help="Run the scheduled jobs too (default: [schedule] enabled).")] = True,
) -> None:
    """Serve the inbound endpoints for Slack, Telegram and WeCom, payment notifications,
    /healthz and /metrics (Slack in Socket Mode and Telegram in polling mode connect out
    instead: no public URL needed), and run the scheduled jobs ([schedule])."""
    from bot.server import serve as run_server

    cfg = _load(config)
    run_server(cfg, host, port, scheduler=scheduler and cfg.schedule.enabled)


@app.command("scheduler")
def scheduler_cmd(config: ConfigOpt = None) -> None:
    """Run the scheduled jobs alone (pulls, reconciles, hourly batches, digests, retraining,
    escalations), without the HTTP endpoints. Stops on Ctrl-C or SIGTERM."""
    import logging
    import signal
    import threading

    from bot.scheduler import serve_alone

    cfg = _load(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # URLs may carry tokens (see bot/server.py)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    serve_alone(cfg, _channels(cfg), stop)


class JobKind(str, Enum):
    pull = "pull"
    reconcile = "reconcile"
    hourly = "hourly"
    retrain = "retrain"


@jobs_app.callback()
def jobs_list(
    ctx: typer.Context,
    config: ConfigOpt = None,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """The schedule with next run times (UTC and the job's zone), pending retries and
    escalations, and the latest runs."""
    if ctx.invoked_subcommand is not None:
        return
    from bot.scheduler import listing

    cfg = _load(config)
    data = listing(cfg)
    if format is not Format.table:
        rows = [{**r, "next_utc": _iso(r["next_utc"]), "next_local": _iso(r["next_local"])} for r in data["schedule"]]
        pending = [{**p, "at_utc": _iso(p["at_utc"]), "at_local": _iso(p["at_local"])} for p in data["pending"]]
        recent = [{"job": r.job_id, "scheduled_for": _iso(r.scheduled_for), "status": r.status, "by": r.claimed_by,
                   "detail": r.detail} for r in data["recent"]]
        sys.stdout.write(json.dumps({"schedule": rows, "pending": pending, "escalations": [
            {**e, "due": _iso(e.get("due"))} for e in data["escalations"]], "recent": recent},
            ensure_ascii=False, indent=2, default=str) + "\n")
        return
    t = _table("job", "schedule", "next run (UTC)", "next run (job's zone)", title="schedule")
    for r in data["schedule"]:
        t.add_row(r["job"], r["schedule"], _when(r["next_utc"]), _when(r["next_local"], zone=True))
    out.print(t)
    p = _table("job", "day", "try", "at (UTC)", "at (local)", title="waiting: retries and follow-up runs")
    for r in data["pending"]:
        tries = f"{r['attempt'] + 1}" + (f" (failed {r['failures']}x)" if r["failures"] else "")
        p.add_row(r["job"], r["day"] or "—", tries, _when(r["at_utc"]), _when(r["at_local"], zone=True))
    out.print(p if data["pending"] else "waiting: no retries or follow-up runs", highlight=False)
    if data["escalations"]:
        e = _table("break", "level", "due (UTC)", title="escalations due")
        for r in data["escalations"]:
            e.add_row(str(r["break"]), str(r["level"]), _when(r["due"]))
        out.print(e)
    else:
        out.print("escalations: none pending", highlight=False)
    if data["recent"]:
        r = _table("job", "scheduled for (UTC)", "status", "by", "detail", title="latest runs", overflow="fold")
        for x in data["recent"]:
            r.add_row(x.job_id, _when(x.scheduled_for), x.status, x.claimed_by, x.detail[:200])
        out.print(r)


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _when(value, zone: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:%Y-%m-%d %H:%M:%S} {value.tzname()}" if zone else f"{value:%Y-%m-%d %H:%M:%S}"


@jobs_app.command("run")
def jobs_run(
    kind: Annotated[JobKind, typer.Argument(help="pull | reconcile | hourly | retrain")],
    config: ConfigOpt = None,
    merchant: MerchantOpt = None,
    source: Annotated[Optional[str], typer.Option("--source", "-s", help="The source to pull.")] = None,
    day: Annotated[Optional[str], typer.Option(help="Business day (default: the one the job would take now).")] = None,
    now: Annotated[Optional[str], typer.Option(hidden=True, help="The moment the run stands for (ISO).")] = None,
    attempt: Annotated[int, typer.Option(hidden=True)] = 0,
    first_at: Annotated[Optional[str], typer.Option("--first-at", hidden=True)] = None,
    scheduled_for: Annotated[Optional[str], typer.Option("--scheduled-for", hidden=True)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (the scheduler reads it); "
                                          "send no alerts.")] = False,
) -> None:
    """One run of a job now, as the scheduler runs it: pull (one source, retries not
    scheduled), reconcile, hourly batch or retrain; then the merchant's alerts."""
    from core import schedule

    cfg = _load(config)
    m = _merchant(cfg, merchant).id if kind is not JobKind.retrain else None
    if kind is JobKind.pull and not source:
        _fail("recon jobs run pull needs --source", 2)
    try:
        the_day = date.fromisoformat(day) if day else None
        when, first, due = (datetime.fromisoformat(x) if x else None for x in (now, first_at, scheduled_for))
    except ValueError as exc:
        _fail(f"not a date or time: {exc}", 2)
    if kind is JobKind.pull and cfg.merchant(m).source(source) is None:
        _fail(f"merchant {m} has no source {source!r}", 2)
    result = schedule.work(cfg, kind.value, m, source, the_day, when, attempt, first, due)
    if as_json:
        sys.stdout.write(json.dumps(result.as_json(), ensure_ascii=False) + "\n")
        return
    out.print(f"{result.status}: {result.detail}", highlight=False)
    for f in result.follow_ups:
        out.print(f"not scheduled (run by hand): {f.kind} {f.merchant} {f.day} at {f.at:%Y-%m-%d %H:%M:%S} UTC",
                  highlight=False)
    if result.notice:
        out.print(result.notice, highlight=False)
    if result.alert:
        from bot.alerts import alert_merchant

        channels = _channels(cfg)
        for merchant_id in result.alert:
            err.print(alert_merchant(cfg, channels, merchant_id).line(), style="dim", highlight=False)


def run_with_progress(cfg, merchant, day, console: Console) -> RunSummary:
    from core.runs import channel_sources, run_day

    with _progress(console) as progress:
        task = progress.add_task(f"reconciling {merchant.id} {day}", total=len(channel_sources(merchant)))
        return run_day(cfg, merchant, day, on_source=lambda _s: progress.advance(task))


def _table(*columns: str, title: str | None = None, right: tuple[str, ...] = (), **column_options) -> Table:
    """A rich table with these columns, titled on the left; those in `right` (amounts,
    counts) right-aligned."""
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left", **column_options)
    return t


def print_summary(console: Console, s: RunSummary) -> None:
    t = _table("source", "ours", "channel", "matched", "breaks", "in transit",
               title=f"{s.merchant} · {s.day} · run #{s.run_id}", right=("ours", "channel", "matched", "in transit"))
    for x in s.sources:
        breaks = "\n".join(f"{k} {v}" for k, v in sorted(x.breaks.items())) or "none"
        t.add_row(x.source, f"{x.internal_payments} · {display(x.internal_amount, s.currency)}",
                  f"{x.channel_payments} · {display(x.channel_amount, s.currency)}",
                  f"{x.matched_pct:.1f}%", breaks, str(x.in_transit))
    console.print(t)
    console.print(f"breaks: {s.created} new, {s.updated} updated, {s.cleared} cleared", highlight=False)
    a = s.anomaly
    if a is not None:
        console.print(f"anomaly model {a.model}: {a.scored} transactions scored, {a.alerts} open alerts "
                      f"({a.new_alerts} new), {a.breaks_scored} breaks scored, {a.breaks_raised} raised to urgent",
                      highlight=False)


@app.command()
def breaks(
    config: ConfigOpt = None,
    merchant: MerchantOpt = None,
    day: Annotated[Optional[str], typer.Option(help="Only this business day.")] = None,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    all: Annotated[bool, typer.Option("--all", help="Include cleared and resolved breaks.")] = False,
) -> None:
    """List breaks (open, in transit and data-quality notes by default)."""
    from core.breaks import list_breaks

    cfg = _load(config)
    m = cfg.merchant(merchant).id if merchant else None
    rows = list_breaks(cfg.database.url, m, date.fromisoformat(day) if day else None,
                       None if all else ("open", "in_transit", "note"))
    if format is Format.json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    elif format is Format.csv:
        buf = io.StringIO()
        fields = [k for k in rows[0] if k != "evidence"] + ["evidence"] if rows else ["id"]
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "evidence": "; ".join(f"{e['side']}:{e['file']}:{e['line']}" for e in r["evidence"])})
        sys.stdout.write(buf.getvalue())
    else:
        print_breaks(out, rows)


def print_breaks(console: Console, rows: list[dict]) -> None:
    t = _table("id", "day", "source", "type", "status", "order", "ours", "channel", "difference", "evidence",
               right=("id", "ours", "channel", "difference"))
    for r in rows:
        ev = ", ".join(Path(e["file"]).name + (f":{e['line']}" if e["line"] is not None else "")
                       for e in r["evidence"])  # full paths: --format json
        t.add_row(str(r["id"]), r["day"], r["source"], r["type"], r["status"], r["order_id"] or r["txn_id"] or "",
                  r["internal_amount"] or "—", r["channel_amount"] or "—", r["difference"], ev)
    console.print(t)


@app.command()
def backtest(
    rules: Annotated[Path, typer.Option("--rules", help="Proposed rules: [tolerance] [matching] [fx] [policy] [sources.NAME].")],
    first: Annotated[str, typer.Option("--from", help="First business day.")],
    last: Annotated[str, typer.Option("--to", help="Last business day.")],
    config: ConfigOpt = None,
    merchant: MerchantOpt = None,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """Replay stored days with proposed rules beside the current ones (writes nothing)."""
    from core.backtest import backtest as run_backtest

    cfg = _load(config)
    try:
        proposed = config_mod.with_rules(cfg, rules)
    except ConfigError as exc:
        _fail(str(exc), 2)
    m = _merchant(cfg, merchant)
    days = run_backtest(cfg, proposed, m.id, _day(first, m.timezone), _day(last, m.timezone))
    if format is Format.json:
        sys.stdout.write(json.dumps([_diff_json(d, m.currency) for d in days], ensure_ascii=False, indent=2) + "\n")
        return
    print_backtest(out, days, m.currency)


def _brief(f: dict) -> str:
    return f"{f['source']} {f['type']} {f['order_id'] or f['txn_id']}"


def _diff_json(d, currency: str) -> dict:
    from core.money import to_major

    return {
        "day": d.day.isoformat(), "matches": d.matches, "matches_gained": d.matches_gained,
        "matches_lost": d.matches_lost,
        "breaks_appeared": [_brief(f) for f in d.appeared], "breaks_disappeared": [_brief(f) for f in d.disappeared],
        "breaks_changed_type": [f"{_brief(a)} -> {b['type']}" for a, b in d.changed_type],
        "adjustments_added": [{"break": _brief(f), "amount": to_major(a, currency)} for f, a in d.adjustments_added],
        "adjustments_removed": [{"break": _brief(f), "amount": to_major(a, currency)} for f, a in d.adjustments_removed],
    }


def print_backtest(console: Console, days, currency: str) -> None:
    numbers = ("matches +/-", "breaks new", "breaks gone", "type changed", "auto-adj. added", "auto-adj. removed")
    t = _table("day", *numbers, title="backtest: proposed rules vs current", right=numbers)
    totals = [0, 0, 0, 0, 0, 0, 0, 0]
    for d in days:
        added = sum(a for _f, a in d.adjustments_added)
        removed = sum(a for _f, a in d.adjustments_removed)
        row = [d.matches_gained, d.matches_lost, len(d.appeared), len(d.disappeared), len(d.changed_type),
               len(d.adjustments_added), added, len(d.adjustments_removed)]
        totals = [a + b for a, b in zip(totals, row)] + totals[len(row):]
        t.add_row(d.day.isoformat(), f"+{d.matches_gained} / -{d.matches_lost}", str(len(d.appeared)),
                  str(len(d.disappeared)), str(len(d.changed_type)),
                  f"{len(d.adjustments_added)} · {display(added, currency)}",
                  f"{len(d.adjustments_removed)} · {display(removed, currency)}")
    g, lost, new, gone, changed, n_add, add, n_rem = totals
    removed_total = sum(a for d in days for _f, a in d.adjustments_removed)
    t.add_section()
    t.add_row("total", f"+{g} / -{lost}", str(new), str(gone), str(changed), f"{n_add} · {display(add, currency)}",
              f"{n_rem} · {display(removed_total, currency)}")
    console.print(t)
    for d in days:
        for a, b in d.changed_type:
            console.print(f"  {d.day} {_brief(a)} becomes {b['type']}", highlight=False)
        for f in d.appeared:
            console.print(f"  {d.day} new: {_brief(f)} ({f['explanation'] if 'explanation' in f else f['status']})",
                          highlight=False)
        for f in d.disappeared:
            console.print(f"  {d.day} gone: {_brief(f)}", highlight=False)


@model_app.command("train")
def model_train(
    config: ConfigOpt = None,
    merchant: MerchantOpt = None,
    until: Annotated[Optional[str], typer.Option(help="Last business day of the window (default: latest stored).")] = None,
) -> None:
    """Train the anomaly models (per merchant with enough history, and the pooled one)."""
    from core.anomaly.training import train

    cfg = _load(config)
    ids = [_merchant(cfg, merchant).id] if merchant else None
    results = train(cfg, ids, date.fromisoformat(until) if until else None)
    if not results:
        _fail("no channel transactions stored yet: ingest statements first", 1)
    for r in results:
        name = "pooled" if r.scope == "*" else r.scope
        out.print(f"{name} v{r.version}: {r.rows} transactions {r.window[0]}..{r.window[1]}"
                  f"{f', {r.excluded} flagged anomalies left out' if r.excluded else ''}; "
                  f"alerts from score {r.threshold:.3f}; files in {r.path}", highlight=False)


@anomaly_app.command("expected")
def anomaly_expected(
    break_id: Annotated[int, typer.Argument(metavar="BREAK", help="Id of the anomaly alert.")],
    config: ConfigOpt = None,
    by: Annotated[str, typer.Option("--by", help="Who decided (kept in the audit log).")] = "cli",
    note: Annotated[str, typer.Option(help="Why it is expected.")] = "",
) -> None:
    """Mark an anomaly alert expected: closed, and kept among ordinary rows at the next training."""
    from core.anomaly.feedback import FeedbackError, mark_expected

    cfg = _load(config)
    try:
        b = mark_expected(cfg.database.url, break_id, by, note)
    except FeedbackError as exc:
        _fail(str(exc), 1)
    out.print(f"#{b.id} marked expected by {by}", highlight=False)


@app.command()
def demo(output: Annotated[Path, typer.Option(help="Folder for the demo database.")] = Path("demo-output")) -> None:
    """Ingest the bundled example days, reconcile them and show every break (no token, no server)."""
    from bot.demo import run_demo

    run_demo(output, out)


class ReportFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    xlsx = "xlsx"


@app.command()
def report(
    config: ConfigOpt = None,
    merchant: MerchantOpt = None,
    day: Annotated[Optional[str], typer.Option(help="Business day (default: yesterday, merchant time).")] = None,
    format: Annotated[ReportFormat, typer.Option("--format", "-f")] = ReportFormat.table,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here instead of the terminal "
                                                   "(xlsx default: recon-report-MERCHANT-DAY.xlsx).")] = None,
    chart: Annotated[Optional[Path], typer.Option(help="Also write the trend charts as PNG here.")] = None,
) -> None:
    """The day's report per source: both sides, matched %, breaks by type, in transit,
    automatic adjustments, fees against the rate card, net settled; then every break with
    its evidence."""
    from bot.report_tables import csv_text, print_report, write_text
    from core.report import as_json, day_report

    cfg = _load(config)
    m = _merchant(cfg, merchant)
    the_day = _day(day, m.timezone)
    rep = day_report(cfg, m.id, the_day)
    if rep.run_id is None:
        err.print(f"note: {m.id} {the_day} was never reconciled (recon run --day {the_day}): "
                  "the report has no run figures", highlight=False)
    if format is ReportFormat.xlsx:
        from bot.report_xlsx import write_xlsx

        path = write_xlsx(rep, output or Path(f"recon-report-{m.id}-{the_day}.xlsx"))
        out.print(f"report written to {path}", highlight=False)
    elif format is ReportFormat.table:
        if output:
            with output.open("w", encoding="utf-8") as fh:
                print_report(Console(file=fh, width=160, no_color=True), rep)
            out.print(f"report written to {output}", highlight=False)
        else:
            print_report(out, rep)
    else:
        text = csv_text(rep) if format is ReportFormat.csv else \
            json.dumps(as_json(rep), ensure_ascii=False, indent=2) + "\n"
        if output:
            out.print(f"report written to {write_text(output, text)}", highlight=False)
        else:
            sys.stdout.write(text)
    if chart:
        from core.charts import render_dashboard
        from core.report import trend

        chart.write_bytes(render_dashboard(trend(cfg, m.id, the_day), cfg))
        (err if format in (ReportFormat.json, ReportFormat.csv) and not output else out).print(
            f"chart written to {chart}", highlight=False)


def _merchant(cfg: Config, merchant: str | None):
    try:
        return cfg.merchant(merchant)
    except ConfigError as exc:
        _fail(str(exc), 2)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    try:
        app()
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
