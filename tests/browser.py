"""Headless Chromium for the page's browser test: Debian's `chromium` package, installed
here when it is missing and this is a machine where that can work (root, apt-get), so a
fresh machine runs the test too. Everything else gets a reason to skip, never a failure:
`make test` must pass where no browser can be had.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser")
# with a small CJK font, so the page's Chinese labels show as text in the screenshots too
PACKAGES = ("chromium", "fonts-wqy-microhei")
INSTALL_TIMEOUT = 600  # seconds for apt-get update + install on a slow mirror
LOCK = Path(tempfile.gettempdir()) / "reconbot-chromium-install.lock"


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _apt(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # wait for another apt/dpkg run to finish rather than fail on its lock
    return subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=120", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def ensure_chromium() -> tuple[str | None, str]:
    """-> (path to chromium, "") or (None, why it is not there)."""
    found = find_chromium()
    if found:
        return found, ""
    if os.environ.get("RECON_NO_BROWSER_INSTALL"):
        return None, "chromium is not installed and RECON_NO_BROWSER_INSTALL is set"
    if not shutil.which("apt-get"):
        return None, "chromium is not installed and there is no apt-get here to install it"
    if os.geteuid() != 0:
        return None, "chromium is not installed, and installing it needs root (sudo apt-get install chromium)"
    # several test workers may get here at once: one installs, the others wait and find it
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find_chromium()
        if found:
            return found, ""
        try:
            r = _apt("install", "-y", "-q", "--no-install-recommends", *PACKAGES, timeout=INSTALL_TIMEOUT)
            if r.returncode != 0:  # a fresh machine has no package lists yet
                _apt("update", "-q", timeout=INSTALL_TIMEOUT)
                r = _apt("install", "-y", "-q", "--no-install-recommends", *PACKAGES, timeout=INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            return None, f"apt-get install chromium did not finish within {INSTALL_TIMEOUT}s"
        found = find_chromium()
        if found:
            return found, ""
        last = (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or ["?"])[-1]
        return None, f"apt-get install chromium failed: {last}"
