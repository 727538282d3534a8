"""Tables, the database session and migrations. Depends on nothing else in reconbot.

The table classes are loaded on first use (`models.Break`, or `models.tables` directly):
creating them costs about 0.2 s, which `recon ingest` (ADBC only) does not need to pay.
"""

import importlib


def __getattr__(name: str):
    if name.startswith("_") or name in ("db", "tables", "migrations"):  # submodules: the import system's
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    try:
        return getattr(importlib.import_module("models.tables"), name)
    except AttributeError:
        raise AttributeError(f"module 'models' has no attribute {name!r}") from None
