"""Configuration: one TOML file, validated, with errors that name the key and the file.

Loaded from `--config` or the `RECON_CONFIG` environment variable; without either,
the embedded defaults (SQLite in the working directory, console chat) apply.
A string value written as `${NAME}` is read from the environment variable NAME, so
secrets never need to sit in the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from core import cron

ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
DEFAULT_DATABASE_URL = "sqlite:///reconbot.db"


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator (file and key)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Asia/Shanghai')")
    return value


# SQLite: column snapshots (core/snapshots) of files whose days ended this long before a newly
# stored file's first day are removed. Runs read a day's neighbours (twice the settlement lag)
# and re-run days waiting for items in transit up to core.runs.CARRY_OVER_DAYS (31) back;
# older days read from SQLite. A million records take ~130 MB.
SNAPSHOT_DAYS = 35


class DatabaseConfig(_Strict):
    url: str = DEFAULT_DATABASE_URL
    snapshot_days: int = Field(SNAPSHOT_DAYS, ge=0)  # 0: no snapshots


class PullConfig(_Strict):
    """How `recon pull` fetches a source's statement from the channel's API (core/pull).

    Secrets are SecretStr: they never show in a repr, a log line or an error.
    """

    # the platform's API address, overridden for sandboxes, proxies and tests
    api_base: str | None = None
    # Stripe only: the files host (files.stripe.com) the report file is downloaded from
    files_base: str | None = None
    # where pulled files are written (relative to the config file), then ingested
    download_folder: str = "downloads"
    timeout_seconds: float = Field(default=30, gt=0)
    # further attempts after a 5xx, 429, timeout or connection error, waiting
    # retry_wait_seconds, then twice that, ... (capped at 60 s)
    retries: int = Field(default=4, ge=0, le=10)
    retry_wait_seconds: float = Field(default=1.0, ge=0)
    # WeChat Pay v3: merchant id, the merchant API certificate's serial number and its
    # private key (PEM text or a path to the PEM file), and the WeChat Pay platform
    # certificate or public key (PEM text or path) that verifies the responses
    mchid: str | None = None
    serial_no: str | None = None
    private_key: SecretStr | None = None
    platform_certificate: str | None = None
    # WeChat: ALL | SUCCESS | REFUND (trade bill); Alipay: trade | signcustomer
    bill_type: str | None = None
    # WeChat fund-flow bill: BASIC | OPERATION | FEES
    account_type: str = "BASIC"
    # WeChat: GZIP (smaller download, unpacked here) or empty for plain CSV
    tar_type: str = "GZIP"
    # Alipay open platform: the app id and Alipay's public key (PEM text or path, verifies
    # the responses); the app's own private key is `private_key` above
    app_id: str | None = None
    alipay_public_key: str | None = None
    # Stripe: secret or restricted key (reporting read), the report type, how often and how
    # long to wait for the report run to succeed
    api_key: SecretStr | None = None
    report_type: str = "balance_change_from_activity.itemized.3"
    poll_seconds: float = Field(default=5, ge=0)
    poll_timeout_seconds: float = Field(default=900, gt=0)


class SqlConfig(_Strict):
    """kind = "orders_sql": the merchant's orders read straight from its own database."""

    # SQLAlchemy URL of the shop's database (password as "${ENV}")
    url: SecretStr
    # one business day of orders; `:day` is bound to that day; the columns are named like
    # the orders export's header (or mapped with `columns`)
    query: str
    # rows fetched per round trip (server-side cursor where the driver has one)
    chunk_rows: int = Field(default=50_000, ge=1)

    @field_validator("query")
    @classmethod
    def _has_day(cls, value: str) -> str:
        if ":day" not in value:
            raise ValueError("the query must use the :day parameter (the business day to read)")
        return value


def _cron_or_off(value: str | None) -> str | None:
    """A cron expression (core/cron.py), or "" for "not scheduled"."""
    return value if not value else cron.check(value)


class SourceSchedule(_Strict):
    """`[merchants.sources.schedule]`: this source's pull, over the `[schedule]` defaults."""

    # when to pull (cron, in the source's `timezone`); "" = never by the scheduler
    pull: str | None = None
    # while the statement is not there yet: first wait, doubling up to the longest wait
    retry_first_minutes: float | None = Field(default=None, gt=0)
    retry_max_minutes: float | None = Field(default=None, gt=0)
    # without `expected_by`: stop trying this long after the first attempt
    give_up_after_minutes: int | None = Field(default=None, ge=1)

    @field_validator("pull")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return _cron_or_off(value)


