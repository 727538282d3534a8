"""The page end to end in headless Chromium on a phone-sized screen (Playwright drives
Debian's chromium; tests/browser.py installs it where it can): log in with the token, read
the summary and the breaks, filter with the form, take a screenshot."""

from __future__ import annotations

import threading
import time

import pytest

from browser import ensure_chromium
from chat_fakes import free_port
from chat_setup import DAY, seed_break
from conftest import fresh_database
from test_web import TOKEN, web_config

PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def chromium():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                   "(pip install -e '.[dev]')")
    path, why = ensure_chromium()
    if path is None:
        pytest.skip(f"no headless Chromium for the browser test: {why}")
    with sync_api.sync_playwright() as p:
        # root in a container has no user namespaces for Chromium's sandbox
        browser = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def served(tmp_path):
    """`recon serve`'s app on a loopback port (uvicorn in a thread), on a seeded SQLite database."""
    import uvicorn

    from bot.server import create_app

    with fresh_database("sqlite", tmp_path) as url:
        seed_break(url, -3200, order_id="W-1005")
        seed_break(url, 4250, btype="long", order_id="W-9001")
        seed_break(url, -2850, order_id="A-2003", source="alipay")
        seed_break(url, 1500, btype="long", order_id="A-9002", source="alipay")
        seed_break(url, -500, btype="amount_mismatch", order_id="A-2009", source="alipay")
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(web_config(url)), host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:  # uvicorn sets it once the socket listens
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        try:
            yield f"http://localhost:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def test_log_in_filter_and_screenshot_on_a_phone(chromium, served, tmp_path):
    context = chromium.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        assert page.goto(f"{served}/day/{DAY}").status == 401  # no login, no data
        assert page.locator("tr.break").count() == 0

        page.goto(f"{served}/day/{DAY}?merchant=demo-shop&token={TOKEN}")
        assert page.url == f"{served}/day/{DAY}?merchant=demo-shop"  # the token left the address bar
        cookie = next(c for c in context.cookies() if c["name"] == "recon_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
        assert page.locator("h1").inner_text() == f"Demo · {DAY}"
        assert page.locator("tr.break").count() == 5

        page.select_option("select[name=type]", "long")
        page.select_option("select[name=source]", "alipay")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert "type=long" in page.url and "source=alipay" in page.url
        rows = page.locator("tr.break")
        assert rows.count() == 1
        assert (rows.get_attribute("data-type"), rows.get_attribute("data-source")) == ("long", "alipay")
        assert "A-9002" in rows.inner_text() and "¥15.00" in rows.inner_text()

        # a phone screen: nothing wider than the screen, each break a card with labelled cells
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert page.evaluate("getComputedStyle(document.querySelector('table.breaks thead')).display") == "none"
        # the charts came from their route, as pictures
        page.wait_for_load_state("networkidle")
        for img in page.locator(".charts img").all():
            img.scroll_into_view_if_needed()
        page.wait_for_function("[...document.querySelectorAll('.charts img')].every(i => i.complete)")
        widths = page.evaluate("[...document.querySelectorAll('.charts img')].map(i => i.naturalWidth)")
        assert widths == [704] * 4

        shot = tmp_path / "page-phone-filtered.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
    finally:
        context.close()
