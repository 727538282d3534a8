"""The `recon` console script: what has to happen before the CLI's imports."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading


class _WithoutPandas:
    """Import finder that reports pandas as absent (see `main`)."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("reconbot's CLI does not load pandas", name=name)
        return None


def main() -> None:
    # pyarrow.dataset, which the ADBC drivers import, loads pandas whenever it is installed
    # (0.4 s of CPU at the start of every command, measured), for a library reconbot never
    # calls. Only the `recon` process hides it; importing bot.cli elsewhere changes nothing.
    # (A None in sys.modules is not enough: pyarrow's shim reads it back as the module.)
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _WithoutPandas())
    # Arrow's allocator (mimalloc) hands memory a command freed back to the system after
    # 1 s, and the next piece of a statement faults it in again, zeroed by the kernel: ~0.3 s
    # of system time in a 1M ingest (perf: clear_page under mi_page_free_list_extend).
    # Kept 10 s, it is reused; a long-running `recon serve` still returns it when idle.
    # Read when libarrow loads, so set before any import that loads it.
    os.environ.setdefault("MIMALLOC_PURGE_DELAY", "10000")
    # The imports allocate a few hundred thousand long-lived objects (SQLAlchemy, pydantic,
    # Arrow): the cyclic collector would walk them again and again while they load (~50 ms
    # of every command's start) and at every full collection after. Frozen, it never does.
    gc.disable()
    from bot.cli import main as cli_main

    gc.freeze()
    gc.enable()
    try:
        cli_main()
    except SystemExit as done:
        _leave(done.code)
    _leave(0)


def _leave(code) -> None:
    """Exit without tearing the interpreter down object by object: after a million-row
    ingest or run that is 0.1 s of freeing what the operating system takes back at once.
    Only when nothing else is running (a thread still at work gets the normal exit, which
    waits for it), with the logs and the output flushed first."""
    if threading.active_count() > 1 or not (code is None or isinstance(code, int)):
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that left (`| head`), a stream closed: as Python's own exit
            pass
    os._exit(code or 0)
