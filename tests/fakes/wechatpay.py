"""Fake WeChat Pay API v3: /v3/bill/tradebill, /v3/bill/fundflowbill, /v3/billdownload/file.

It checks each request's WECHATPAY2-SHA256-RSA2048 Authorization against the merchant's
public key (401 SIGN_ERROR otherwise, as WeChat answers), signs its JSON answers with a
platform key whose certificate the test hands to the puller, and serves bills with the
SHA1 of the unpacked bill, as the real API does.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
import secrets
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from fakes import FakeServer, Reply, Seen
from fakes.keys import certificate_pem, rsa_key

MCHID = "1601959334"
MERCHANT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
PLATFORM_SERIAL = 0x3B6B1F5A6E2C1D0F
AUTH = re.compile(r'^WECHATPAY2-SHA256-RSA2048 (.+)$')


class FakeWeChatPay(FakeServer):
    def __init__(self, mchid: str = MCHID):
        super().__init__()
        self.mchid = mchid  # the merchant the requests must be signed for (config.example.toml's is another)
        self.merchant_key = rsa_key("wechat-merchant").public_key()
        self.platform_key = rsa_key("wechat-platform")
        self.platform_certificate = certificate_pem("wechat-platform", PLATFORM_SERIAL)
        self.bills: dict[tuple[str, str], bytes] = {}  # (endpoint, bill_date) -> gzip bytes as stored
        self.tokens: dict[str, tuple[bytes, bool]] = {}
        self.tamper_signature = False
        self.wrong_hash = False

    def add_bill(self, endpoint: str, bill_date: str, gz: bytes) -> None:
        self.bills[(endpoint, bill_date)] = gz

    def _authorized(self, seen: Seen) -> bool:
        m = AUTH.match(seen.headers.get("authorization", ""))
        if not m:
            return False
        fields = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if fields.get("mchid") != self.mchid or fields.get("serial_no") != MERCHANT_SERIAL:
            return False
        query = seen.raw_query
        message = (f"{seen.method}\n{seen.path}{'?' + query if query else ''}\n{fields.get('timestamp')}\n"
                   f"{fields.get('nonce_str')}\n{seen.body.decode()}\n")
        try:
            self.merchant_key.verify(base64.b64decode(fields.get("signature", "")), message.encode(),
                                     padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return abs(time.time() - int(fields.get("timestamp", "0"))) < 300

    def _signed(self, status: int, data: dict) -> Reply:
        reply = Reply.json(status, data)
        stamp, nonce = str(int(time.time())), secrets.token_hex(16)
        signature = self.platform_key.sign(f"{stamp}\n{nonce}\n{reply.body.decode()}\n".encode(), padding.PKCS1v15(),
                                           hashes.SHA256())
        if self.tamper_signature:
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        reply.headers.update({"Wechatpay-Timestamp": stamp, "Wechatpay-Nonce": nonce,
                              "Wechatpay-Signature": base64.b64encode(signature).decode(),
                              "Wechatpay-Serial": format(PLATFORM_SERIAL, "X"), "Request-ID": secrets.token_hex(8)})
        return reply

    def handle(self, seen: Seen) -> Reply:
        if not self._authorized(seen):
            return Reply.json(401, {"code": "SIGN_ERROR", "message": "签名错误"})
        if seen.path in ("/v3/bill/tradebill", "/v3/bill/fundflowbill"):
            gz = self.bills.get((seen.path, seen.query.get("bill_date", "")))
            if gz is None:
                return self._signed(400, {"code": "NO_STATEMENT_EXIST", "message": "账单文件不存在"})
            bill = gzip.decompress(gz)
            token = secrets.token_urlsafe(16)
            self.tokens[token] = (gz, seen.query.get("tar_type") == "GZIP")
            digest = hashlib.sha1(bill + (b"x" if self.wrong_hash else b"")).hexdigest()
            return self._signed(200, {"hash_type": "SHA1", "hash_value": digest,
                                      "download_url": f"{self.url}/v3/billdownload/file?token={token}"})
        if seen.path == "/v3/billdownload/file":
            found = self.tokens.get(seen.query.get("token", ""))
            if found is None:
                return Reply.json(400, {"code": "PARAM_ERROR", "message": "token无效"})
            gz, packed = found
            return Reply(200, gz if packed else gzip.decompress(gz), {"Content-Type": "application/octet-stream"})
        return Reply.json(404, {"code": "NOT_FOUND", "message": seen.path})
