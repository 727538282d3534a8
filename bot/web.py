"""The read-only page on `recon serve`: a merchant's day at a glance, on a phone too.

    GET /                      today (merchant time zone)
    GET /day/YYYY-MM-DD        that day
        ?merchant=ID           which merchant (default: the first configured)
        ?type= &source= &status=   filter the break list (plain GET form, no JavaScript)
    GET /chart/NAME.png        the trend charts (core/charts.py), same query parameters

Server-rendered HTML (Jinja2, autoescaped), one small stylesheet inline, no script at all.
Served only when the configuration has a [web] section. Every route needs a login: open
the page once as `/?token=...` (compared in constant time); the answer sets an HttpOnly,
SameSite=Strict cookie holding a signed, time-limited session (itsdangerous, keyed by the
token: a new token ends every session) and redirects to the same address without the
token. Anything else gets 401 and no data.
"""

from __future__ import annotations

import hmac
import logging
from datetime import date, datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from itsdangerous import BadSignature, TimestampSigner
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import select
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bot.cards import TITLES
from core.charts import CHARTS, TITLES as CHART_TITLES
from core.config import Config, MerchantConfig
from core.money import display, to_minor
from models.db import get_engine
from models.tables import ReconRun

log = logging.getLogger("reconbot.web")
COOKIE = "recon_session"
STATUSES = ("open", "in_transit", "note", "adjusted", "resolved")
HEADERS = {
    # no script, nothing from elsewhere, never framed; the login token never leaks as a referrer
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_templates = Environment(loader=PackageLoader("bot", "templates"), autoescape=select_autoescape(["html"]),
                         trim_blocks=True, lstrip_blocks=True)


class Login:
    """The token check and the session cookie."""

    def __init__(self, cfg: Config) -> None:
        self.token = cfg.web.token.get_secret_value()
        self.max_age = cfg.web.session_hours * 3600
        self.secure = cfg.web.cookie_secure
        self.signer = TimestampSigner(self.token, salt="reconbot-web-session")

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.token.encode())

    def session_ok(self, cookie: str | None) -> bool:
        if not cookie:
            return False
        try:
            self.signer.unsign(cookie, max_age=self.max_age)  # constant-time, and not expired
        except BadSignature:  # includes SignatureExpired
            return False
        return True

    def signed_in(self, to: str) -> Response:
        r = RedirectResponse(to, status_code=303, headers=HEADERS)
        r.set_cookie(COOKIE, self.signer.sign("web").decode(), max_age=self.max_age, path="/",
                     secure=self.secure, httponly=True, samesite="strict")
        return r


def _refused() -> Response:
    html = _templates.get_template("login.html").render()
    return HTMLResponse(html, status_code=401, headers=HEADERS)


def _guard(login: Login, handler):
    async def guarded(request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None:
            if not login.token_ok(given):
                log.warning("web: wrong login token from %s", request.client.host if request.client else "?")
                return _refused()
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            return login.signed_in(request.url.path + (f"?{urlencode(rest)}" if rest else ""))
        if not login.session_ok(request.cookies.get(COOKIE)):
            return _refused()
        return await handler(request)

    return guarded


def _merchant(cfg: Config, request: Request) -> MerchantConfig | None:
    wanted = request.query_params.get("merchant")
    if wanted is None:
        return cfg.merchants[0] if cfg.merchants else None
    return next((m for m in cfg.merchants if m.id == wanted), None)


def _day(request: Request, merchant: MerchantConfig) -> date | None:
    raw = request.path_params.get("day")
    if raw is None:
        return datetime.now(ZoneInfo(merchant.timezone)).date()
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None


def _latest_run_day(cfg: Config, merchant_id: str, before: date) -> date | None:
    with Session(get_engine(cfg.database.url)) as s:
        return s.execute(select(ReconRun.business_day).where(
            ReconRun.merchant_id == merchant_id, ReconRun.status == "done", ReconRun.business_day <= before)
            .order_by(ReconRun.business_day.desc()).limit(1)).scalar()


def page_context(cfg: Config, merchant: MerchantConfig, day: date, filters: dict[str, str]) -> dict:
    from core.report import day_report

    rep = day_report(cfg, merchant.id, day)
    cur = rep.currency
    status = filters.get("status") or "open"
    rows = [b for b in rep.breaks
            if (status == "all" or b["status"] == status)
            and (not filters.get("type") or b["type"] == filters["type"])
            and (not filters.get("source") or b["source"] == filters["source"])]
    base = {"merchant": merchant.id} if len(cfg.merchants) > 1 else {}
    keep = {**base, **{k: v for k, v in filters.items() if v}}
    return {
        "rep": rep, "cur": cur, "money": lambda v: display(v, cur), "titles": TITLES,
        "amount": lambda v: display(None if v is None else to_minor(v, cur), cur),  # break dicts: major units
        "chart_days": cfg.report.chart_days,
        "sources": rep.sources, "totals": rep.totals, "rows": rows, "all_breaks": len(rep.breaks),
        "filters": {"type": filters.get("type", ""), "source": filters.get("source", ""), "status": status},
        "types": sorted({b["type"] for b in rep.breaks}), "source_names": [s.source for s in rep.sources],
        "statuses": STATUSES + ("all",),
        "merchants": cfg.merchants, "merchant": merchant, "base_query": urlencode(base),
        "prev": f"/day/{day - timedelta(days=1)}", "next": f"/day/{day + timedelta(days=1)}",
        "latest": None if rep.run_id else _latest_run_day(cfg, merchant.id, day),
        "charts": [(name, CHART_TITLES[name], f"/chart/{name}.png?{urlencode({**base, 'day': day.isoformat()})}")
                   for name in CHARTS],
        "query": urlencode(keep),
    }


def routes(cfg: Config) -> list[Route]:
    """The page's routes; none without a [web] section."""
    if cfg.web is None:
        return []
    login = Login(cfg)

    async def day_page(request: Request) -> Response:
        merchant = _merchant(cfg, request)
        day = _day(request, merchant) if merchant else None
        if merchant is None or day is None:
            return HTMLResponse("not found", status_code=404, headers=HEADERS)
        filters = {k: request.query_params.get(k, "") for k in ("type", "source", "status")}
        ctx = await run_in_threadpool(page_context, cfg, merchant, day, filters)
        return HTMLResponse(_templates.get_template("day.html").render(**ctx), headers=HEADERS)

    async def chart(request: Request) -> Response:
        from core.charts import render
        from core.report import trend

        merchant = _merchant(cfg, request)
        name = request.path_params["name"]
        try:
            day = date.fromisoformat(request.query_params.get("day", ""))
        except ValueError:
            day = None
        if merchant is None or name not in CHARTS or day is None:
            return Response("not found", status_code=404, media_type="text/plain", headers=HEADERS)
        png = await run_in_threadpool(lambda: render(trend(cfg, merchant.id, day), name, cfg))
        return Response(png, media_type="image/png", headers={**HEADERS, "Cache-Control": "private, max-age=300"})

    return [Route("/", _guard(login, day_page)), Route("/day/{day}", _guard(login, day_page)),
            Route("/chart/{name}.png", _guard(login, chart))]