class MerchantSchedule(_Strict):
    """`[merchants.schedule]`: this merchant's jobs, over the `[schedule]` defaults ("" = off)."""

    reconcile: str | None = None
    hourly: str | None = None
    digest: str | None = None

    @field_validator("reconcile", "hourly", "digest")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return _cron_or_off(value)


class SourceConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_][a-z0-9_-]*$")
    kind: str
    files: list[str] = []
    folder: str | None = None
    timezone: str = "Asia/Shanghai"
    settlement_lag_days: int = Field(default=1, ge=0, le=30)
    # header in your file -> canonical column (orders and generic sources)
    columns: dict[str, str] = {}
    # value in the orders' `channel` column -> source name (e.g. "微信支付" = "wechatpay")
    channel_names: dict[str, str] = {}
    # rate card: the fee this channel should charge, as a fraction of the settled amount
    fee_rate: Decimal | None = None
    # fee differences up to this (major units) are rounding, not a fee mismatch
    fee_tolerance: Decimal = Decimal("0.01")
    # completeness: the statement of day D is due by this local time (HH:MM, in `timezone`)
    # on day D + expected_lag_days; past that without a file, the day gets a `late` break
    expected_by: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    expected_lag_days: int = Field(default=1, ge=0, le=31)
    # `recon pull`: fetch the statement from the channel's API
    pull: PullConfig | None = None
    # kind = "orders_sql": where the orders are read from
    sql: SqlConfig | None = None
    # folder drop (`folder`): a file is picked up once it has not changed for this long
    settle_seconds: float = Field(default=10, ge=0)
    # the scheduler: when this source is pulled, and how it waits for a late statement
    schedule: SourceSchedule = SourceSchedule()
    # kind = "stripe": the signing secret (whsec_...) of the Stripe webhook endpoint
    # /webhooks/stripe/<merchant>/<source>; without it that endpoint refuses everything
    stripe_webhook_secret: SecretStr | None = Field(default=None, min_length=8)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return _check_timezone(value)

    @model_validator(mode="after")
    def _stripe_secret_on_stripe(self):
        if self.stripe_webhook_secret is not None and self.kind != "stripe":
            raise ValueError(f"stripe_webhook_secret belongs on a source of kind stripe, not {self.kind}")
        return self


class MerchantConfig(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: str
    timezone: str = "Asia/Shanghai"
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    # the language of this merchant's alert cards on every platform (default: each
    # platform's own `language`)
    language: Literal["en", "zh"] | None = None
    sources: list[SourceConfig] = []
    # the scheduler: this merchant's reconcile, hourly batch and digest times
    schedule: MerchantSchedule = MerchantSchedule()
    # signed payment notifications POSTed to /webhooks/payments/<id> (HMAC-SHA256 key);
    # without it that endpoint refuses everything
    payments_webhook_secret: SecretStr | None = Field(default=None, min_length=16)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return _check_timezone(value)

    @model_validator(mode="after")
    def _unique_source_names(self):
        seen = set()
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"source name {s.name!r} is used twice")
            seen.add(s.name)
        return self

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.name == name), None)


class ToleranceConfig(_Strict):
    # Differences up to max(absolute, percent of the amount) are treated as equal.
    absolute: Decimal = Decimal("0")
    percent: Decimal = Decimal("0")
    auto_adjust_below: Decimal = Decimal("100")
    large_transaction: Decimal = Decimal("5000")


class MatchingConfig(_Strict):
    # fuzzy pass (bank lines without our ids): how far apart in time two sides may be
    window_days: Decimal = Field(default=Decimal("3"), ge=0)
    # a fuzzy match is confirmed at or above this score (0..1.1) and only when untied
    min_score: Decimal = Decimal("0.8")
    # regular expressions for our order ids inside memos / attach fields
    id_patterns: list[str] = []

    @field_validator("id_patterns")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}")
        return value


