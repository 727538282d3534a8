"""The read-only page on `recon serve`: nothing without a login, the token once then a
signed cookie, the day's summary, filters by plain GET parameters, the charts as PNG."""

from __future__ import annotations

import re
import time

import pytest
from itsdangerous import TimestampSigner
from starlette.testclient import TestClient

from bot.server import create_app
from chat_setup import DAY, chat_config, seed_break
from core.config import WebConfig

TOKEN = "s3cret-login-token-0123456789"


def web_config(db_url, **web):
    return chat_config(db_url).model_copy(update={"web": WebConfig(token=TOKEN, **web)})


@pytest.fixture
def seeded(db_url):
    ids = {
        "wx_short": seed_break(db_url, -3200, order_id="W-1005"),
        "wx_long": seed_break(db_url, 4250, btype="long", order_id="W-9001"),
        "ali_short": seed_break(db_url, -2850, order_id="A-2003", source="alipay"),
        "ali_transit": seed_break(db_url, -3600, order_id="A-2040", source="alipay", status="in_transit"),
        "wx_resolved": seed_break(db_url, -100, btype="amount_mismatch", order_id="W-1010", status="resolved"),
    }
    return db_url, ids


@pytest.fixture
def client(seeded):
    url, _ids = seeded
    with TestClient(create_app(web_config(url)), base_url="https://testserver") as c:
        yield c


def signed_in(client) -> None:
    r = client.get(f"/day/{DAY}", params={"token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/day/{DAY}"


def rows(html: str) -> list[tuple[str, str, str]]:
    return re.findall(r'<tr class="break" data-id="\d+" data-type="(\w+)" data-source="(\w+)" data-status="(\w+)"',
                      html)


@pytest.mark.parametrize("path", ["/", f"/day/{DAY}", "/chart/matched.png?day=2026-11-20"])
def test_without_a_login_nothing_but_401(client, path):
    for cookies in ({}, {"recon_session": "web.forged.signature"}):
        client.cookies.clear()
        client.cookies.update(cookies)
        r = client.get(path)
        assert r.status_code == 401
        assert "W-1005" not in r.text and "wechatpay" not in r.text and "Sign in required" in r.text
    r = client.get(path, params={"token": "wrong-token-wrong-token"}, follow_redirects=False)
    assert r.status_code == 401 and "set-cookie" not in r.headers


def test_the_token_once_sets_a_safe_cookie_and_leaves_the_address(client):
    r = client.get(f"/day/{DAY}", params={"token": TOKEN, "type": "short"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/day/{DAY}?type=short"  # the token is gone
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("recon_session=") and TOKEN not in cookie
    assert {"HttpOnly", "Secure", "SameSite=strict", "Path=/", "Max-Age=43200"} <= set(
        p.strip() for p in cookie.split(";"))
    assert r.headers["referrer-policy"] == "no-referrer"
    page = client.get(r.headers["location"])
    assert page.status_code == 200 and "no-store" in page.headers["cache-control"]
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no script at all
    assert "<script" not in page.text


def test_an_expired_session_is_refused(client):
    class SignedLongAgo(TimestampSigner):
        def get_timestamp(self):
            return int(time.time()) - 13 * 3600  # session_hours defaults to 12

    client.cookies.set("recon_session", SignedLongAgo(TOKEN, salt="reconbot-web-session").sign("web").decode(),
                       domain="testserver")
    assert client.get(f"/day/{DAY}").status_code == 401


def test_the_day_page_and_its_filters(client, seeded):
    signed_in(client)
    page = client.get(f"/day/{DAY}").text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "@media (max-width:640px)" in page  # the break table becomes cards on a phone
    assert f"<h1>Demo · {DAY}</h1>" in page
    assert sorted(rows(page)) == [("long", "wechatpay", "open"), ("short", "alipay", "open"),
                                  ("short", "wechatpay", "open")]  # open by default
    assert "-¥32.00" in page and "orders.csv:12" in page  # amounts, and the evidence's file:line
    assert sorted(rows(client.get(f"/day/{DAY}?type=short").text)) == [("short", "alipay", "open"),
                                                                      ("short", "wechatpay", "open")]
    assert rows(client.get(f"/day/{DAY}?type=short&source=alipay").text) == [("short", "alipay", "open")]
    assert rows(client.get(f"/day/{DAY}?status=in_transit").text) == [("short", "alipay", "in_transit")]
    assert len(rows(client.get(f"/day/{DAY}?status=all").text)) == 5
    filtered = client.get(f"/day/{DAY}?source=alipay&status=resolved").text
    assert rows(filtered) == [] and "No break matches these filters" in filtered
    assert '<option value="alipay" selected>' in filtered  # the form shows what is applied
    for name in ("matched", "breaks", "refunds", "fees"):
        # two merchants are configured: every link names the one shown
        assert f'src="/chart/{name}.png?merchant=demo-shop&amp;day={DAY}"' in page


def test_today_and_a_day_without_a_run(client):
    signed_in(client)
    today = client.get("/")
    assert today.status_code == 200 and "not been reconciled yet" in today.text
    assert f'Latest reconciled day: <a href="/day/{DAY}?merchant=demo-shop">{DAY}</a>' in today.text
    assert client.get("/day/2026-13-45").status_code == 404
    assert client.get(f"/day/{DAY}?merchant=nobody").status_code == 404


def test_charts_are_png(client):
    signed_in(client)
    r = client.get(f"/chart/breaks.png?day={DAY}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content.startswith(b"\x89PNG")
    assert client.get(f"/chart/pie.png?day={DAY}").status_code == 404
    assert client.get("/chart/fees.png?day=yesterday").status_code == 404


def test_no_web_section_no_page(db_url):
    with TestClient(create_app(chat_config(db_url))) as c:
        assert c.get("/").status_code == 404
        assert c.get("/healthz").status_code == 200
