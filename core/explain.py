"""One sentence per break that says what differs, with the figures a person checks.

The file:line evidence travels beside the sentence (Break.evidence), not inside it.
"""

from __future__ import annotations

from core.money import display


def explain(f: dict, lag_days: int) -> str:
    cur = f["currency"]
    sign = -1 if f["kind"] == "refund" else 1  # refunds are stored negative; say "refunded ¥20.00"
    ia = display(None if f["internal_amount"] is None else sign * f["internal_amount"], cur)
    ca = display(None if f["channel_amount"] is None else sign * f["channel_amount"], cur)
    diff = display(f["difference"], cur)
    order = f["order_id"] or f["txn_id"]
    t, kind = f["type"], f["kind"]
    if t == "short":
        text = (f"Order {order} is paid in our books ({ia}) but the channel has no payment for it"
                f" (short payment 短款 {diff}).")
        if f["status"] == "in_transit":
            text += f" Within the T+{lag_days} settlement lag: waiting for the next statements."
    elif t == "long":
        text = (f"The channel collected {ca} (txn {f['txn_id']}, order {f['order_id'] or '—'})"
                f" that our books do not show as paid (long payment 长款 {diff}).")
        if f["status"] == "in_transit":
            text += f" Within the T+{lag_days} lag: our books may still record it."
    elif t == "amount_mismatch" and kind == "refund":
        text = f"Order {order}: refunded {ia} in our books but {ca} at the channel (错账, difference {diff})."
    elif t == "amount_mismatch":
        text = (f"Order {order}: {ia} in our books but {ca} at the channel (amount mismatch 错账, "
                f"difference {diff}, tolerance {display(f['tolerance'], cur)}).")
    elif t == "status_mismatch" and kind == "refund":
        if f["internal_amount"] is None:
            text = f"Order {order}: the channel refunded {ca} but our books show no refund."
        else:
            text = f"Order {order}: refunded {ia} in our books but the channel shows no refund."
        if f["status"] == "in_transit":
            text += f" Within the T+{lag_days} lag."
    elif t == "status_mismatch":
        text = f"Order {order}: the channel collected {ca} but our books say the order was not paid."
    elif t == "duplicate_charge":
        text = f"Order {order} was paid more than once at the channel: an extra {ca} (txn {f['txn_id']})."
    else:
        text = f"{t}: {order} ({ia} vs {ca})."
    return text
