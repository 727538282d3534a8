"""Folder drop (an SFTP-synced folder): pick up the files that are complete and new.

A file is left alone while it may still be written: names ending in .part/.tmp/... (what
sync and download tools write before renaming), hidden files (rsync's `.name.XXXXXX`),
and files changed within the source's `settle_seconds` (a file being appended to keeps a
fresh mtime; its size must also be the same before and after we read it). A complete file
whose SHA-256 is already stored, or was already rejected, is skipped without a word; the
rest go through ingest like any file.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from core.pull.base import PARTIAL_SUFFIXES


@dataclass(frozen=True)
class Candidate:
    path: Path
    sha256: str


def waiting_reason(path: Path, settle_seconds: float, now: float) -> str | None:
    """Why `path` is not picked up yet (None: it is ready)."""
    if path.name.startswith("."):
        return "hidden file"
    if path.name.lower().endswith(PARTIAL_SUFFIXES):
        return "partial download"
    age = now - path.stat().st_mtime
    if age < settle_seconds:
        return f"changed {age:.0f} s ago (settles after {settle_seconds:g} s)"
    return None


def complete_files(folder: Path, settle_seconds: float,
                   now: float | None = None) -> tuple[list[Candidate], list[tuple[Path, str]]]:
    """(ready files with their SHA-256, waiting files with the reason), in name order."""
    now = time.time() if now is None else now
    ready, waiting = [], []
    if not folder.is_dir():
        return ready, waiting
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        reason = waiting_reason(path, settle_seconds, now)
        if reason:
            waiting.append((path, reason))
            continue
        before = path.stat().st_size
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        if path.stat().st_size != before:
            waiting.append((path, "size changed while reading"))
            continue
        ready.append(Candidate(path, digest))
    return ready, waiting
