"""A `recon` process killed with SIGKILL in the middle of alerting, then restarted: every
alert reaches the fake platform exactly once where the platform lets us make sure of it.

The kill point comes from RECON_TEST_CRASH_AT (read in one place: bot.outbox.crash_point):
- after_enqueue: the outbox rows are committed, nothing was sent yet;
- before_send: a row is claimed (`sending`), the platform was not called;
- after_send: the platform accepted the first message, our commit never happened.
The restart is `recon alerts drain`, or `recon serve` itself, killed and started again (its
scheduler drains the outbox at start-up and every drain_seconds); claim_timeout_seconds = 0
lets it take over the dead process's claim at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import Session, select

from chat_fakes import FakeSlack, FakeTelegram, FakeWecom
from chat_setup import SLACK_CHANNEL, TG_TOKEN, WECOM_USERS, platforms_toml, seed_break
from models.db import get_engine, upgrade
from models.tables import AlertCard, Outbox

RECON = str(Path(sys.executable).parent / "recon")
TG_PRIVATE = "1001"  # a private chat: one message a second, no group minute


@pytest.fixture
def fakes():
    f = {"slack": FakeSlack(), "telegram": FakeTelegram(TG_TOKEN), "wecom": FakeWecom()}
    yield f
    for x in f.values():
        x.close()


def setup(tmp_path, fakes, platforms) -> tuple[str, list[int]]:
    url = f"sqlite:///{tmp_path / 'recon.db'}"
    upgrade(url)
    breaks = [seed_break(url, -32000 - 1000 * i, order_id=f"W-{i}") for i in range(3)]
    targets = {"slack": SLACK_CHANNEL, "telegram": TG_PRIVATE, "wecom": WECOM_USERS}
    routes = "".join(f'[[chat.routes]]\nchannel = "{p}"\ntarget = "{targets[p]}"\n' for p in platforms)
    (tmp_path / "recon.toml").write_text(f"""
[database]
url = "{url}"
[[merchants]]
id = "demo-shop"
name = "Demo"
[[merchants.sources]]
name = "wechatpay"
kind = "wechatpay"
[alerts]
claim_timeout_seconds = 0
{platforms_toml(fakes['slack'], fakes['telegram'], fakes['wecom'])}
{routes}""", encoding="utf-8")
    return url, breaks


def recon(tmp_path, *args, crash: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RECON_TEST_CRASH_AT"}
    if crash:
        env["RECON_TEST_CRASH_AT"] = crash
    return subprocess.run([RECON, *args, "--config", str(tmp_path / "recon.toml")], capture_output=True, text=True,
                          env=env, timeout=120)


def delivered(fakes, platform: str) -> Counter:
    """Break id -> how many times its card reached the platform's users."""
    if platform == "slack":
        titles = [p["text"] for p in fakes["slack"].called("chat.postMessage")]
    elif platform == "telegram":
        titles = [m["text"].split("\n")[0].removeprefix("<b>") for m in fakes["telegram"].called("sendMessage")]
    else:  # what WeCom passed on to the users (a repeat its duplicate check dropped is not there)
        titles = [m["template_card"]["main_title"]["title"] for m in fakes["wecom"].delivered]
    return Counter(int(t.split()[0].lstrip("#")) for t in titles)


def states(url) -> Counter:
    with Session(get_engine(url)) as s:
        return Counter(r.state for r in s.exec(select(Outbox)).all())


@pytest.mark.parametrize("point", ["after_enqueue", "before_send"])
def test_killed_between_the_outbox_write_and_the_send_delivers_once_after_restart(tmp_path, fakes, point):
    platforms = ("slack", "telegram", "wecom")
    url, breaks = setup(tmp_path, fakes, platforms)
    killed = recon(tmp_path, "alerts", "send", crash=point)
    assert killed.returncode == -9, killed.stderr  # SIGKILL
    assert all(delivered(fakes, p) == Counter() for p in platforms)  # nothing reached any platform
    assert sum(states(url).values()) == 9  # ... but every message is in the outbox
    restart = recon(tmp_path, "alerts", "drain")
    assert restart.returncode == 0, restart.stderr
    assert "9 message(s) delivered" in restart.stdout
    for p in platforms:
        assert delivered(fakes, p) == Counter({b: 1 for b in breaks}), p
    assert states(url) == Counter(sent=9)
    with Session(get_engine(url)) as s:  # every card remembered with its message id, to be edited later
        assert all(c.message_id for c in s.exec(select(AlertCard)).all())
    again = recon(tmp_path, "alerts", "drain")
    assert "0 message(s) delivered" in again.stdout
    assert recon(tmp_path, "alerts", "send").returncode == 0  # a later pass adds nothing
    for p in platforms:
        assert delivered(fakes, p) == Counter({b: 1 for b in breaks}), p


