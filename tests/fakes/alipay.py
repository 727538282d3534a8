"""Fake Alipay open platform gateway and bill download host.

POST /gateway.do with `alipay.data.dataservice.bill.downloadurl.query`: the request's RSA2
sign is checked against the app's public key (40002 isv.invalid-signature otherwise), the
answer is signed with the fake Alipay key over the exact `..._response` text. Download URLs
expire `expiry_seconds` after issue (30 s, as Alipay's), then answer 404.
"""

from __future__ import annotations

import base64
import json
import secrets
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from fakes import FakeServer, Reply, Seen
from fakes.keys import rsa_key

APP_ID = "2021000000000001"
RESPONSE_KEY = "alipay_data_dataservice_bill_downloadurl_query_response"


class FakeAlipay(FakeServer):
    def __init__(self):
        super().__init__()
        self.app_key = rsa_key("alipay-app").public_key()
        self.alipay_key = rsa_key("alipay-platform")
        self.bills: dict[tuple[str, str], bytes] = {}  # (bill_type, bill_date) -> zip bytes
        self.tokens: dict[str, tuple[bytes, float]] = {}
        self.expiry_seconds = 30.0
        self.born_expired = 0  # this many next URLs have already expired when they are issued
        self.tamper_sign = False

    def add_bill(self, bill_type: str, bill_date: str, data: bytes) -> None:
        self.bills[(bill_type, bill_date)] = data

    def _answer(self, node: dict) -> Reply:
        text = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
        sign = self.alipay_key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
        if self.tamper_sign:
            sign = bytes([sign[0] ^ 1]) + sign[1:]
        body = f'{{"{RESPONSE_KEY}":{text},"sign":"{base64.b64encode(sign).decode()}"}}'
        return Reply(200, body.encode(), {"Content-Type": "text/html;charset=utf-8"})  # Alipay's content type

    def _signed_by_app(self, form: dict) -> bool:
        content = "&".join(f"{k}={v}" for k, v in sorted(form.items()) if k != "sign" and v != "")
        try:
            self.app_key.verify(base64.b64decode(form.get("sign", "")), content.encode(), padding.PKCS1v15(),
                                hashes.SHA256())
            return True
        except (InvalidSignature, ValueError):
            return False

    def handle(self, seen: Seen) -> Reply:
        if seen.path == "/gateway.do":
            form = seen.form
            if form.get("app_id") != APP_ID or form.get("sign_type") != "RSA2" or not self._signed_by_app(form):
                return self._answer({"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature",
                                     "sub_msg": "验签出错"})
            biz = json.loads(form["biz_content"])
            data = self.bills.get((biz["bill_type"], biz["bill_date"]))
            if data is None:
                return self._answer({"code": "40004", "msg": "Business Failed", "sub_code": "isp.bill_not_exist",
                                     "sub_msg": "账单不存在"})
            token = secrets.token_hex(8)
            expiry = -1.0 if self.born_expired else self.expiry_seconds
            self.born_expired = max(0, self.born_expired - 1)
            self.tokens[token] = (data, time.monotonic() + expiry)
            url = (f"{self.url}/downloadBillFile.resource?bizType={biz['bill_type']}&userId=20880211096256330156"
                   f"&fileType=csv.zip&bizDates={biz['bill_date'].replace('-', '')}&downloadFileName=x.csv.zip"
                   f"&fileId=%2Ftrade%2F{token}&timestamp={int(time.time())}&token={token}")
            return self._answer({"code": "10000", "msg": "Success", "bill_download_url": url})
        if seen.path == "/downloadBillFile.resource":
            data, expires = self.tokens.get(seen.query.get("token", ""), (b"", 0.0))
            if time.monotonic() > expires:
                return Reply(404, "链接已过期".encode(), {"Content-Type": "text/plain;charset=utf-8"})
            return Reply(200, data, {"Content-Type": "application/oct-stream"})
        return Reply(404, b"not found")