class FxConfig(_Strict):
    # "FROM/TO" = rate: one unit of FROM in TO (e.g. "USD/CNY" = "7.10")
    rates: dict[str, Decimal] = {}
    # a settlement within this percent of the converted amount is not an FX difference
    tolerance_percent: Decimal = Decimal("0.5")

    @field_validator("rates")
    @classmethod
    def _pairs(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for pair in value:
            if not re.fullmatch(r"[A-Z]{3}/[A-Z]{3}", pair):
                raise ValueError(f"{pair!r} is not a currency pair like 'USD/CNY'")
        return value


class PolicyConfig(_Strict):
    # propose (or, with auto_apply, book) adjustments for these types below the threshold
    auto_types: list[str] = ["amount_mismatch", "fee_mismatch", "fx_difference"]
    auto_apply: bool = False


class AnomalyConfig(_Strict):
    # score every run's transactions (only where a trained model exists: no model, no scoring)
    enabled: bool = True
    # days of history a model is trained on (`recon model train`, the scheduler's `retrain` job)
    train_days: int = Field(default=60, ge=7, le=400)
    # a merchant with fewer channel transactions than this in the window uses the pooled model
    min_transactions: int = Field(default=2000, ge=100)
    # the share of transactions that may become `anomaly` alerts (the threshold is set from it)
    target_alert_rate: Decimal = Field(default=Decimal("0.001"), gt=0, le=Decimal("0.05"))
    # trees in each Isolation Forest (more: steadier scores, slower scoring)
    trees: int = Field(default=100, ge=10, le=1000)
    # folder for the model files (relative to the config file's folder)
    model_dir: str = "anomaly-models"


SEVERITIES = ("note", "normal", "urgent")


class ChatRoute(_Strict):
    merchant: str = "*"
    channel: Literal["console", "wecom", "wecom_robot", "slack", "telegram"] = "console"
    target: str = ""
    # which alerts this route takes, by severity (note | normal | urgent); all by default
    severity: list[Literal["note", "normal", "urgent"]] = list(SEVERITIES)


class EscalationLevel(_Strict):
    # minutes after the break's card was first sent (default: 10 for the first level, 30 for
    # the second; later levels must say)
    after_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)
    # where this level sends the card (a finance lead, a second chat)
    routes: list[ChatRoute] = Field(min_length=1)


class AlertsConfig(_Strict):
    """The alert pipeline (bot/alerts.py): grouping, escalation and the outbox."""

    # a break whose difference is at least this much (major units) gets a card of its own
    # (and escalates); smaller ones go into one digest per merchant, source and day.
    # Default: tolerance.auto_adjust_below (what is not small enough to adjust by itself).
    threshold: Decimal | None = Field(default=None, ge=0)
    # a source and day with at least this many small breaks gets a digest card; fewer get
    # cards of their own
    digest_from: int = Field(default=3, ge=1, le=1000)
    # the largest breaks a digest lists by name
    digest_top: int = Field(default=5, ge=1, le=20)
    # escalation levels, in order: an own-card break nobody acted on goes to level 1 after
    # its after_minutes, then to level 2, ...
    escalation: list[EscalationLevel] = []
    # where "a route was disabled" and other notices for admins go (besides the log)
    admin_routes: list[ChatRoute] = [ChatRoute()]
    # outbox: a message is tried this many times (5xx, timeouts) before it is given up
    max_attempts: int = Field(default=8, ge=1, le=100)
    # first wait after a failure, doubled each attempt (capped at an hour); a 429's
    # Retry-After is honoured instead
    retry_seconds: float = Field(default=30, gt=0, le=3600)
    # a message claimed for sending by a process that then vanished (killed mid-send) is
    # taken over after this long (longer than any one send may take)
    claim_timeout_seconds: float = Field(default=300, ge=0, le=86400)
    # WeCom app messages: the platform drops an identical request repeated within this many
    # seconds (enable_duplicate_check), which closes the crash window for WeCom
    wecom_duplicate_check_seconds: int = Field(default=14400, ge=0, le=14400)

    @model_validator(mode="after")
    def _levels_have_times(self):
        for i, level in enumerate(self.escalation):
            if level.after_minutes is None and i >= 2:
                raise ValueError(f"escalation level {i + 1} needs after_minutes (only levels 1 and 2 have "
                                 "defaults: 10 and 30)")
        minutes = self.minutes()
        if any(b <= a for a, b in zip(minutes, minutes[1:])):
            raise ValueError(f"escalation after_minutes must grow from level to level: {minutes}")
        return self

    def minutes(self) -> list[int]:
        defaults = (10, 30)
        return [lv.after_minutes if lv.after_minutes is not None else defaults[i]
                for i, lv in enumerate(self.escalation)]


