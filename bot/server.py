"""`recon serve`: one ASGI app for the platforms' inbound requests, health and metrics.

    POST /slack/events        slash commands and button clicks (interactivity)
    POST /telegram/webhook    updates (setWebhook with secret_token)
    GET|POST /wecom/callback  echostr check and encrypted events
    GET  /healthz             the database answers
    GET  /metrics             Prometheus text format
    GET  /, /day/YYYY-MM-DD   the read-only page, with [web] configured (bot/web.py)
    POST /webhooks/payments/<merchant>, /webhooks/stripe/<merchant>/<source>
                              payment notifications, recorded and checked (bot/payments.py)

With `scheduler=True` (what `recon serve` does unless [schedule] enabled = false) the
scheduled jobs run in the same process (bot/scheduler.py), started with the app and
stopped before the work in flight is finished.

An endpoint exists only for a configured platform that takes HTTP: a platform in Slack
Socket Mode or Telegram polling mode connects out instead (its listener is started with the
app and stopped before the work in flight is finished). Each channel verifies its request
before reading anything from it; a refused request (forged, stale, replayed, malformed) is
answered with 4xx, logged with its reason and counted. The platform work is synchronous
(database, SDK calls) and runs in Starlette's thread pool.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot import metrics
from bot.inbound import Conversation
from bot.transport import HttpRequest, Refused, TransportError
from core.config import Config
from models.db import get_engine

log = logging.getLogger("reconbot.server")
PATHS = {"slack": "/slack/events", "telegram": "/telegram/webhook", "wecom": "/wecom/callback"}
MAX_BODY = 1 << 20  # platform callbacks are small; refuse anything larger unread


def create_app(cfg: Config, run_in_subprocess: bool = False, scheduler: bool = False) -> Starlette:
    import channels as registry  # wiring: the one place bot reaches for the platforms
    from bot.alerts import alert_merchant
    from bot.payments import PaymentWebhooks

    conversation = Conversation(cfg, run_in_subprocess)
    channels = registry.build(cfg, conversation)
    conversation.commands.channels = channels  # a run or an ended silence is followed by an alert pass
    # a notification that did not add up is alerted after the sender has its answer
    payments = PaymentWebhooks(cfg, conversation.replay,
                               lambda merchant_id: conversation.submit(alert_merchant, cfg, channels, merchant_id))

    def _answer(channel, req):
        with conversation.answering():
            return channel.handle(req)

    def endpoint(kind: str, handle=None):
        channel = channels.get(kind)

        async def receive(request: Request) -> Response:
            started = time.perf_counter()
            body = await request.body()
            client = request.client.host if request.client else ""
            if len(body) > MAX_BODY:
                metrics.INBOUND.labels(kind, "refused_too_large").inc()
                return PlainTextResponse("too large", status_code=413)
            req = HttpRequest(request.method, request.url.path, dict(request.query_params),
                              {k.lower(): v for k, v in request.headers.items()}, body, client)
            try:
                if handle is not None:
                    resp = await run_in_threadpool(handle, req, **request.path_params)
                else:
                    resp = await run_in_threadpool(_answer, channel, req)
            except Refused as exc:
                metrics.INBOUND.labels(kind, f"refused_{exc.kind}").inc()
                log.warning("refused %s request from %s: %s", kind, client, exc)
                return PlainTextResponse(exc.kind, status_code=exc.status)
            finally:
                metrics.INBOUND_SECONDS.labels(kind).observe(time.perf_counter() - started)
            metrics.INBOUND.labels(kind, "accepted").inc()
            return Response(resp.body, status_code=resp.status, media_type=resp.content_type, headers=resp.headers)

        return receive

    async def healthz(_request: Request) -> Response:
        def ping():
            with get_engine(cfg.database.url).connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await run_in_threadpool(ping)
        except Exception as exc:  # the database is what health means here
            return JSONResponse({"status": "unhealthy", "database": exc.__class__.__name__}, status_code=503)
        body = {"status": "ok", "platforms": sorted(k for k in channels if k in PATHS)}
        if listeners:  # Slack Socket Mode, Telegram polling: is our own connection up?
            body["connections"] = {k: "up" if c.connected() else "down" for k, c in listeners.items()}
        return JSONResponse(body)

    async def prometheus(_request: Request) -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    listeners = {k: c.listener for k, c in channels.items() if getattr(c, "listener", None) is not None}
    routes = [Route("/healthz", healthz), Route("/metrics", prometheus)]
    for kind, path in PATHS.items():
        if kind in channels and kind not in listeners:
            routes.append(Route(path, endpoint(kind), methods=["GET", "POST"] if kind == "wecom" else ["POST"]))
    routes += [Route("/webhooks/payments/{merchant}", endpoint("payments", payments.generic), methods=["POST"]),
               Route("/webhooks/stripe/{merchant}/{source}", endpoint("stripe", payments.stripe), methods=["POST"])]
    if cfg.web is not None:  # the read-only page (bot/web.py), behind its login token
        from bot.web import routes as web_routes

        routes += web_routes(cfg)
    jobs_scheduler = None
    if scheduler:
        from bot.scheduler import Scheduler

        jobs_scheduler = Scheduler(cfg, channels)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        started = []
        try:
            if jobs_scheduler is not None:
                await run_in_threadpool(jobs_scheduler.start)
            for kind, listener in listeners.items():  # Slack Socket Mode, Telegram polling
                try:
                    await run_in_threadpool(listener.start)
                except TransportError as exc:
                    log.error("%s: could not connect: %s", kind, exc.message)
                    raise
                started.append(listener)
                log.info("%s: connected (%s)", kind, type(listener).__name__)
            yield
        finally:
            if jobs_scheduler is not None:
                await run_in_threadpool(jobs_scheduler.shutdown)
            for listener in reversed(started):  # nothing new comes in while the work in flight finishes
                await run_in_threadpool(listener.stop)
        await run_in_threadpool(conversation.drain, 10.0)  # finish the clicks already answered

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.conversation = conversation
    app.state.channels = channels
    app.state.scheduler = jobs_scheduler
    return app


def serve(cfg: Config, host: str | None = None, port: int | None = None, scheduler: bool = False) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request URL at INFO; WeCom's access_token and Telegram's bot token
    # ride in URLs, so those lines must never be written.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from models.db import pool_sqlite_connections

    pool_sqlite_connections()  # many small transactions; no bulk I/O in this process (runs: subprocess)
    # Answers wait on the interpreter while clicks are worked: hand it over more often than
    # the default 5 ms, so a burst of clicks is answered sooner (measured with bench/clicks.py).
    sys.setswitchinterval(0.001)
    server = cfg.chat.server
    trusted = server.forwarded_allow_ips
    uvicorn.run(create_app(cfg, run_in_subprocess=True, scheduler=scheduler), host=host or server.host,
                port=server.port if port is None else port,
                proxy_headers=bool(trusted), forwarded_allow_ips=",".join(trusted) if trusted else None,
                log_level="info", access_log=False)
