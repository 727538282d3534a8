"""Slack in Socket Mode through `recon serve`: reconbot connects out (apps.connections.open with
the app-level token, then a WebSocket), Slack's envelopes come in over it and are acked by
envelope_id; the Web API calls going out are the same as in HTTP mode (local fakes of both)."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, select
from starlette.testclient import TestClient

from bot.server import create_app
from bot.transport import TransportError
from chat_fakes import FakeSlack, slack_click, slack_command
from chat_setup import SLACK_APP_TOKEN, SLACK_CHANNEL, chat_config, people, seed_break
from models.db import get_engine
from models.tables import Adjustment, AuditEvent, Break


@pytest.fixture
def slack():
    fake = FakeSlack()
    fake.socket_mode(SLACK_APP_TOKEN)
    yield fake
    fake.close()


@pytest.fixture
def client(db_url, slack):
    cfg = chat_config(db_url, slack=slack, slack_mode="socket")
    people(db_url)
    with TestClient(create_app(cfg)) as c:
        c.cfg = cfg
        slack.socket.wait_connected()
        yield c


def _break(url, bid):
    with Session(get_engine(url)) as s:
        return s.get(Break, bid)


def _count(outcome: str) -> float:
    from bot.metrics import REGISTRY

    return REGISTRY.get_sample_value("recon_inbound_requests_total", {"platform": "slack", "outcome": outcome}) or 0


def _settle(client):
    """The envelope was acked; wait for the work that follows an ack."""
    assert client.app.state.conversation.drain()


def test_connects_with_the_app_token_and_takes_no_http_requests(client, slack):
    [(_name, _payload, headers)] = [c for c in slack.calls if c[0] == "apps.connections.open"]
    assert headers["Authorization"] == f"Bearer {SLACK_APP_TOKEN}"
    assert client.post("/slack/events", content=b"payload=%7B%7D").status_code == 404  # no public endpoint needed
    assert client.get("/healthz").json()["connections"] == {"slack": "up"}


def test_a_click_is_acked_applied_once_and_edits_the_card(client, slack):
    url = client.cfg.database.url
    bid = seed_break(url, -3200)
    accepted, replayed = _count("accepted"), _count("refused_replayed")
    click = slack_click("recon.approve.0", f"{bid}:1", ts="1764000001.000100")
    eid = slack.socket.envelope("interactive", click)
    assert slack.socket.wait_acks(eid) == [{"envelope_id": eid}]
    [update] = slack.wait_for("chat.update")
    assert (update["channel"], update["ts"]) == (SLACK_CHANNEL, "1764000001.000100")
    assert not any(b["type"] == "actions" for b in update["blocks"])  # buttons removed
    assert "Approved by alice at" in json.dumps(update["blocks"])
    assert _break(url, bid).status == "adjusted"

    # Slack delivers the same envelope again (our ack was lost): acked again, not acted on again
    slack.socket.envelope("interactive", click, envelope_id=eid)
    assert len(slack.socket.wait_acks(eid, 2)) == 2
    _settle(client)
    assert len(slack.called("chat.update")) == 1 and slack.called("chat.postEphemeral") == []
    with Session(get_engine(url)) as s:
        assert len(s.exec(select(Adjustment).where(Adjustment.break_id == bid)).all()) == 1
        assert len(s.exec(select(AuditEvent).where(AuditEvent.action == "approve")).all()) == 1
    assert (_count("accepted") - accepted, _count("refused_replayed") - replayed) == (1, 1)


def test_a_second_approver_clicking_the_same_button_is_told_who_won(client, slack):
    bid = seed_break(client.cfg.database.url, -3200)
    for user in ("U0ALICE", "U0BOB"):  # two envelopes: two people clicking
        slack.socket.wait_acks(slack.socket.envelope("interactive", slack_click("recon.approve.0", f"{bid}:1",
                                                                                 user=user)))
        _settle(client)
    [note] = slack.wait_for("chat.postEphemeral")
    assert note["user"] == "U0BOB" and note["text"].startswith("Already done: Approved by alice")


def test_a_slash_command_is_answered_in_the_ack(client, slack):
    seed_break(client.cfg.database.url, -3200)
    eid = slack.socket.envelope("slash_commands", slack_command("pending"))
    [ack] = slack.socket.wait_acks(eid)
    assert ack["payload"]["response_type"] == "in_channel"
    assert ack["payload"]["blocks"][0]["text"]["text"] == "Open breaks (1)"
    eid = slack.socket.envelope("slash_commands", slack_command("approve everything", user="U0STRANGER"))
    [ack] = slack.socket.wait_acks(eid)
    assert "/recon link" in json.dumps(ack["payload"])  # not linked: told how, not silence


def test_an_event_nobody_listens_for_is_acked_and_its_retry_is_not_taken_twice(client, slack):
    replayed = _count("refused_replayed")
    event = {"type": "event_callback", "event_id": "Ev0RECON1", "event_time": 1764000000, "team_id": "T0FAKE",
             "api_app_id": "A0RECON", "event": {"type": "app_home_opened", "user": "U0ALICE", "channel": "D0ALICE"}}
    first = slack.socket.envelope("events_api", event, retry_attempt=0, retry_reason="")
    assert slack.socket.wait_acks(first) == [{"envelope_id": first}]
    # Slack retries an event in a new envelope; the event_id stays
    retry = slack.socket.envelope("events_api", event, retry_attempt=1, retry_reason="timeout")
    assert slack.socket.wait_acks(retry) == [{"envelope_id": retry}]
    assert _count("refused_replayed") - replayed == 1


def test_reconnects_when_slack_asks_and_keeps_working(client, slack):
    bid = seed_break(client.cfg.database.url, -3200)
    slack.socket.disconnect("refresh_requested")
    slack.socket.wait_connected(opened=2)
    assert len(slack.called("apps.connections.open")) == 2  # a fresh URL for the new connection
    eid = slack.socket.envelope("interactive", slack_click("recon.resolve.4", f"{bid}:1"))
    slack.socket.wait_acks(eid)
    slack.wait_for("chat.update")
    assert _break(client.cfg.database.url, bid).status == "resolved"


def test_a_wrong_app_token_stops_the_server_from_starting_with_slacks_answer(db_url, slack):
    from core.config import from_dict

    cfg = chat_config(db_url, slack=slack, slack_mode="socket")
    data = cfg.model_dump(exclude={"base_dir", "origin"}, mode="json")
    data["chat"]["slack"]["app_token"] = "xapp-1-A0RECON-1-revoked"
    with pytest.raises(TransportError, match="invalid_auth"):
        with TestClient(create_app(from_dict(data))):
            pass
    assert slack.socket.opened == 0


def test_socket_mode_needs_an_app_level_token(db_url, slack):
    from core.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=r'chat.slack: mode = "socket" needs app_token'):
        from_dict({"database": {"url": db_url}, "chat": {"slack": {"bot_token": "xoxb-x", "mode": "socket",
                                                                    "app_token": "xoxb-not-an-app-token"}}})
    with pytest.raises(ConfigError, match=r'chat.slack: mode = "http" needs signing_secret'):
        from_dict({"database": {"url": db_url}, "chat": {"slack": {"bot_token": "xoxb-x"}}})