@pytest.mark.parametrize("platform", ["slack", "wecom"])
def test_killed_after_the_platform_accepted_is_still_exactly_once_where_the_platform_can_tell(
        tmp_path, fakes, platform):
    """Slack: the restart finds the message by its metadata key and does not post again.
    WeCom: the restart sends the very same request, and WeCom's duplicate check drops it."""
    url, breaks = setup(tmp_path, fakes, (platform,))
    killed = recon(tmp_path, "alerts", "send", crash="after_send")
    assert killed.returncode == -9, killed.stderr
    first = delivered(fakes, platform)
    assert sum(first.values()) == 1  # the platform has the first card; our database does not know
    assert states(url) == Counter(sending=1, pending=2)
    restart = recon(tmp_path, "alerts", "drain")
    assert restart.returncode == 0, restart.stderr
    assert delivered(fakes, platform) == Counter({b: 1 for b in breaks})
    assert states(url) == Counter(sent=3)
    if platform == "slack":
        assert len(fakes["slack"].called("conversations.history")) == 1  # looked before posting again
        assert len(fakes["slack"].called("chat.postMessage")) == 3
        assert "already has it" in restart.stderr
    else:
        assert len(fakes["wecom"].called("message/send")) == 4  # sent twice, delivered once
    with Session(get_engine(url)) as s:
        [card] = s.exec(select(AlertCard).where(AlertCard.break_id == next(iter(first)))).all()
        assert card.message_id  # the message the platform had is the one we remember


def test_killed_after_telegram_accepted_is_at_least_once_as_documented(tmp_path, fakes):
    """Telegram has no idempotency key and a bot cannot read its chat's history: the one
    message in flight at the kill is sent again (the documented at-least-once window); every
    other card goes once."""
    url, breaks = setup(tmp_path, fakes, ("telegram",))
    killed = recon(tmp_path, "alerts", "send", crash="after_send")
    assert killed.returncode == -9, killed.stderr
    [(in_flight, times)] = delivered(fakes, "telegram").items()
    assert times == 1
    restart = recon(tmp_path, "alerts", "drain")
    assert restart.returncode == 0, restart.stderr
    assert "sending again (at least once)" in restart.stderr
    assert delivered(fakes, "telegram") == Counter({b: 2 if b == in_flight else 1 for b in breaks})
    assert states(url) == Counter(sent=3)


def serve(tmp_path, crash: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RECON_TEST_CRASH_AT"}
    if crash:
        env["RECON_TEST_CRASH_AT"] = crash
    return subprocess.Popen([RECON, "serve", "--port", "0", "--config", str(tmp_path / "recon.toml")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_recon_serve_killed_before_and_after_a_send_restarts_and_delivers_each_alert_once(tmp_path, fakes):
    """`recon serve` drains the outbox as its scheduler starts (and every drain_seconds). It is
    killed with SIGKILL while sending what `recon alerts send` queued: once between the claim
    and the send, once just after the platform accepted a message; the third start delivers
    the rest, and Slack and WeCom have every card exactly once."""
    import time

    platforms = ("slack", "wecom")
    url, breaks = setup(tmp_path, fakes, platforms)
    with open(tmp_path / "recon.toml", "a", encoding="utf-8") as f:  # only the drain (and escalate) jobs
        f.write('[schedule]\npull = ""\nreconcile = ""\ndigest = ""\nretrain = ""\n')
    assert recon(tmp_path, "alerts", "send", crash="after_enqueue").returncode == -9
    assert states(url) == Counter(pending=6)

    killed = serve(tmp_path, crash="before_send")
    assert killed.wait(timeout=120) == -9, killed.communicate()[0]
    assert all(delivered(fakes, p) == Counter() for p in platforms)
    killed = serve(tmp_path, crash="after_send")
    assert killed.wait(timeout=120) == -9, killed.communicate()[0]
    assert sum(sum(delivered(fakes, p).values()) for p in platforms) == 1  # accepted, not recorded

    proc = serve(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while states(url) != Counter(sent=6) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert states(url) == Counter(sent=6), output
    for p in platforms:
        assert delivered(fakes, p) == Counter({b: 1 for b in breaks}), p
    assert len(fakes["slack"].called("chat.postMessage")) == 3  # the one in doubt was found, not posted again
