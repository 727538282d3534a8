"""WeChat Pay API v3: trade bill and fund-flow bill download.

    GET /v3/bill/tradebill?bill_date=2026-11-20&bill_type=ALL&tar_type=GZIP
    GET /v3/bill/fundflowbill?bill_date=2026-11-20&account_type=BASIC&tar_type=GZIP
        -> {"hash_type": "SHA1", "hash_value": "...", "download_url": "https://.../v3/billdownload/file?token=..."}
    GET <download_url>  -> the bill (gzip when tar_type=GZIP)

Every request carries `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=..,nonce_str=..,
signature=..,timestamp=..,serial_no=..`: an RSA-SHA256 (PKCS#1 v1.5) signature with the
merchant's API private key over "METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n".
JSON answers are signed by WeChat Pay the same way over "TIMESTAMP\\nNONCE\\nBODY\\n"
(headers Wechatpay-Timestamp/-Nonce/-Signature/-Serial); with `platform_certificate`
configured we verify them and refuse a stale timestamp. The bill download itself is
unsigned (WeChat says so); its integrity is the hash, taken over the *unpacked* bill.
(The APIv3 key, a symmetric key, only decrypts platform certificates and callbacks: a
bill download does not need it.)

`NO_STATEMENT_EXIST` / `STATEMENT_CREATING` mean: not there yet (WeChat makes no bill for
a day without trades, so such a day shows as late, with WeChat's own words).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from datetime import date
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from core.pull.base import (FileRejected, HttpStatusError, NotAvailable, PullContext, get_bytes, gunzip,
                            http_retryable, send, with_retries, write_atomic)

API_BASE = "https://api.mch.weixin.qq.com"
SCHEME = "WECHATPAY2-SHA256-RSA2048"
NOT_YET = {"NO_STATEMENT_EXIST", "STATEMENT_CREATING"}
MAX_CLOCK_SKEW_SECONDS = 300


def sign(private_key, message: str) -> str:
    return base64.b64encode(private_key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def authorization(mchid: str, serial_no: str, private_key, method: str, url: str, body: str = "",
                  timestamp: int | None = None, nonce: str | None = None) -> str:
    """The Authorization header for one request (`url` may be absolute; path and query count)."""
    parts = urlsplit(url)
    canonical = parts.path + (f"?{parts.query}" if parts.query else "")
    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_hex(16).upper()
    signature = sign(private_key, f"{method}\n{canonical}\n{timestamp}\n{nonce}\n{body}\n")
    return (f'{SCHEME} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{serial_no}"')


def load_verifier(pem: bytes):
    """(public key, serial as upper-case hex or None) from a platform certificate or public key PEM."""
    if b"CERTIFICATE" in pem:
        cert = x509.load_pem_x509_certificate(pem)
        return cert.public_key(), format(cert.serial_number, "X")
    return serialization.load_pem_public_key(pem), None


class _WeChatPayBill:
    """One bill endpoint; subclasses name the endpoint, its query and the file name."""

    endpoint: str

    def __init__(self, ctx: PullContext):
        self.ctx = ctx
        p = ctx.pull
        self.base = (p.api_base or API_BASE).rstrip("/")
        self.mchid, self.serial_no = ctx.need("mchid"), ctx.need("serial_no")
        try:
            self.key = serialization.load_pem_private_key(ctx.pem("private_key"), password=None)
        except ValueError:
            raise ctx.fail("pull.private_key is not a PEM private key") from None
        self.verifier = load_verifier(ctx.pem("platform_certificate")) if p.platform_certificate else None
        self.gzip = p.tar_type.upper() == "GZIP"

    def query(self, day: date) -> dict:
        raise NotImplementedError

    def file_name(self) -> str:
        raise NotImplementedError

    def pull(self, day: date) -> Path:
        params = {"bill_date": day.isoformat(), **self.query(day)}
        if self.gzip:
            params["tar_type"] = "GZIP"
        url = f"{self.base}{self.endpoint}?{urlencode(params)}"
        with self.ctx.client() as client:
            info = with_retries(self.ctx.pull, http_retryable, f"{self.ctx.source.name} bill info",
                                lambda: self._bill_info(client, url, day))
            data = with_retries(self.ctx.pull, http_retryable, f"{self.ctx.source.name} bill download",
                                lambda: self._download(client, info["download_url"]))
        bill = gunzip(self.ctx, data, "bill download") if self.gzip else data
        self._check_hash(bill, info)
        return write_atomic(self.ctx.target(day, self.file_name()), bill)

    def _request(self, url: str) -> httpx.Request:
        headers = {"Authorization": authorization(self.mchid, self.serial_no, self.key, "GET", url),
                   "Accept": "application/json", "User-Agent": "reconbot"}
        return httpx.Request("GET", url, headers=headers)

    def _bill_info(self, client: httpx.Client, url: str, day: date) -> dict:
        response = send(self.ctx, client, self._request(url), "bill info")
        body = response.text
        if response.status >= 400:
            code, message = _error(body)
            if code in NOT_YET:
                raise self.ctx.fail(f"no bill for {day} yet: {code} {message}", NotAvailable)
            raise self.ctx.fail(f"bill info: HTTP {response.status} {code} {message}", HttpStatusError,
                                status=response.status)
        self._verify(response, body)
        try:
            info = json.loads(body)
            for key in ("download_url", "hash_type", "hash_value"):
                info[key]  # noqa: B018 - presence check
        except (ValueError, KeyError, TypeError):
            raise self.ctx.fail(f"bill info: unexpected answer {body[:200]!r}") from None
        return info

    def _verify(self, response, body: str) -> None:
        if self.verifier is None:
            return
        key, serial = self.verifier
        h = response.headers
        stamp, nonce, signature, got_serial = (h.get("Wechatpay-Timestamp"), h.get("Wechatpay-Nonce"),
                                               h.get("Wechatpay-Signature"), h.get("Wechatpay-Serial"))
        if not (stamp and nonce and signature):
            raise self.ctx.fail("bill info: the answer is not signed (no Wechatpay-Signature header)")
        if serial and got_serial and got_serial.upper() != serial:
            raise self.ctx.fail(f"bill info: signed with platform certificate {got_serial}, not the configured {serial}")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > MAX_CLOCK_SKEW_SECONDS:
            raise self.ctx.fail(f"bill info: Wechatpay-Timestamp {stamp} is more than {MAX_CLOCK_SKEW_SECONDS} s off")
        try:
            key.verify(base64.b64decode(signature), f"{stamp}\n{nonce}\n{body}\n".encode(), padding.PKCS1v15(),
                       hashes.SHA256())
        except (InvalidSignature, ValueError):
            raise self.ctx.fail("bill info: the answer's signature does not verify with the platform certificate") from None

    def _download(self, client: httpx.Client, url: str) -> bytes:
        if urlsplit(url)[:2] != urlsplit(self.base)[:2]:
            raise self.ctx.fail(f"download_url {urlsplit(url).netloc} is not on {urlsplit(self.base).netloc}: "
                                "not sending a signed request there")
        return get_bytes(self.ctx, client, self._request(url), "bill download")

    def _check_hash(self, bill: bytes, info: dict) -> None:
        kind = str(info["hash_type"]).upper()
        if kind not in ("SHA1", "SHA256"):
            raise self.ctx.fail(f"bill download: unknown hash_type {kind}", FileRejected, data=bill)
        actual = hashlib.new(kind.lower(), bill).hexdigest()
        if actual != str(info["hash_value"]).lower():
            raise self.ctx.fail(f"bill download: {kind} is {actual}, WeChat Pay says {info['hash_value']}: "
                                "the file is damaged or incomplete", FileRejected, data=bill)


def _error(body: str) -> tuple[str, str]:
    try:
        data = json.loads(body)
        return str(data.get("code", "")), str(data.get("message", ""))
    except (ValueError, AttributeError):
        return "", body[:200]


class WeChatPayTradeBillPuller(_WeChatPayBill):
    endpoint = "/v3/bill/tradebill"

    def query(self, day: date) -> dict:
        return {"bill_type": self.ctx.pull.bill_type or "ALL"}

    def file_name(self) -> str:
        return f"tradebill_{self.ctx.pull.bill_type or 'ALL'}.csv"


class WeChatPayFundFlowPuller(_WeChatPayBill):
    endpoint = "/v3/bill/fundflowbill"

    def query(self, day: date) -> dict:
        return {"account_type": self.ctx.pull.account_type}

    def file_name(self) -> str:
        return f"fundflowbill_{self.ctx.pull.account_type}.csv"
