"""Where no browser can be had, the browser test skips with a reason instead of failing
(`make test` must pass on a machine without apt or root)."""

from __future__ import annotations

import browser


def test_reasons_to_skip(monkeypatch):
    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    monkeypatch.setenv("RECON_NO_BROWSER_INSTALL", "1")
    assert browser.ensure_chromium() == (None, "chromium is not installed and RECON_NO_BROWSER_INSTALL is set")
    monkeypatch.delenv("RECON_NO_BROWSER_INSTALL")
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    assert browser.ensure_chromium() == (None, "chromium is not installed and there is no apt-get here to install it")
    monkeypatch.setattr(browser.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(browser.os, "geteuid", lambda: 1000)
    path, why = browser.ensure_chromium()
    assert path is None and why.startswith("chromium is not installed, and installing it needs root")
