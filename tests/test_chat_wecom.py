"""WeCom through `recon serve`: callbacks signed and AES-encrypted as WeCom does, exact API calls
out (a local fake): template cards, update_template_card with the click's ResponseCode."""

from __future__ import annotations

import time

import pytest
from sqlmodel import Session, select
from starlette.testclient import TestClient

from bot.server import create_app
from chat_setup import WECOM, WECOM_USERS, chat_config, people, seed_break
from chat_fakes import (wecom_click_xml, wecom_encrypt, wecom_post, wecom_signature, wecom_text_xml)
from models.db import get_engine
from models.tables import Break

CORP, AGENT, TOKEN, AES = WECOM["corp_id"], WECOM["agent_id"], WECOM["token"], WECOM["encoding_aes_key"]


@pytest.fixture
def client(db_url, wecom):
    cfg = chat_config(db_url, wecom=wecom)
    people(db_url)
    with TestClient(create_app(cfg)) as c:
        c.cfg = cfg
        yield c


def post(client, xml: str, **kw):
    query, body = wecom_post(TOKEN, AES, CORP, AGENT, xml, **kw)
    return deliver(client, query, body)


def deliver(client, query, body):
    """POST a callback; the answer comes first, the work after it: wait for the work."""
    r = client.post("/wecom/callback", params=query, content=body)
    assert client.app.state.conversation.drain()
    return r


def click(client, user: str, key: str, code: str = "RC-1", **kw):
    return post(client, wecom_click_xml(CORP, AGENT, user, key, "recon-break-1-abc", code), **kw)


def _status(url, bid):
    with Session(get_engine(url)) as s:
        return s.get(Break, bid).status


def test_callback_url_verification_echoes_the_decrypted_echostr(client):
    ts, nonce = str(int(time.time())), "n0nce"
    echostr = wecom_encrypt("1616140317555161061", AES, CORP)
    q = {"msg_signature": wecom_signature(TOKEN, ts, nonce, echostr), "timestamp": ts, "nonce": nonce,
         "echostr": echostr}
    r = client.get("/wecom/callback", params=q)
    assert (r.status_code, r.text) == (200, "1616140317555161061")
    assert client.get("/wecom/callback", params={**q, "msg_signature": "0" * 40}).status_code == 401


def test_a_card_is_a_button_interaction_template_card_in_chinese(db_url, wecom):
    from bot.actions import Workflow
    from channels.wecom import WecomChannel

    cfg = chat_config(db_url, wecom=wecom)
    bid = seed_break(db_url, -3200)
    ch = WecomChannel.from_config(cfg)
    ref = ch.send(WECOM_USERS, Workflow(cfg).card(bid, ch.language))
    [token] = wecom.called("gettoken")
    assert (token["corpid"], token["corpsecret"]) == (CORP, WECOM["secret"])
    [sent] = wecom.called("message/send")
    assert (sent["touser"], sent["msgtype"], sent["agentid"], sent["access_token"]) == (
        WECOM_USERS, "template_card", AGENT, "ACCESS-1")
    card = sent["template_card"]
    assert card["card_type"] == "button_interaction" and card["task_id"] == ref.message_id
    assert card["main_title"]["title"] == f"#{bid} 短款"
    assert card["horizontal_content_list"][:2] == [{"keyname": "差额", "value": "-¥32.00"},
                                                   {"keyname": "我方账面", "value": "¥32.00"}]
    assert [(b["text"], b["key"]) for b in card["button_list"]] == [
        ("批准调账", f"approve|{bid}:1"), ("指派给我", f"assign_me|{bid}:1"), ("指派给…", f"assign_to|{bid}:1"),
        ("暂缓一天", f"snooze|{bid}:1"), ("标记已解决", f"resolve|{bid}:1")]


def test_a_click_approves_and_updates_the_card_with_its_response_code(client, wecom):
    bid = seed_break(client.cfg.database.url, -3200)
    r = click(client, "alice", f"approve|{bid}:1", code="RC-approve")
    assert (r.status_code, r.text) == (200, "")
    [upd] = wecom.called("message/update_template_card")
    assert (upd["response_code"], upd["agentid"], upd["userids"]) == ("RC-approve", AGENT, ["alice"])
    assert upd["button"]["replace_name"].startswith("alice 于 ") and upd["button"]["replace_name"].endswith("批准")
    assert _status(client.cfg.database.url, bid) == "adjusted"


def test_partial_approval_and_picker_update_the_whole_card(client, wecom):
    bid = seed_break(client.cfg.database.url, -250000)  # needs two approvers
    click(client, "alice", f"approve|{bid}:1", code="RC-1")
    click(client, "rita", f"assign_to|{bid}:2", code="RC-2")
    first, picker = wecom.called("message/update_template_card")
    assert first["response_code"] == "RC-1" and first["template_card"]["task_id"] == "recon-break-1-abc"
    assert first["template_card"]["button_list"][0] == {"text": "批准调账 (1/2)", "style": 1, "key": f"approve|{bid}:2"}
    assert {"keyname": "审批", "value": "1/2 (alice)"} in first["template_card"]["horizontal_content_list"]
    assert [b["text"] for b in picker["template_card"]["button_list"]] == ["alice", "bob", "carol", "lim", "rita", "返回"]


