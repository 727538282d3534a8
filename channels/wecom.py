"""WeCom (企业微信): template cards with buttons from an app, and a group robot (notify only).

Outbound (a small client of ours over httpx: wechatpy has no template_card helpers):
`gettoken` (cached, refreshed when WeCom says it expired), `message/send` with a
`template_card` of type `button_interaction` (task_id, main title, key-value lines, up to
6 buttons whose keys carry the opaque "action|break id:version"), and after a click
`message/update_template_card` with the event's single-use ResponseCode. A chart goes up
with `media/upload` (multipart) and out as an `image` message.

Inbound, the app's callback URL (`/wecom/callback`): GET echostr verification and POST
events, both signed with msg_signature = SHA1(sort(token, timestamp, nonce, encrypted))
and AES-encrypted (wechatpy's WeChatCrypto decrypts). Added to what wechatpy checks: a
timestamp window, constant-time comparison, and replay protection. The only thing read
from a POST body before its signature is checked is the envelope's <Encrypt> element, the
very text the signature covers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import uuid
import xml.etree.ElementTree as ET

import httpx
from wechatpy.enterprise.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException

from bot.cards import Card
from bot.delivery import deliver, deliver_reply
from bot.inbound import Conversation, fresh
from bot.transport import HttpRequest, HttpResponse, MessageRef, Refused, TransportError

log = logging.getLogger("reconbot.wecom")

# WeCom errcode -> (permanent, meaning). Codes not listed are treated as transient.
ERRORS = {
    -1: (False, "system busy"),
    40001: (True, "invalid secret"),
    40004: (True, "invalid media type"),
    40005: (True, "invalid media file type"),
    40006: (True, "invalid media file size"),
    40007: (True, "invalid media_id"),
    40013: (True, "invalid corpid"),
    40014: (False, "invalid access_token"),
    41001: (False, "access_token missing"),
    42001: (False, "access_token expired"),
    40056: (True, "invalid agentid"),
    45009: (False, "API frequency limit reached"),
    45033: (False, "too many concurrent calls"),
    44001: (True, "empty media file"),
    48002: (True, "API forbidden for this app"),
    60011: (True, "no privilege for this user or department"),
    60020: (True, "calling IP not in the app's trusted IPs"),
    81013: (True, "touser, toparty and totag are all invalid"),
    93000: (True, "invalid robot webhook"),
}
TOKEN_ERRORS = {40014, 41001, 42001}  # fetch a new access token and try once more
RATE_LIMIT_WAIT = {45009: 60.0, 45033: 1.0}  # WeCom sends no Retry-After; its limits are per minute
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
MAX_BUTTONS = 6
MAX_LINES = 6  # horizontal_content_list
# Fields of a break card shown as key-value lines (in this order); the rest go in the subtitle.
LINE_PRIORITY = ("差额", "Difference", "审批", "Approvals", "处理人", "Assigned to", "我方账面", "Our books",
                 "渠道金额", "Channel", "订单号", "Order", "状态", "Status")


def _check(resp: httpx.Response) -> dict:
    if resp.status_code in TRANSIENT_STATUS:
        ra = resp.headers.get("retry-after")
        raise TransportError(f"WeCom HTTP {resp.status_code}", retry_after=float(ra) if ra else None)
    if resp.status_code >= 400:
        raise TransportError(f"WeCom HTTP {resp.status_code}", permanent=True)
    try:
        data = resp.json()
    except ValueError:
        raise TransportError("WeCom answered with something that is not JSON") from None
    code = int(data.get("errcode", 0))
    if code:
        permanent, meaning = ERRORS.get(code, (False, data.get("errmsg", "unknown error")))
        err = TransportError(f"WeCom errcode {code}: {meaning}", permanent=permanent,
                             retry_after=RATE_LIMIT_WAIT.get(code))
        err.errcode = code
        raise err
    return data


def template_card(card: Card, task_id: str, lang: str = "zh") -> dict:
    fields = dict(card.fields)
    lines = [{"keyname": k[:10], "value": v[:30]} for k in LINE_PRIORITY if k in fields
             for v in [fields[k]]][:MAX_LINES]
    shown = {x["keyname"] for x in lines}
    rest = " · ".join(v for k, v in card.fields if k[:10] not in shown and v != "—")
    out = {
        "card_type": "button_interaction",
        "source": {"desc": "reconbot 对账" if lang == "zh" else "reconbot"},
        "main_title": {"title": card.title[:36], "desc": rest[:44]},
        "sub_title_text": (card.note + "\n" if card.note else "") + card.text[:160],
        "horizontal_content_list": lines,
        "task_id": task_id,
        "button_list": [{"text": b.label[:20], "style": 1 if b.style == "primary" else 2,
                         "key": f"{b.action}|{b.value}"} for b in card.buttons[:MAX_BUTTONS]],
    }
    return out


def markdown(card: Card) -> str:
    parts = [f"**{card.title}**"] + [f"> {k}: {v}" for k, v in card.fields]
    if card.text:
        parts.append(card.text)
    if card.note:
        parts.append(f"**{card.note}**")
    return "\n".join(parts)[:4000]


class WecomClient:
    """gettoken + JSON POSTs against the WeCom server API (`base_url` ends with /cgi-bin/)."""

    def __init__(self, corp_id: str, secret: str, base_url: str) -> None:
        self.corp_id, self.secret = corp_id, secret
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.http = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=32))
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._token[1] <= time.monotonic():
                data = _check(self.http.get(self.base_url + "gettoken",
                                            params={"corpid": self.corp_id, "corpsecret": self.secret}))
                # refresh five minutes before WeCom's own expiry (7200 s)
                self._token = (data["access_token"], time.monotonic() + int(data.get("expires_in", 7200)) - 300)
            return self._token[0]

    def post(self, path: str, payload: dict) -> dict:
        return self._with_token(lambda token: self.http.post(self.base_url + path, params={"access_token": token},
                                                             json=payload))

    def upload(self, media_type: str, filename: str, data: bytes, content_type: str) -> str:
        """media/upload (multipart, field "media"): a temporary media id, valid three days."""
        answer = self._with_token(lambda token: self.http.post(
            self.base_url + "media/upload", params={"access_token": token, "type": media_type},
            files={"media": (filename, data, content_type)}))
        return answer["media_id"]

    def _with_token(self, call) -> dict:
        for attempt in (1, 2):
            try:
                return _check(call(self.token()))
            except TransportError as exc:
                if getattr(exc, "errcode", None) in TOKEN_ERRORS and attempt == 1:
                    with self._lock:
                        self._token = None
                    continue
                raise
            except httpx.HTTPError as exc:  # connection refused, timeout: worth another try later
                raise TransportError(f"WeCom unreachable: {exc.__class__.__name__}") from None
        raise AssertionError("unreachable")


class WecomChannel:
    kind = "wecom"
    edits_without_event = False  # a card is edited only with the ResponseCode of a click on it

    def __init__(self, corp_id: str, agent_id: int, secret: str, token: str, encoding_aes_key: str,
                 base_url: str = "https://qyapi.weixin.qq.com/cgi-bin/", language: str = "zh",
                 conversation: Conversation | None = None, max_age: int = 300,
                 duplicate_check_seconds: int = 14400) -> None:
        self.agent_id = agent_id
        self.duplicate_check_seconds = duplicate_check_seconds
        self.token = token
        self.language = language
        self.conversation = conversation
        self.max_age = max_age
        self.client = WecomClient(corp_id, secret, base_url)
        self.crypto = WeChatCrypto(token, encoding_aes_key, corp_id)

    @classmethod
    def from_config(cls, cfg, conversation=None) -> "WecomChannel":
        c = cfg.chat.wecom
        return cls(c.corp_id, c.agent_id, c.secret, c.token, c.encoding_aes_key, c.base_url, c.language,
                   conversation, cfg.chat.server.max_age_seconds, cfg.alerts.wecom_duplicate_check_seconds)

    # -- outbound ----------------------------------------------------------------------
    def send(self, target: str, card: Card, idempotency_key: str | None = None) -> MessageRef:
        """`target`: WeCom userids joined by "|" (or "@all"). With an idempotency key the
        request asks WeCom to drop an identical one within `duplicate_check_interval`
        (enable_duplicate_check), and the template card's task_id is derived from the key, so
        a send repeated after a crash is the same request and is not delivered twice."""
        dup = {}
        if idempotency_key and self.duplicate_check_seconds:
            dup = {"enable_duplicate_check": 1, "duplicate_check_interval": self.duplicate_check_seconds}
        if card.image is not None:  # an image message needs the picture uploaded first
            media_id = self.client.upload("image", card.image.filename, card.image.png, "image/png")
            data = self.client.post("message/send", {"touser": target, "msgtype": "image", "agentid": self.agent_id,
                                                     "image": {"media_id": media_id}})
            return MessageRef(self.kind, target, data.get("msgid", ""))
        if card.buttons:
            unique = (hashlib.sha256(idempotency_key.encode()).hexdigest()[:16] if idempotency_key
                      else uuid.uuid4().hex[:12])
            task_id = f"recon-{card.key.replace(':', '-')}-{unique}"[:128]
            self.client.post("message/send", {"touser": target, "msgtype": "template_card", "agentid": self.agent_id,
                                              "template_card": template_card(card, task_id, self.language), **dup})
            return MessageRef(self.kind, target, task_id)
        data = self.client.post("message/send", {"touser": target, "msgtype": "markdown", "agentid": self.agent_id,
                                                 "markdown": {"content": markdown(card)}, **dup})
        return MessageRef(self.kind, target, data.get("msgid", ""))

    def update(self, ref: MessageRef, card: Card) -> None:
        raise TransportError("WeCom edits a card only with the ResponseCode of a click on it", permanent=True)

    def update_after_click(self, user: str, task_id: str, response_code: str, card: Card) -> None:
        payload = {"userids": [user], "agentid": self.agent_id, "response_code": response_code}
        if card.buttons:
            payload["template_card"] = template_card(card, task_id, self.language)
        else:  # final state: the buttons turn grey and say what happened
            payload["button"] = {"replace_name": (card.note or card.title)[:40]}
        self.client.post("message/update_template_card", payload)

    def tell(self, user: str, text: str) -> None:
        self.client.post("message/send", {"touser": user, "msgtype": "text", "agentid": self.agent_id,
                                          "text": {"content": text}})

    # -- inbound -----------------------------------------------------------------------
    def _signature_ok(self, signature: str, timestamp: str, nonce: str, data: str) -> bool:
        expected = hashlib.sha1("".join(sorted([self.token, timestamp, nonce, data])).encode()).hexdigest()
        return hmac.compare_digest(expected, signature)

    def handle(self, request: HttpRequest) -> HttpResponse:
        q = request.query
        signature, timestamp, nonce = q.get("msg_signature", ""), q.get("timestamp"), q.get("nonce", "")
        fresh(timestamp, self.max_age)
        if request.method == "GET":  # the callback URL check when the app is configured
            echostr = q.get("echostr", "")
            if not self._signature_ok(signature, timestamp, nonce, echostr):
                raise Refused("forged", "WeCom msg_signature does not match (echostr)")
            try:
                return HttpResponse(200, self.crypto.check_signature(signature, timestamp, nonce, echostr))
            except InvalidSignatureException:
                raise Refused("forged", "WeCom echostr does not decrypt") from None
        encrypted = _encrypt_element(request.body)
        if not self._signature_ok(signature, timestamp, nonce, encrypted):
            raise Refused("forged", "WeCom msg_signature does not match")
        self.conversation.replay.first_time(self.kind, f"{timestamp}:{nonce}:{signature}")
        try:
            plain = self.crypto.decrypt_message(request.body.decode(), signature, timestamp, nonce)
            msg = {el.tag: (el.text or "") for el in ET.fromstring(plain)}
        except Exception as exc:  # AES padding, corp id mismatch, broken XML: not from our app
            raise Refused("forged", f"WeCom message does not decrypt: {exc.__class__.__name__}") from None
        if msg.get("MsgType") == "event" and msg.get("Event") == "template_card_event":
            self.conversation.submit(self._on_click, msg, request.body)
        elif msg.get("MsgType") == "text" and msg.get("Content", "").strip().lower().lstrip("/").startswith("recon"):
            self.conversation.submit(self._on_command, msg)
        return HttpResponse(200, "")

    def _on_command(self, msg: dict) -> None:
        user = msg.get("FromUserName", "")
        reply = self.conversation.command(self.kind, user, msg["Content"], chat=user, lang=self.language)
        for card in reply.cards:
            deliver(self.kind, "reply", lambda: self.send(user, card))
        self.conversation.later(reply, lambda card: deliver_reply(self.kind, lambda c: self.send(user, c), card))

    def _on_click(self, msg: dict, body: bytes) -> None:
        user = msg.get("FromUserName", "")
        action, _, value = msg.get("EventKey", "").partition("|")
        outcome = self.conversation.click(self.kind, user, action, value, body, self.language)
        try:
            if outcome.card is not None and msg.get("ResponseCode"):
                deliver(self.kind, "update_template_card", lambda: self.update_after_click(
                    user, msg.get("TaskId", ""), msg["ResponseCode"], outcome.card))
            if outcome.message and outcome.status not in ("applied", "picker", "shown"):
                deliver(self.kind, "notice", lambda: self.tell(user, outcome.message))
        except TransportError as exc:
            log.error("WeCom answer to a click failed: %s", exc.message)


def _encrypt_element(body: bytes) -> str:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise Refused("malformed", "WeCom body is not XML") from None
    node = root.find("Encrypt")
    if node is None or not node.text:
        raise Refused("malformed", "WeCom body has no <Encrypt>")
    return node.text


class WecomRobotChannel:
    """A group robot webhook: markdown notices, no buttons, nothing inbound.

    The route's target is the robot's whole webhook URL (it holds the key: write it as
    "${WECOM_ROBOT_URL}"); only a hash of it is stored.
    """

    kind = "wecom_robot"
    language = "zh"
    edits_without_event = False

    def __init__(self, language: str = "zh") -> None:
        self.language = language
        self.http = httpx.Client(timeout=10)

    @classmethod
    def from_config(cls, cfg, conversation=None) -> "WecomRobotChannel":
        return cls(cfg.chat.wecom.language if cfg.chat.wecom else "zh")

    @staticmethod
    def stored_target(target: str) -> str:
        return "robot:" + hashlib.sha256(target.encode()).hexdigest()[:16]

    def send(self, target: str, card: Card, idempotency_key: str | None = None) -> MessageRef:
        # a group robot has no duplicate check: at least once across a crash (bot/outbox.py)
        try:
            _check(self.http.post(target, json={"msgtype": "markdown", "markdown": {"content": markdown(card)}}))
        except httpx.HTTPError as exc:
            raise TransportError(f"WeCom robot unreachable: {exc.__class__.__name__}") from None
        return MessageRef(self.kind, self.stored_target(target), "")

    def update(self, ref: MessageRef, card: Card) -> None:
        raise TransportError("a WeCom group robot cannot edit its messages", permanent=True)
