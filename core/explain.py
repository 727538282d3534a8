"""One sentence per break that says what differs, with the figures a person checks.

The file:line evidence travels beside the sentence (Break.evidence), not inside it.
"""

from __future__ import annotations

from decimal import Decimal

from core.money import display

RULES = {
    "exact_txn_id": "matched on the channel transaction id",
    "exact_order_id": "matched on our order id",
    "split_payment": "one order paid in several channel payments",
    "merged_payment": "one channel payment covering several orders named in its memo",
    "fuzzy": "matched on amount, time and memo",
}


def explain(f: dict, lag_days: int) -> str:
    text = _sentence(f, lag_days)
    if f.get("muted_by"):
        text += (f" Muted while the {f['muted_by']} statement for this day is late: it may change once "
                 "that statement arrives.")
    return text


def _sentence(f: dict, lag_days: int) -> str:
    if f["type"] == "late":
        if f["rejected"]:
            return (f"The {f['source_name']} statement for {f['day']} was rejected: {f['rejected'][0]} "
                    f"It counts as not arrived (due by {f['due']}); the day's other breaks of that source are muted.")
        return (f"The {f['source_name']} statement for {f['day']} has not arrived; it was due by {f['due']}. "
                "The day's other breaks of that source are muted until it arrives.")
    cur = f["currency"]
    sign = -1 if f["kind"] == "refund" else 1  # refunds are stored negative; say "refunded ¥20.00"
    ia = display(None if f["internal_amount"] is None else sign * f["internal_amount"], cur)
    ca = display(None if f["channel_amount"] is None else sign * f["channel_amount"], cur)
    diff = display(f["difference"], cur)
    tol = display(f.get("tolerance") or 0, cur)
    order = f["order_id"] or f["txn_id"]
    t, kind, rule, note = f["type"], f["kind"], f["rule"], f.get("note")
    waiting = f" Within the T+{lag_days} settlement lag: waiting for the next statements." \
        if f["status"] == "in_transit" else ""
    how = f" ({RULES[rule]})" if rule in RULES and rule not in ("exact_txn_id", "exact_order_id") else ""
    if t == "short":
        return f"Order {order} is paid in our books ({ia}) but the channel has no payment for it (短款 {diff}).{waiting}"
    if t == "long":
        return (f"The channel collected {ca} (txn {f['txn_id']}, order {f['order_id'] or '—'}) that our books do "
                f"not show as paid (长款 {diff}).{waiting}")
    if t == "amount_mismatch" and kind == "refund":
        return f"Order {order}: refunded {ia} in our books but {ca} at the channel (错账, difference {diff})."
    if t == "amount_mismatch":
        return (f"Order {order}: {ia} in our books but {ca} at the channel{how} (错账, difference {diff}, "
                f"tolerance {tol}; the channel's coupon columns do not explain it).")
    if t == "status_mismatch" and kind == "refund":
        text = (f"Order {order}: the channel refunded {ca} but our books show no refund." if f["internal_amount"] is None
                else f"Order {order}: refunded {ia} in our books but the channel shows no refund.")
        return text + waiting
    if t == "status_mismatch" and rule == "reversed_at_channel":
        return f"Order {order} is paid in our books ({ia}) but the channel reversed (revoked) the payment."
    if t == "status_mismatch":
        return f"Order {order}: the channel collected {ca}{how} but our books say the order was not paid."
    if t == "duplicate_charge":
        return f"Order {order} was paid more than once at the channel: an extra {ca} (txn {f['txn_id']})."
    if t == "fee_mismatch":
        return (f"Txn {f['txn_id']} (order {f['order_id'] or '—'}): the channel charged a fee of {ca}, the "
                f"{note or 'rate card'} gives {ia} (difference {diff}, rounding allowance {tol}).")
    if t == "fx_difference":
        pair, rate = (note or "? none").split(" ", 1)
        ours = display(f["internal_amount"], pair.split("/")[0])
        if rate == "none":
            return f"Order {order}: {ours} in our books settled as {ca}, and no {pair} rate is configured."
        expected = display(f["channel_amount"] - f["difference"], cur)
        return (f"Order {order}: {ours} in our books; at {pair} {Decimal(rate).normalize():f} that is {expected}, "
                f"but the channel settled {ca} (FX difference {diff}, tolerance {tol}).")
    if t == "suggested_match":
        return (f"Order {order} ({ia}) has no sure match; the closest channel item is {ca} "
                f"(score {f.get('score') or 0:.2f}: {note}). A person decides: a tie or a score under "
                f"the threshold is never matched automatically.")
    if t == "duplicate_record":
        return (f"The same channel row ({f['txn_id'] or f['order_id']}, {ca}) was delivered twice; the copy was "
                f"dropped (data-quality note, no money moved).")
    return f"{t}: {order} ({ia} vs {ca})."
