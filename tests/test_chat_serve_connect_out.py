"""`recon serve` as its own process with both connect-out modes (Slack Socket Mode, Telegram
polling), configured from a TOML file with the app token in the environment: both
connections come up, one click arrives over each, and SIGTERM (what systemd and Docker send)
stops the listeners inside uvicorn's shutdown, so the poller's last getUpdates confirms what
it took. The TestClient tests run the same lifespan, but not uvicorn's signal path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlmodel import Session

from chat_fakes import FakeSlack, FakeTelegram, free_port, slack_click, telegram_click
from chat_setup import SLACK_APP_TOKEN, SLACK_CHANNEL, TG_CHAT, TG_TOKEN, people, seed_break
from models.db import get_engine, upgrade
from models.tables import Break

RECON = str(Path(sys.executable).parent / "recon")


def _status(url: str, bid: int) -> str:
    with Session(get_engine(url)) as s:
        return s.get(Break, bid).status


def test_recon_serve_connects_out_to_slack_and_telegram_and_stops_cleanly_on_sigterm(tmp_path):
    slack, tg = FakeSlack(), FakeTelegram(TG_TOKEN)
    slack.socket_mode(SLACK_APP_TOKEN)
    tg.webhook_url = "https://old-host.example/telegram/webhook"  # left over from webhook mode
    url = f"sqlite:///{tmp_path / 'recon.db'}"
    upgrade(url)
    people(url)
    approve, resolve = seed_break(url, -3200), seed_break(url, -100, order_id="W-2002")
    port = free_port()
    (tmp_path / "recon.toml").write_text(f"""
[database]
url = "{url}"
[[merchants]]
id = "demo-shop"
name = "Demo"
[chat.server]
port = {port}
[chat.slack]
bot_token = "xoxb-fake"
mode = "socket"
app_token = "${{RECON_TEST_SLACK_APP_TOKEN}}"
base_url = "{slack.base_url}"
[chat.telegram]
bot_token = "{TG_TOKEN}"
mode = "polling"
poll_timeout_seconds = 30
base_url = "{tg.base_url}"
""", encoding="utf-8")
    proc = subprocess.Popen([RECON, "serve", "--config", str(tmp_path / "recon.toml")],
                            env={**os.environ, "RECON_TEST_SLACK_APP_TOKEN": SLACK_APP_TOKEN},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stopped_in = None
    try:
        base, health = f"http://127.0.0.1:{port}", {}
        deadline = time.monotonic() + 30
        while health.get("connections") != {"slack": "up", "telegram": "up"}:
            assert proc.poll() is None and time.monotonic() < deadline, f"recon serve did not connect: {health}"
            try:
                health = httpx.get(base + "/healthz", timeout=1).json()
            except httpx.HTTPError:
                time.sleep(0.1)
        # neither platform posts to us: their endpoints are not served
        assert httpx.post(base + "/slack/events", content=b"{}").status_code == 404
        assert httpx.post(base + "/telegram/webhook", content=b"{}").status_code == 404
        [(_n, _p, headers)] = [c for c in slack.calls if c[0] == "apps.connections.open"]
        assert headers["Authorization"] == f"Bearer {SLACK_APP_TOKEN}"  # "${...}" read from the environment
        assert tg.webhook_url == ""  # deleteWebhook before the first getUpdates

        eid = slack.socket.envelope("interactive", slack_click("recon.approve.0", f"{approve}:1", ts="1764000002.1"))
        assert slack.socket.wait_acks(eid) == [{"envelope_id": eid}]
        [update] = slack.wait_for("chat.update")
        assert (update["channel"], update["ts"]) == (SLACK_CHANNEL, "1764000002.1")

        tg.offer(telegram_click(70, f"resolve|{resolve}:1", message_id=777))
        [answer] = tg.wait_for("answerCallbackQuery")
        assert answer["callback_query_id"] == "cq70"
        [edit] = tg.wait_for("editMessageText")
        assert (edit["chat_id"], edit["message_id"]) == (TG_CHAT, "777")

        polls = len(tg.called("getUpdates"))
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        stopped_in = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        slack.close()
        tg.close()
    assert (_status(url, approve), _status(url, resolve)) == ("adjusted", "resolved")
    # uvicorn ran our lifespan's shutdown to its end (listeners stopped, work in flight drained)
    assert "Application shutdown complete" in err and "Traceback" not in err, err
    # the poller's stop confirmed update 70 with a last call: Telegram will not offer it again
    last = [int(p.get("offset") or 0) for p in tg.called("getUpdates")[polls:]]
    assert last and last[-1] == 71, f"getUpdates offsets after the click: {last}"
    # stopping does not wait out the long poll (30 s) or the Socket Mode client's recv() and
    # queue timeouts: measured 0.2 s from SIGTERM to exit, 2.6 s without SocketModeListener.stop
    # waking the client's threads first
    assert stopped_in < 2.0, f"recon serve took {stopped_in:.1f}s to stop"