def test_text_command_is_answered_with_a_message(client, wecom):
    assert post(client, wecom_text_xml(CORP, AGENT, "alice", "/recon pending")).status_code == 200
    [sent] = wecom.called("message/send")
    assert (sent["touser"], sent["msgtype"], sent["agentid"]) == ("alice", "markdown", AGENT)
    assert sent["markdown"]["content"] == "**待处理差异**\n没有待处理差异。"  # WeCom answers in Chinese


@pytest.mark.parametrize("case", ["forged", "stale", "replayed", "wrong_key", "not_xml"])
def test_forged_stale_replayed_and_undecryptable_callbacks_are_refused(client, wecom, case):
    url = client.cfg.database.url
    bid = seed_break(url, -3200)
    xml = wecom_click_xml(CORP, AGENT, "alice", f"resolve|{bid}:1", "t", "RC")
    query, body = wecom_post(TOKEN, AES, CORP, AGENT, xml)
    if case == "forged":
        query = {**query, "msg_signature": wecom_signature("other-token", query["timestamp"], query["nonce"], "x")}
    elif case == "stale":
        query, body = wecom_post(TOKEN, AES, CORP, AGENT, xml, timestamp=int(time.time()) - 301)
    elif case == "replayed":
        assert deliver(client, query, body).status_code == 200
    elif case == "wrong_key":  # signed with our token, but encrypted for another app
        query, body = wecom_post(TOKEN, "A" * 43, CORP, AGENT, xml)
    else:
        body = b"{}"
    r = deliver(client, query, body)
    assert r.status_code == {"forged": 401, "stale": 401, "replayed": 409, "wrong_key": 401, "not_xml": 400}[case]
    assert len(wecom.called("message/update_template_card")) == (1 if case == "replayed" else 0)
    assert (_status(url, bid) == "resolved") == (case == "replayed")


def test_an_unauthorised_user_is_told_and_the_card_is_left(client, wecom):
    bid = seed_break(client.cfg.database.url, -3200)
    click(client, "vic", f"approve|{bid}:1")
    assert wecom.called("message/update_template_card") == []
    [notice] = [c for c in wecom.called("message/send") if c["touser"] == "vic"]
    assert notice["msgtype"] == "text" and "viewer" in notice["text"]["content"]


def test_an_expired_token_is_fetched_again_and_5xx_is_retried(client, wecom):
    bid = seed_break(client.cfg.database.url, -3200)
    wecom.fail("message/update_template_card", 200, {"errcode": 42001, "errmsg": "access_token expired"})
    wecom.fail("message/update_template_card", 502, {"errcode": -1})
    click(client, "alice", f"resolve|{bid}:1", code="RC-9")
    calls = wecom.called("message/update_template_card")
    assert [c["access_token"] for c in calls] == ["ACCESS-1", "ACCESS-2", "ACCESS-2"]
    assert all(c["response_code"] == "RC-9" for c in calls)


def test_a_permanent_error_is_not_retried(client, wecom):
    bid = seed_break(client.cfg.database.url, -3200)
    wecom.fail("message/update_template_card", 200, {"errcode": 60020, "errmsg": "not allow to access from your ip"})
    click(client, "alice", f"resolve|{bid}:1")
    assert len(wecom.called("message/update_template_card")) == 1
    assert _status(client.cfg.database.url, bid) == "resolved"  # the action stands; only the edit failed


def test_group_robot_is_notify_only(db_url, wecom):
    from bot.alerts import alert_merchant
    from channels.wecom import WecomRobotChannel
    from models.tables import AlertCard

    cfg = chat_config(db_url, routes=[{"merchant": "*", "channel": "wecom_robot", "target": wecom.robot_url}])
    bid = seed_break(db_url, -3200)
    first = alert_merchant(cfg, {"wecom_robot": WecomRobotChannel()}, "demo-shop")
    assert (first.sends, first.delivered) == (1, 1)
    [sent] = wecom.called("webhook/send")
    assert sent["key"] == "ROBOT-KEY" and sent["msgtype"] == "markdown"
    assert sent["markdown"]["content"].startswith(f"**#{bid} 短款**")
    again = alert_merchant(cfg, {"wecom_robot": WecomRobotChannel()}, "demo-shop")
    assert (again.sends, again.updates, again.delivered) == (0, 0, 0)  # posted once
    assert len(wecom.called("webhook/send")) == 1
    with Session(get_engine(db_url)) as s:  # the robot's URL holds its key: only a hash is stored
        [card] = s.exec(select(AlertCard)).all()
    assert card.target.startswith("robot:") and "ROBOT-KEY" not in card.target
