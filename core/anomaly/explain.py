"""Why a transaction is unusual, in words, from its per-feature deviations.

Each feature's deviation is (value - training median) / training spread (see `model.fit`);
the features that deviate most, in the direction the feature table calls unusual, are
said with their own figures ("¥8,800.00 is 9.2× this payer's median (¥956.00 over 14
payments); 6 payments from the same payer in 10 minutes"). Overlapping features (the
three payer windows, the two amount measures) are said once.
"""

from __future__ import annotations

import numpy as np

from core.anomaly.features import BY_NAME

NOTABLE = 3.0  # deviations at or above this many spreads are worth a phrase
MAX_PHRASES = 3
# said once per group: the most deviant member speaks for it
GROUPS = {"payer_24h": "payer", "payer_1h": "payer", "payer_10m": "payer", "amount_log": "amount",
          "amount_z": "amount"}
# on a tie the shorter window says more ("6 payments in 10 minutes" rather than "in an hour")
TIE_ORDER = {"payer_10m": 0, "payer_1h": 1, "payer_24h": 2}


def deviations(row: dict, names: list[str], center: np.ndarray, spread: np.ndarray) -> list[tuple[float, str]]:
    out = []
    for i, name in enumerate(names):
        d = (float(row[name]) - float(center[i])) / float(spread[i])
        direction = BY_NAME[name].unusual
        d = abs(d) if direction == "both" else (-d if direction == "low" else d)
        out.append((round(d, 9), -TIE_ORDER.get(name, 0), name))
    return [(d, name) for d, _tie, name in sorted(out, reverse=True)]


def explain(row: dict, names: list[str], center: np.ndarray, spread: np.ndarray) -> str:
    """`row`: feature and context columns of one transaction plus `currency`."""
    phrases, groups = [], set()
    ranked = deviations(row, names, center, spread)
    for d, name in ranked:
        if len(phrases) == MAX_PHRASES or (phrases and d < NOTABLE):
            break
        group = GROUPS.get(name, name)
        if group in groups:
            continue
        if name == "amount_log" and "amount_z" in names:
            name = "amount_z"  # the relative measure says more than the absolute one
        groups.add(group)
        phrases.append(BY_NAME[name].words(row))
    return "; ".join(phrases)
