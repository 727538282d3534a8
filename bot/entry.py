"""The `recon` console script: what has to happen before the CLI's imports."""

from __future__ import annotations

import gc
import sys


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
    # The imports allocate a few hundred thousand long-lived objects (SQLAlchemy, pydantic,
    # Arrow): the cyclic collector would walk them again and again while they load (~50 ms
    # of every command's start) and at every full collection after. Frozen, it never does.
    gc.disable()
    from bot.cli import main as cli_main

    gc.freeze()
    gc.enable()
    cli_main()