class ServerConfig(_Strict):
    """`recon serve`: where it listens and which proxy it believes."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # X-Forwarded-For/-Proto are honoured only from these addresses (empty: never)
    forwarded_allow_ips: list[str] = []
    # inbound requests older than this are refused; replays within it are caught by id
    max_age_seconds: int = Field(default=300, ge=30, le=3600)


class SlackConfig(_Strict):
    bot_token: str
    # http: Slack posts to /slack/events (needs signing_secret and a public URL);
    # socket: reconbot connects out to Slack (Socket Mode, needs app_token; no public URL)
    mode: Literal["http", "socket"] = "http"
    signing_secret: str | None = None
    app_token: str | None = None  # app-level token (xapp-…) with connections:write
    base_url: str = "https://slack.com/api/"
    language: Literal["en", "zh"] = "en"

    @model_validator(mode="after")
    def _mode_has_its_secret(self):
        if self.mode == "http" and not self.signing_secret:
            raise ValueError('mode = "http" needs signing_secret (or use mode = "socket" with an app_token)')
        if self.mode == "socket" and not (self.app_token or "").startswith("xapp-"):
            raise ValueError('mode = "socket" needs app_token, an app-level token (xapp-…)')
        return self


class TelegramConfig(_Strict):
    bot_token: str
    # webhook: Telegram posts to /telegram/webhook (needs secret_token and a public URL);
    # polling: reconbot asks Telegram for updates (getUpdates; no public URL)
    mode: Literal["webhook", "polling"] = "webhook"
    # sent back by Telegram in X-Telegram-Bot-Api-Secret-Token (setWebhook secret_token)
    secret_token: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{16,256}$")
    # polling: how long one getUpdates call waits for an update (long polling)
    poll_timeout_seconds: int = Field(default=30, ge=0, le=50)
    base_url: str = "https://api.telegram.org/bot"
    language: Literal["en", "zh"] = "en"

    @model_validator(mode="after")
    def _mode_has_its_secret(self):
        if self.mode == "webhook" and not self.secret_token:
            raise ValueError('mode = "webhook" needs secret_token (or use mode = "polling")')
        return self


class WecomConfig(_Strict):
    corp_id: str
    agent_id: int
    secret: str
    # callback URL settings of the app (接收消息服务器配置): Token and EncodingAESKey
    token: str
    encoding_aes_key: str = Field(pattern=r"^[A-Za-z0-9]{43}$")
    base_url: str = "https://qyapi.weixin.qq.com/cgi-bin/"
    language: Literal["en", "zh"] = "zh"


class ChatConfig(_Strict):
    routes: list[ChatRoute] = [ChatRoute()]
    # an adjustment of at least this much (major units of the break's currency) needs two
    # different approvers
    two_approvers_from: Decimal = Decimal("10000")
    # Slack asks "are you sure?" before approving at least this much
    confirm_from: Decimal = Decimal("1000")
    # how long a `recon users link` code stays valid
    link_code_minutes: int = Field(default=15, ge=1, le=1440)
    # per route and alert pass: at most this many breaks get a new card of their own; the
    # rest wait in the digest for the next pass (a channel that counts messages per chat,
    # Telegram's 20 a minute per group, may lower it: `room()`)
    max_cards_per_run: int = Field(default=5, ge=1, le=50)
    server: ServerConfig = ServerConfig()
    slack: SlackConfig | None = None
    telegram: TelegramConfig | None = None
    wecom: WecomConfig | None = None

    @model_validator(mode="after")
    def _routes_have_platforms(self):
        for r in self.routes:
            self.check_route(r)
        return self

    def check_route(self, r: ChatRoute) -> None:
        if r.channel in ("slack", "telegram", "wecom") and getattr(self, r.channel) is None:
            raise ValueError(f"a route uses {r.channel} but there is no [chat.{r.channel}] section")
        if r.channel != "console" and not r.target:
            raise ValueError(f"a {r.channel} route needs a target (chat, channel, user or robot key)")


class ReportConfig(_Strict):
    """`recon report`, the charts (core/charts.py) and what `/recon today` attaches."""

    # a font file with CJK glyphs for the charts' labels; empty: the bundled Noto Sans SC
    font: str = ""
    # how many days the trend charts cover (ending on the day asked for)
    chart_days: int = Field(default=30, ge=2, le=366)
    # attach the chart image to the `/recon DAY` answer in chat
    chat_charts: bool = True


class WebConfig(_Strict):
    """The read-only page on `recon serve` (bot/web.py): `/`, `/day/YYYY-MM-DD`."""

    # the login token: open the page once as /?token=...; write it as "${RECON_WEB_TOKEN}"
    token: SecretStr = Field(min_length=16)
    # how long a login lasts (the session cookie's Max-Age)
    session_hours: int = Field(default=12, ge=1, le=24 * 90)
    # send the cookie only over HTTPS (keep true behind the TLS proxy; browsers also keep a
    # Secure cookie for http://localhost)
    cookie_secure: bool = True


class ScheduleConfig(_Strict):
    """`[schedule]`: the jobs `recon serve` (and `recon scheduler`) runs, and their defaults.

    Cron expressions (core/cron.py) run in the zone of what they work for: a pull in its
    source's `timezone`, a reconcile / hourly batch / digest in the merchant's, retrain in
    `timezone` below. "" turns a job off.
    """

    # run the scheduler inside `recon serve` (`recon scheduler` runs it on its own regardless)
    enabled: bool = True
    # zone of the jobs that belong to no merchant (retrain)
    timezone: str = "Asia/Shanghai"
    # each source that can be pulled: fetch the statement of today - expected_lag_days
    pull: str = "30 9 * * *"
    # each merchant: reconcile yesterday (merchant time), in the quiet hours
    reconcile: str = "0 2 * * *"
    # each merchant with a T+0 channel source (settlement_lag_days = 0): reconcile today so far
    hourly: str = "5 * * * *"
    # each merchant: the digest of yesterday (after the morning pulls and their deadlines)
    digest: str = "30 10 * * *"
    # the anomaly models, all merchants (only with [anomaly] enabled)
    retrain: str = "30 3 * * *"
    # how often due escalations are sent and the outbox is drained
    escalate_seconds: int = Field(default=60, ge=1, le=3600)
    drain_seconds: int = Field(default=30, ge=1, le=3600)
    # a statement not there yet: try again after retry_first_minutes, doubling up to
    # retry_max_minutes, until the source's `expected_by` deadline; then the day is
    # reconciled and gets its `late` break
    retry_first_minutes: float = Field(default=10, gt=0)
    retry_max_minutes: float = Field(default=60, gt=0)
    # a source without `expected_by` has no deadline of its own: stop trying this long
    # after the first attempt (and tell the chat, since no late break can say it)
    give_up_after_minutes: int = Field(default=360, ge=1)
    # after a pull brought new rows, reconcile that day this much later (pulls due at the
    # same time share one run)
    reconcile_after_pull_seconds: int = Field(default=60, ge=0, le=3600)
    # a job that failed (an error, not "not there yet"): retried this many times, waiting
    # job_retry_seconds, then twice that, ... (at most an hour); then the chat is told
    job_retries: int = Field(default=5, ge=0, le=20)
    job_retry_seconds: float = Field(default=60, gt=0)
    # a run missed while no scheduler was up still runs once (not once per missed run) when
    # one starts within this many minutes of the missed time; later it is logged and skipped
    misfire_grace_minutes: int = Field(default=720, ge=1)
    # jobs run at the same time at most
    workers: int = Field(default=4, ge=1, le=32)
    # a pull / reconcile / retrain process that runs longer is stopped and counts as failed
    job_timeout_minutes: int = Field(default=120, ge=1)

    @field_validator("pull", "reconcile", "hourly", "digest", "retrain")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _cron_or_off(value)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return _check_timezone(value)


class Config(_Strict):
    database: DatabaseConfig = DatabaseConfig()
    merchants: list[MerchantConfig] = []
    tolerance: ToleranceConfig = ToleranceConfig()
    matching: MatchingConfig = MatchingConfig()
    fx: FxConfig = FxConfig()
    policy: PolicyConfig = PolicyConfig()
    anomaly: AnomalyConfig = AnomalyConfig()
    chat: ChatConfig = ChatConfig()
    alerts: AlertsConfig = AlertsConfig()
    report: ReportConfig = ReportConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    web: WebConfig | None = None  # no [web] section: no page is served
    # where the file came from; relative source paths are resolved against its folder
    base_dir: Path = Path(".")
    origin: str = "<embedded defaults>"

    @model_validator(mode="after")
    def _alert_routes_have_platforms(self):
        for r in self.alerts.admin_routes + [r for lv in self.alerts.escalation for r in lv.routes]:
            self.chat.check_route(r)
        return self

    def alert_threshold(self) -> Decimal:
        return self.alerts.threshold if self.alerts.threshold is not None else self.tolerance.auto_adjust_below

    @model_validator(mode="after")
    def _unique_merchants(self):
        ids = [m.id for m in self.merchants]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise ValueError(f"merchant id used twice: {', '.join(sorted(dupes))}")
        return self

    def merchant(self, merchant_id: str | None) -> MerchantConfig:
        if merchant_id is None:
            if len(self.merchants) == 1:
                return self.merchants[0]
            known = ", ".join(m.id for m in self.merchants) or "none configured"
            raise ConfigError(f"{self.origin}: choose a merchant with --merchant ({known})")
        for m in self.merchants:
            if m.id == merchant_id:
                return m
        known = ", ".join(m.id for m in self.merchants) or "none configured"
        raise ConfigError(f"{self.origin}: unknown merchant {merchant_id!r} (known: {known})")


def _expand_env(value, path: str, origin: str):
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else k, origin) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{path}[{i}]", origin) for i, v in enumerate(value)]
    if isinstance(value, str):
        m = ENV_REF.match(value)
        if m:
            if m.group(1) not in os.environ:
                raise ConfigError(f"{origin}: {path} refers to environment variable {m.group(1)}, which is not set")
            return os.environ[m.group(1)]
    return value


def _key_path(loc: tuple, data: dict) -> str:
    """Turn pydantic's location tuple into the TOML key a person would look for."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            ident = None
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict):
                ident = node[item].get("id") or node[item].get("name")
            parts[-1] = f"{parts[-1]}[{item}]" + (f" ({ident})" if ident else "")
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts)


