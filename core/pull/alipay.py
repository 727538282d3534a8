"""Alipay open platform: the bill download URL (`alipay.data.dataservice.bill.downloadurl.query`).

    POST gateway.do  app_id, method, format=JSON, charset=utf-8, sign_type=RSA2, timestamp,
                     version=1.0, biz_content={"bill_type": "trade", "bill_date": "2026-11-20"}, sign
      -> {"alipay_data_dataservice_bill_downloadurl_query_response":
             {"code": "10000", "msg": "Success", "bill_download_url": "http://dwbillcenter..."},
          "sign": "..."}
    GET bill_download_url -> the bill zip

RSA2 = RSA-SHA256 (PKCS#1 v1.5) with the app's private key over the request parameters
sorted by name, `k=v` joined by `&` (sign and empty values left out). With
`alipay_public_key` configured, the answer's `sign` is verified over the exact text of the
`..._response` object. The download URL expires 30 s after issue, so it is fetched at once
and a failed download asks for a fresh URL (the query and the download retry together).

`bill_type` trade = 业务明细 (kind alipay), signcustomer = 账务明细 (kind alipay_account).
Code 40004 / isp.bill_not_exist means: not there yet.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from core.config import ConfigError
from core.pull.base import (HttpStatusError, NotAvailable, PullContext, PullError, http_retryable, send, with_retries,
                            write_atomic)

GATEWAY = "https://openapi.alipay.com/gateway.do"
METHOD = "alipay.data.dataservice.bill.downloadurl.query"
RESPONSE_KEY = METHOD.replace(".", "_") + "_response"
NOT_YET = {"isp.bill_not_exist", "isp.bill_not_ready"}
BUSY = "20000"  # 服务不可用: Alipay's own "try again"


class DownloadFailed(PullError):
    """The bill URL gave no zip (expired, say): worth asking for a fresh URL."""


def retryable(exc: BaseException) -> bool:
    return http_retryable(exc) or isinstance(exc, DownloadFailed)


def sign_content(params: dict[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign" and v not in (None, ""))


def sign(private_key, params: dict[str, str]) -> str:
    data = sign_content(params).encode("utf-8")
    return base64.b64encode(private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()


def response_text(body: str, key: str) -> str | None:
    """The exact text of `"key": {...}` in `body`: Alipay signs those bytes, not a re-dump."""
    m = re.search(r'"' + re.escape(key) + r'"\s*:\s*', body)
    if not m or m.end() >= len(body) or body[m.end()] != "{":
        return None
    depth, in_string, escaped = 0, False, False
    for i in range(m.end(), len(body)):
        c = body[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return body[m.end():i + 1]
    return None


def _load_key(ctx: PullContext, key: str, private: bool):
    """PEM text, a path to a PEM file, or the bare base64 Alipay's key tool prints."""
    text = ctx.need(key).strip()
    try:
        if "-----BEGIN" not in text and re.fullmatch(r"[A-Za-z0-9+/=\s]{100,}", text):
            der = base64.b64decode(text)
            return serialization.load_der_private_key(der, None) if private else serialization.load_der_public_key(der)
        pem = ctx.pem(key)
        return serialization.load_pem_private_key(pem, None) if private else serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise ConfigError(f"source {ctx.source.name!r}: pull.{key} is not an RSA "
                          f"{'private' if private else 'public'} key") from None


class AlipayBillPuller:
    def __init__(self, ctx: PullContext, default_bill_type: str = "trade"):
        self.ctx = ctx
        p = ctx.pull
        self.gateway = p.api_base or GATEWAY
        self.app_id = ctx.need("app_id")
        self.key = _load_key(ctx, "private_key", private=True)
        self.alipay_key = _load_key(ctx, "alipay_public_key", private=False) if p.alipay_public_key else None
        self.bill_type = p.bill_type or default_bill_type

    def pull(self, day: date) -> Path:
        with self.ctx.client() as client:
            data = with_retries(self.ctx.pull, retryable, f"{self.ctx.source.name} bill",
                                lambda: self._fetch(client, day))
        return write_atomic(self.ctx.target(day, f"{self.bill_type}.csv.zip"), data)

    def _fetch(self, client: httpx.Client, day: date) -> bytes:
        url = self._download_url(client, day)
        # at once: the URL expires 30 s after issue; it carries no credentials, so redirects
        # (to a storage host) are followed
        answer = send(self.ctx, client, httpx.Request("GET", url), "bill download", follow_redirects=True)
        if 400 <= answer.status < 500:
            raise self.ctx.fail(f"bill download: HTTP {answer.status} ({answer.text[:100]}); the URL may have "
                                "expired", DownloadFailed)
        if answer.status >= 500:
            raise self.ctx.fail(f"bill download: HTTP {answer.status}", HttpStatusError, status=answer.status)
        data = answer.body
        if data[:4] != b"PK\x03\x04":
            raise self.ctx.fail(f"bill download: not a zip ({data[:60]!r}); the URL may have expired", DownloadFailed)
        return data

    def _download_url(self, client: httpx.Client, day: date) -> str:
        params = {
            "app_id": self.app_id, "method": METHOD, "format": "JSON", "charset": "utf-8", "sign_type": "RSA2",
            "timestamp": datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M:%S"), "version": "1.0",
            "biz_content": json.dumps({"bill_type": self.bill_type, "bill_date": day.isoformat()}, separators=(",", ":")),
        }
        params["sign"] = sign(self.key, params)
        request = httpx.Request("POST", self.gateway, data=params,
                                headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"})
        answer = send(self.ctx, client, request, "bill URL query")
        if answer.status >= 400:
            raise self.ctx.fail(f"bill URL query: HTTP {answer.status}: {answer.text[:200]}", HttpStatusError,
                                status=answer.status)
        body = answer.text
        node = response_text(body, RESPONSE_KEY)
        if node is None:
            raise self.ctx.fail(f"bill URL query: unexpected answer {body[:200]!r}")
        self._verify(body, node)
        result = json.loads(node)
        code, sub = str(result.get("code", "")), str(result.get("sub_code", ""))
        if code == "10000" and result.get("bill_download_url"):
            return result["bill_download_url"]
        words = f"{code} {result.get('msg', '')} {sub} {result.get('sub_msg', '')}".strip()
        if sub in NOT_YET:
            raise self.ctx.fail(f"no {self.bill_type} bill for {day} yet: {words}", NotAvailable)
        if code == BUSY:
            raise self.ctx.fail(f"bill URL query: Alipay is busy: {words}", HttpStatusError, status=503)
        raise self.ctx.fail(f"bill URL query refused: {words}")

    def _verify(self, body: str, node: str) -> None:
        if self.alipay_key is None:
            return
        try:
            signature = json.loads(body).get("sign")
        except ValueError:
            signature = None
        if not signature:
            raise self.ctx.fail("bill URL query: the answer is not signed")
        try:
            self.alipay_key.verify(base64.b64decode(signature), node.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            raise self.ctx.fail("bill URL query: the answer's sign does not verify with alipay_public_key") from None
