"""Stripe Reporting API: one report run per business day, through the `stripe` package.

    GET  /v1/reporting/report_types/{type}   data_available_end: is the day complete yet?
    POST /v1/reporting/report_runs           report_type, parameters[interval_start|interval_end|timezone]
    GET  /v1/reporting/report_runs/{id}      poll until status = succeeded (or failed)
    GET  {result.url}                        files.stripe.com/v1/files/{file}/contents, the CSV

The day is [00:00, 24:00) in the source's time zone, and the report is asked in that zone,
so its `created` column is local time, which the Stripe source reads in that zone. Only the
itemized report types (balance_change_from_activity.itemized.*, payout_reconciliation.
itemized.*) are statements the Stripe source ingests; others download but do not ingest.

Retries: the SDK's own are off (max_network_retries=0) so that one policy (core/pull/base)
retries everything; the report-run POST carries an idempotency key, so a retried create
never starts a second run. The key travels only to the configured api/files hosts.
"""

from __future__ import annotations

import time
import uuid
from datetime import date, datetime, time as dtime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import stripe

from core.pull.base import (NotAvailable, PullContext, PullError, get_bytes, http_retryable, with_retries,
                            write_atomic)

API_BASE = "https://api.stripe.com"
FILES_BASE = "https://files.stripe.com"


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, _StripeFailure):
        return exc.retryable
    return http_retryable(exc)


class _StripeFailure(PullError):
    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class StripeReportPuller:
    def __init__(self, ctx: PullContext):
        self.ctx = ctx
        p = ctx.pull
        self.key = ctx.need("api_key")
        self.api_base = (p.api_base or API_BASE).rstrip("/")
        self.files_base = (p.files_base or FILES_BASE).rstrip("/")
        self.http = stripe.HTTPXClient(timeout=p.timeout_seconds, allow_sync_methods=True)
        self.client = stripe.StripeClient(self.key, base_addresses={"api": self.api_base, "files": self.files_base},
                                          max_network_retries=0, http_client=self.http)

    def _call(self, what: str, fn):
        """One SDK call under the retry policy, its errors phrased and redacted."""

        def attempt():
            try:
                return fn()
            except stripe.StripeError as exc:
                status = exc.http_status or 0
                again = isinstance(exc, stripe.APIConnectionError) or status >= 500 or status == 429
                message = exc.user_message or str(exc)
                raise self.ctx.fail(f"{what}: {exc.__class__.__name__} (HTTP {status or '-'}): {message}",
                                    _StripeFailure, retryable=again) from None

        return with_retries(self.ctx.pull, retryable, f"{self.ctx.source.name} {what}", attempt)

    def pull(self, day: date) -> Path:
        try:
            return self._pull(day)
        finally:
            self.http.close()

    def _pull(self, day: date) -> Path:
        p = self.ctx.pull
        tz = ZoneInfo(self.ctx.source.timezone)
        start = int(datetime.combine(day, dtime(0), tz).timestamp())
        end = int(datetime.combine(day + timedelta(days=1), dtime(0), tz).timestamp())
        report_type = self._call("report type", lambda: self.client.v1.reporting.report_types.retrieve(p.report_type))
        if report_type.data_available_end < end:
            available = datetime.fromtimestamp(report_type.data_available_end, tz)
            raise self.ctx.fail(f"Stripe has {p.report_type} data up to {available:%Y-%m-%d %H:%M %Z} only: "
                                f"{day} is not complete yet", NotAvailable)
        params = {"report_type": p.report_type,
                  "parameters": {"interval_start": start, "interval_end": end, "timezone": self.ctx.source.timezone}}
        idempotency = {"idempotency_key": f"reconbot-{uuid.uuid4()}"}
        run = self._call("report run", lambda: self.client.v1.reporting.report_runs.create(params, idempotency))
        deadline = time.monotonic() + p.poll_timeout_seconds
        while run.status == "pending":
            if time.monotonic() > deadline:
                raise self.ctx.fail(f"report run {run.id} still pending after {p.poll_timeout_seconds:g} s", NotAvailable)
            time.sleep(p.poll_seconds)
            run = self._call("report run", lambda: self.client.v1.reporting.report_runs.retrieve(run.id))
        if run.status != "succeeded" or not run.result:
            raise self.ctx.fail(f"report run {run.id} {run.status}: {run.error or 'no result file'}")
        url = run.result.url or f"{self.files_base}/v1/files/{run.result.id}/contents"
        if urlsplit(url)[:2] != urlsplit(self.files_base)[:2]:
            raise self.ctx.fail(f"report file {urlsplit(url).netloc} is not on {urlsplit(self.files_base).netloc}: "
                                "not sending the API key there")
        with self.ctx.client() as http:
            request = httpx.Request("GET", url, headers={"Authorization": f"Bearer {self.key}"})
            data = with_retries(p, retryable, f"{self.ctx.source.name} report file",
                                lambda: get_bytes(self.ctx, http, request, "report file"))
        return write_atomic(self.ctx.target(day, f"{p.report_type}.csv"), data)
