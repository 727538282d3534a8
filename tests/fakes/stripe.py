"""Fake Stripe Reporting API and files host (one server plays api.stripe.com and files.stripe.com).

Report runs answer `pending` for the first `pending_polls` retrievals, then `succeeded`
with a `file` result whose url points at /v1/files/{id}/contents, which serves the CSV.
A wrong key gets Stripe's 401 shape, with the key echoed in full (Stripe itself masks
it): the test then checks that we never repeat it.
"""

from __future__ import annotations

import re
import time

from fakes import FakeServer, Reply, Seen

KEY = "sk_test_51FakeReconbotKey0123456789abcdefSECRET"


class FakeStripe(FakeServer):
    def __init__(self, csv: bytes, data_available_end: int | None = None, pending_polls: int = 2):
        super().__init__()
        self.csv = csv
        self.data_available_end = data_available_end or int(time.time())
        self.pending_polls = pending_polls
        self.runs: dict[str, dict] = {}
        self.by_idempotency: dict[str, str] = {}

    def _run(self, run_id: str) -> dict:
        run = self.runs[run_id]
        polls = run.pop("_polls")
        if polls >= self.pending_polls:
            run.update(status="succeeded", succeeded_at=int(time.time()), result={
                "id": "file_1RfakeReport", "object": "file", "created": int(time.time()), "expires_at": None,
                "filename": f"{run_id}.csv", "links": None, "purpose": "finance_report_run", "size": len(self.csv),
                "title": None, "type": "csv", "url": f"{self.url}/v1/files/file_1RfakeReport/contents"})
        run["_polls"] = polls + 1
        return {k: v for k, v in run.items() if not k.startswith("_")}

    def handle(self, seen: Seen) -> Reply:
        auth = seen.headers.get("authorization", "")
        if auth != f"Bearer {KEY}":
            given = auth.removeprefix("Bearer ")
            return Reply.json(401, {"error": {"message": f"Invalid API Key provided: {given}",
                                              "type": "invalid_request_error"}})
        m = re.fullmatch(r"/v1/reporting/report_types/([\w.]+)", seen.path)
        if m:
            return Reply.json(200, {"id": m.group(1), "object": "reporting.report_type",
                                    "data_available_start": 1_500_000_000, "data_available_end": self.data_available_end,
                                    "default_columns": ["balance_transaction_id", "created", "currency", "gross"],
                                    "livemode": False, "name": "Itemized balance change from activity",
                                    "updated": int(time.time()), "version": 3})
        if seen.path == "/v1/reporting/report_runs" and seen.method == "POST":
            key = seen.headers.get("idempotency-key", "")
            if key in self.by_idempotency:
                return Reply.json(200, self._run(self.by_idempotency[key]))
            form = seen.form
            run_id = f"frr_{len(self.runs) + 1:04d}fake"
            self.by_idempotency[key] = run_id
            self.runs[run_id] = {
                "id": run_id, "object": "reporting.report_run", "created": int(time.time()), "error": None,
                "livemode": False, "report_type": form["report_type"], "result": None, "status": "pending",
                "succeeded_at": None, "_polls": 0,
                "parameters": {k[len("parameters["):-1]: (int(v) if v.isdigit() else v)
                               for k, v in form.items() if k.startswith("parameters[")},
            }
            run = dict(self.runs[run_id])
            return Reply.json(200, {k: v for k, v in run.items() if not k.startswith("_")})
        m = re.fullmatch(r"/v1/reporting/report_runs/(\w+)", seen.path)
        if m and m.group(1) in self.runs:
            return Reply.json(200, self._run(m.group(1)))
        if seen.path == "/v1/files/file_1RfakeReport/contents":
            return Reply(200, self.csv, {"Content-Type": "text/csv"})
        return Reply.json(404, {"error": {"message": f"Unrecognized request URL (GET: {seen.path})",
                                          "type": "invalid_request_error"}})