def from_dict(data: dict, origin: str = "<dict>", base_dir: Path = Path(".")) -> Config:
    data = _expand_env(data, "", origin)
    try:
        return Config(**data, base_dir=base_dir, origin=origin)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = _key_path(err["loc"], data)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling against config.example.toml)"
            problems.append(f"{origin}: {key}: {msg}")
        raise ConfigError("\n".join(problems)) from None


def load(path: str | os.PathLike | None = None) -> Config:
    """Load `path`, else $RECON_CONFIG, else the embedded defaults."""
    path = path or os.environ.get("RECON_CONFIG")
    if not path:
        return from_dict({}, origin="<embedded defaults>")
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return from_dict(data, origin=str(p), base_dir=p.resolve().parent)


RULE_SECTIONS = ("tolerance", "matching", "fx", "policy")
SOURCE_RULE_KEYS = ("fee_rate", "fee_tolerance", "settlement_lag_days")


def with_rules(cfg: Config, path: str | os.PathLike) -> Config:
    """`cfg` with the rules of another file laid over it (for `recon backtest --rules`).

    The rules file may hold [tolerance], [matching], [fx], [policy] and, per source name,
    [sources.<name>] with fee_rate, fee_tolerance, settlement_lag_days.
    """
    p = Path(path)
    try:
        rules = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: rules file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    unknown = set(rules) - set(RULE_SECTIONS) - {"sources"}
    if unknown:
        raise ConfigError(f"{p}: {', '.join(sorted(unknown))}: not a rules section "
                          f"(allowed: {', '.join(RULE_SECTIONS)}, sources.<name>)")
    data = cfg.model_dump(exclude={"base_dir", "origin"})
    for section in RULE_SECTIONS:
        if section in rules:
            data[section] = {**data[section], **rules[section]}
    for name, values in rules.get("sources", {}).items():
        bad = set(values) - set(SOURCE_RULE_KEYS)
        if bad:
            raise ConfigError(f"{p}: sources.{name}: {', '.join(sorted(bad))}: not a rule "
                              f"(allowed: {', '.join(SOURCE_RULE_KEYS)})")
        found = False
        for m in data["merchants"]:
            for s in m["sources"]:
                if s["name"] == name:
                    s.update(values)
                    found = True
        if not found:
            raise ConfigError(f"{p}: sources.{name}: no configured source has that name")
    return from_dict(data, origin=f"{cfg.origin} + {p}", base_dir=cfg.base_dir)
