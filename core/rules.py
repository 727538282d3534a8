"""Matching rules as data: tolerances, rate cards, fuzzy thresholds, FX rates.

Everything here comes from config (`[tolerance]`, `[matching]`, `[fx]`, and per source
`fee_rate` / `fee_tolerance`), never from `if` statements in the engine. `Rules.for_source`
gives the engine one source's view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import pyarrow as pa

from core.money import exponent, to_minor

# An order id in a memo: letters/digits with - or _ inside, at least 4 long. Tokens are
# compared exactly with our order ids, so a generous pattern costs nothing in precision.
DEFAULT_ID_PATTERNS = (r"[A-Za-z0-9][A-Za-z0-9_\-]{3,}",)


@dataclass(frozen=True)
class Rules:
    currency: str = "CNY"
    absolute_minor: int = 0
    percent: Decimal = Decimal("0")
    fee_rate: Decimal | None = None
    fee_tolerance_minor: int = 1
    fuzzy_window_days: Decimal = Decimal("3")
    fuzzy_min_score: Decimal = Decimal("0.8")
    fuzzy_weight_order_id: Decimal = Decimal("0.6")
    fuzzy_weight_payer: Decimal = Decimal("0.2")
    fuzzy_weight_amount: Decimal = Decimal("0.2")
    fuzzy_weight_time: Decimal = Decimal("0.1")
    id_patterns: tuple[str, ...] = DEFAULT_ID_PATTERNS
    fx_rates: dict[str, Decimal] = field(default_factory=dict)  # "USD/CNY" -> 7.10
    fx_tolerance_percent: Decimal = Decimal("0.5")

    @classmethod
    def for_source(cls, cfg, merchant, source) -> "Rules":
        t, m, fx = cfg.tolerance, cfg.matching, cfg.fx
        return cls(
            currency=merchant.currency,
            absolute_minor=to_minor(t.absolute, merchant.currency),
            percent=t.percent,
            fee_rate=source.fee_rate,
            fee_tolerance_minor=to_minor(source.fee_tolerance, merchant.currency),
            fuzzy_window_days=m.window_days,
            fuzzy_min_score=m.min_score,
            id_patterns=tuple(m.id_patterns) or DEFAULT_ID_PATTERNS,
            fx_rates=dict(fx.rates),
            fx_tolerance_percent=fx.tolerance_percent,
        )

    def tolerance_sql(self, amount: str) -> str:
        """The allowed absolute difference for `amount` (minor units), as SQL."""
        return f"greatest({int(self.absolute_minor)}, floor(abs({amount}) * {self.percent} / 100))::BIGINT"

    def fx_table(self) -> pa.Table:
        """pair, rate, and the minor-unit scale between the two currencies (all exact decimals)."""
        pairs, rates, scales = [], [], []
        for pair, rate in sorted(self.fx_rates.items()):
            src, dst = pair.split("/")
            pairs.append(pair)
            rates.append(Decimal(rate))
            scales.append(Decimal(1).scaleb(exponent(dst) - exponent(src)))
        return pa.table({"pair": pa.array(pairs, pa.string()), "rate": pa.array(rates, pa.decimal128(18, 8)),
                         "scale": pa.array(scales, pa.decimal128(18, 4))})
