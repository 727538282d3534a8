"""`/recon today` answers with the text summary and then the trend chart as an image, through
each platform's own upload (local fakes speaking the real APIs); when the upload fails for
good, a line of text goes out instead and the summary stands."""

from __future__ import annotations

import html
import io
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from PIL import Image as PILImage
from starlette.testclient import TestClient

from bot.server import create_app
from chat_fakes import (FakeSlack, FakeTelegram, FakeWecom, slack_command_body, slack_signed, telegram_command,
                        telegram_headers, wecom_post, wecom_text_xml)
from chat_setup import SLACK_CHANNEL, SLACK_SECRET, TG_CHAT, TG_SECRET, TG_TOKEN, WECOM, chat_config, people, seed_break

PNG = b"\x89PNG\r\n\x1a\n"
# "today" is the merchant's (Asia/Shanghai): the day the fixture reconciles
DAY = datetime.now(ZoneInfo("Asia/Shanghai")).date()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG)
    return PILImage.open(io.BytesIO(data)).size


@pytest.fixture
def app_for(db_url):
    """A `recon serve` app for one platform's fake, with a reconciled day and linked people."""
    seed_break(db_url, -3200, day=DAY)
    people(db_url)
    clients = []

    def make(**platform):
        cfg = chat_config(db_url, **platform)
        client = TestClient(create_app(cfg))
        client.__enter__()
        clients.append(client)
        if "telegram" in client.app.state.channels:  # Telegram's pacing, on an injected clock
            from channels.telegram import Pacer

            client.app.state.channels["telegram"].pacer = Pacer(sleep=lambda _s: None)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def slack_today(client):
    body = slack_command_body("today", user="U0ALICE")
    r = client.post("/slack/events", content=body, headers=slack_signed(SLACK_SECRET, body))
    assert r.status_code == 200
    return r.json()


def test_slack_uploads_the_chart_with_the_external_upload_flow(app_for):
    slack = FakeSlack()
    try:
        answer = slack_today(app_for(slack=slack))
        assert answer["blocks"][0]["text"]["text"] == f"demo-shop · {DAY}"  # the text summary, at once
        [ask] = slack.wait_for("files.getUploadURLExternal")
        [sent] = slack.wait_for("upload")
        [done] = slack.wait_for("files.completeUploadExternal")
    finally:
        slack.close()
    assert ask["filename"] == f"recon-demo-shop-{DAY}.png" and int(ask["length"]) == len(sent["data"])
    assert _png_size(sent["data"]) == (1100, 720)
    assert ask["alt_txt"].startswith("demo-shop: matched %, break amounts, refund rate and fee share")
    assert done["channel_id"] == SLACK_CHANNEL
    assert [f["id"] for f in json.loads(done["files"])] == ["F0FAKE0001"]
    assert done["initial_comment"] == ask["alt_txt"]
    # other-shop, also in alice's scope, was never reconciled: no chart for it
    assert len(slack.called("files.getUploadURLExternal")) == 1


def test_telegram_sends_the_chart_with_send_photo(app_for):
    tg = FakeTelegram(TG_TOKEN)
    try:
        client = app_for(telegram=tg)
        client.post("/telegram/webhook", content=telegram_command(1, "/recon today"),
                    headers=telegram_headers(TG_SECRET))
        assert client.app.state.conversation.drain()
        [photo] = tg.wait_for("sendPhoto")
    finally:
        tg.close()
    [summary] = tg.called("sendMessage")
    assert summary["text"].startswith(f"<b>demo-shop · {DAY}</b>")
    assert photo["chat_id"] == TG_CHAT
    assert photo["photo"]["filename"] == f"recon-demo-shop-{DAY}.png"
    assert _png_size(photo["photo"]["data"]) == (1100, 720)
    assert photo["caption"].startswith("demo-shop: matched %")


def test_wecom_uploads_media_then_sends_an_image_message(app_for):
    wecom = FakeWecom()
    try:
        client = app_for(wecom=wecom)
        q, body = wecom_post(WECOM["token"], WECOM["encoding_aes_key"], WECOM["corp_id"], WECOM["agent_id"],
                             wecom_text_xml(WECOM["corp_id"], WECOM["agent_id"], "alice", "/recon 今天"))
        assert client.post("/wecom/callback", params=q, content=body).status_code == 200
        assert client.app.state.conversation.drain()
        [upload] = wecom.wait_for("media/upload")
        sends = wecom.wait_for("message/send", 2)
    finally:
        wecom.close()
    assert upload["type"] == "image" and upload["access_token"] == "ACCESS-1"
    assert upload["media"]["filename"] == f"recon-demo-shop-{DAY}.png"
    assert upload["media"]["content_type"] == "image/png" and upload["media"]["data"].startswith(PNG)
    summary, image = sends
    assert summary["msgtype"] == "markdown" and summary["markdown"]["content"].startswith(f"**demo-shop · {DAY}**")
    assert image["msgtype"] == "image" and image["touser"] == "alice"
    assert image["image"]["media_id"].startswith("3a8") and image["image"]["media_id"].endswith(".png")


@pytest.mark.parametrize("platform", ["slack", "telegram", "wecom"])
def test_a_failed_upload_falls_back_to_text(app_for, platform):
    """The platform refuses the picture for good: no retry storm, one line of text instead."""
    fake = {"slack": FakeSlack, "telegram": lambda: FakeTelegram(TG_TOKEN), "wecom": FakeWecom}[platform]()
    try:
        client = app_for(**{platform: fake})
        if platform == "slack":
            fake.fail("files.getUploadURLExternal", 200, {"ok": False, "error": "missing_scope",
                                                          "needed": "files:write", "provided": "chat:write"})
            slack_today(client)
            [text] = fake.wait_for("chat.postMessage")
            shown = json.dumps(text["blocks"], ensure_ascii=False)
            assert fake.called("upload") == [] and fake.called("files.completeUploadExternal") == []
        elif platform == "telegram":
            fake.fail("sendPhoto", 400, {"ok": False, "error_code": 400,
                                         "description": "Bad Request: PHOTO_INVALID_DIMENSIONS"})
            client.post("/telegram/webhook", content=telegram_command(2, "/recon today"),
                        headers=telegram_headers(TG_SECRET))
            summary, text = fake.wait_for("sendMessage", 2)
            assert summary["text"].startswith(f"<b>demo-shop · {DAY}</b>")
            shown = html.unescape(text["text"])
            assert len(fake.called("sendPhoto")) == 1
        else:
            fake.fail("media/upload", 200, {"errcode": 40006, "errmsg": "invalid file size"})
            q, body = wecom_post(WECOM["token"], WECOM["encoding_aes_key"], WECOM["corp_id"], WECOM["agent_id"],
                                 wecom_text_xml(WECOM["corp_id"], WECOM["agent_id"], "alice", "/recon 今天"))
            client.post("/wecom/callback", params=q, content=body)
            summary, text = fake.wait_for("message/send", 2)
            assert summary["markdown"]["content"].startswith(f"**demo-shop · {DAY}**")
            shown = text["markdown"]["content"]
            assert len(fake.called("media/upload")) == 1 and text["msgtype"] == "markdown"
    finally:
        fake.close()
    if platform == "wecom":  # WeCom answers in Chinese
        assert "图表未能发送；当日数据见上方概况。" in shown
    else:
        assert "The chart could not be attached; the summary above has the day's numbers." in shown
    from bot import metrics

    assert metrics.REGISTRY.get_sample_value("recon_chart_images_total",
                                             {"platform": platform, "outcome": "sent_as_text"}) >= 1
