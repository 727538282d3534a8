"""Local fake servers that speak the platforms' real API shapes, reached through each SDK's
base URL (slack_sdk WebClient base_url, python-telegram-bot Bot base_url, our WeCom
client's base_url), plus the signing and encryption each platform applies to what it
sends us. Nothing here imports reconbot.
"""

from __future__ import annotations

import base64
import email.policy
import hashlib
import hmac
import json
import os
import socket
import struct
import threading
import time
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class FakeApi:
    """A threaded HTTP server recording every call as (method name, payload, headers).

    `fail(name, status, body, headers, times)` makes the next calls of `name` answer so.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict, dict]] = []
        self.failures: dict[str, list[tuple[int, dict, dict]]] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # one write per response, no Nagle: otherwise every call waits for a delayed ACK
            wbufsize = 1 << 16
            disable_nagle_algorithm = True

            def log_message(self, *args):  # quiet
                pass

            def _serve(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlparse(self.path)
                name = fake.method_name(url.path)
                payload = fake.body(name, raw, self.headers.get("content-type", ""))
                payload.update({k: v[0] for k, v in parse_qs(url.query).items()})
                with fake.lock:
                    fake.calls.append((name, payload, dict(self.headers)))
                    queued = fake.failures.get(name)
                    forced = queued.pop(0) if queued else None
                if forced:
                    status, body, headers = forced
                else:
                    answer = fake.respond(name, payload, self.headers)
                    status, body = answer if isinstance(answer, tuple) else (200, answer)
                    headers = {}
                text = isinstance(body, str)  # a plain-text answer (Slack's upload URL says "OK - <size>")
                data = body.encode() if text else json.dumps(body, ensure_ascii=False).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", f"{'text/plain' if text else 'application/json'}; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a cancelled long poll)
                    self.close_connection = True

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def body(self, name: str, raw: bytes, content_type: str) -> dict:
        """What a call sent, as a dict (a platform overrides this for raw uploads)."""
        return self.decode(raw, content_type)

    @staticmethod
    def decode(raw: bytes, content_type: str) -> dict:
        """JSON, form fields, or multipart/form-data: text fields as str, files as
        {"filename", "content_type", "data": bytes}."""
        if not raw:
            return {}
        if "json" in content_type:
            return json.loads(raw)
        if content_type.startswith("multipart/form-data"):
            msg = BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
            out = {}
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                data = part.get_payload(decode=True)
                if part.get_filename() is not None:
                    out[name] = {"filename": part.get_filename(), "content_type": part.get_content_type(),
                                 "data": data}
                else:
                    out[name] = data.decode()
            return out
        return {k: v[0] for k, v in parse_qs(raw.decode()).items()}

    def fail(self, name: str, status: int, body: dict, headers: dict | None = None, times: int = 1) -> None:
        with self.lock:
            self.failures.setdefault(name, []).extend([(status, body, headers or {})] * times)

    def called(self, name: str) -> list[dict]:
        with self.lock:
            return [p for n, p, _h in self.calls if n == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.called(name)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{name} called {len(self.called(name))} times, expected {count}: "
                             f"{[n for n, _p, _h in self.calls]}")

    # per platform
    def method_name(self, path: str) -> str:
        raise NotImplementedError

    def respond(self, name: str, payload: dict, headers) -> dict | tuple[int, dict]:
        """The answer to a call (a body, or (HTTP status, body)); a platform that looks at the
        request's headers, or answers with another status, overrides this."""
        return self.answer(name, payload)

    def answer(self, name: str, payload: dict) -> dict:
        raise NotImplementedError


class FakeSlack(FakeApi):
    """Slack Web API: https://slack.com/api/<method>, and the upload URLs that
    files.getUploadURLExternal hands out (https://files.slack.com/upload/v1/..., recorded as
    "upload" with the raw bytes under "data" and the file id under "file_id"). With
    `socket_mode()`, also Slack's Socket Mode end: apps.connections.open (app-level token
    only) hands out a WebSocket URL."""

    def __init__(self) -> None:
        super().__init__()
        self.base_url = f"http://127.0.0.1:{self.port}/api/"
        self._ts = 1764000000
        self._files = 0
        self.socket: FakeSlackSocket | None = None
        self.history: dict[str, list[dict]] = {}  # channel -> messages posted there, oldest first

    def socket_mode(self, app_token: str) -> "FakeSlackSocket":
        """Turn Socket Mode on for the app whose app-level token is `app_token`."""
        self.app_token = app_token
        self.socket = FakeSlackSocket()
        return self.socket

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
        super().close()

    def method_name(self, path: str) -> str:
        if path.startswith("/upload/v1/"):
            return "upload"
        return path.rsplit("/", 1)[-1]

    def respond(self, name: str, payload: dict, headers) -> dict:
        if name == "apps.connections.open":
            token = (headers.get("Authorization") or "").removeprefix("Bearer ")
            if not token.startswith("xapp-"):  # Slack refuses bot and user tokens here
                return {"ok": False, "error": "not_allowed_token_type"}
            if self.socket is None or token != self.app_token:
                return {"ok": False, "error": "invalid_auth"}
            return {"ok": True, "url": self.socket.issue_url()}
        return self.answer(name, payload)

    def body(self, name: str, raw: bytes, content_type: str) -> dict:
        if name == "upload":  # the file's bytes, whatever content type the client claimed
            return {"data": raw}
        return super().body(name, raw, content_type)

    def answer(self, name: str, payload: dict) -> dict | str:
        if name == "files.getUploadURLExternal":
            with self.lock:
                self._files += 1
                file_id = f"F0FAKE{self._files:04d}"
            return {"ok": True, "upload_url": f"http://127.0.0.1:{self.port}/upload/v1/{file_id}",
                    "file_id": file_id}
        if name == "upload":
            return f"OK - {len(payload['data'])}"
        if name == "files.completeUploadExternal":
            return {"ok": True, "files": [{"id": f["id"], "title": f.get("title", "")}
                                          for f in json.loads(payload["files"])]}
        if name == "auth.test":
            return {"ok": True, "url": "https://fake.slack.com/", "team": "Fake", "user": "reconbot",
                    "team_id": "T0FAKE", "user_id": "U0BOT", "bot_id": "B0BOT"}
        if name == "chat.postMessage":
            with self.lock:
                self._ts += 1
                ts = f"{self._ts}.000100"
                message = {"type": "message", "ts": ts, "text": payload.get("text", ""), "bot_id": "B0BOT"}
                if payload.get("metadata"):
                    message["metadata"] = payload["metadata"]
                self.history.setdefault(payload["channel"], []).append(message)
            return {"ok": True, "channel": payload["channel"], "ts": ts, "message": {"ts": ts}}
        if name == "conversations.history":  # newest first; metadata only when asked for
            with self.lock:
                limit = int(payload.get("limit") or 100)
                messages = list(reversed(self.history.get(payload["channel"], [])))[:limit]
            if not payload.get("include_all_metadata"):
                messages = [{k: v for k, v in m.items() if k != "metadata"} for m in messages]
            return {"ok": True, "messages": messages, "has_more": False}
        if name == "chat.update":
            return {"ok": True, "channel": payload["channel"], "ts": payload["ts"], "text": payload.get("text", "")}
        if name == "chat.postEphemeral":
            return {"ok": True, "message_ts": "1.1"}
        return {"ok": False, "error": "unknown_method"}


class FakeSlackSocket:
    """Slack's Socket Mode WebSocket (https://docs.slack.dev/apis/events-api/using-socket-mode/):
    a connection opened with a ticket from apps.connections.open is greeted with `hello`; the
    test pushes envelopes {envelope_id, type, payload, accepts_response_payload}; everything
    the client sends back (acks {"envelope_id": ..., "payload"?: ...}) is recorded."""

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.received: list[dict] = []
        self.connections: list = []
        self.tickets: set[str] = set()
        self.opened = 0
        self.cond = threading.Condition()
        self.server = serve(self._session, "127.0.0.1", 0, compression=None)
        self.port = self.server.socket.getsockname()[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()

    def issue_url(self) -> str:
        ticket = os.urandom(8).hex()
        with self.cond:
            self.tickets.add(ticket)
        return f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id=A0RECON"

    def _session(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        ticket = parse_qs(urlparse(ws.request.path).query).get("ticket", [""])[0]
        with self.cond:
            known = ticket in self.tickets
            self.tickets.discard(ticket)  # a ticket opens one connection
        if not known:
            ws.close(1008, "invalid ticket")
            return
        ws.send(json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0RECON"},
                            "debug_info": {"host": "applink-fake", "build_number": 1,
                                           "approximate_connection_time": 18060}}))
        with self.cond:
            self.connections.append(ws)
            self.opened += 1
            self.cond.notify_all()
        try:
            for message in ws:
                with self.cond:
                    self.received.append(json.loads(message))
                    self.cond.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self.cond:
                self.connections.remove(ws)
                self.cond.notify_all()

    def wait_connected(self, opened: int = 1, timeout: float = 10.0) -> None:
        """Until `opened` connections have been made in all, and one is open."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.opened >= opened and self.connections, timeout):
                raise AssertionError(f"{self.opened} Socket Mode connection(s) opened, expected {opened}")

    def envelope(self, type_: str, payload: dict, envelope_id: str | None = None, **extra) -> str:
        """Send one envelope over the open connection, as Slack does; -> its envelope_id."""
        envelope_id = envelope_id or f"{os.urandom(4).hex()}-{os.urandom(2).hex()}-{os.urandom(6).hex()}"
        message = {"envelope_id": envelope_id, "type": type_, "payload": payload,
                   "accepts_response_payload": type_ == "slash_commands", **extra}
        with self.cond:
            ws = self.connections[-1]
        ws.send(json.dumps(message))
        return envelope_id

    def disconnect(self, reason: str = "refresh_requested") -> None:
        """Slack's notice that this connection is about to be replaced."""
        with self.cond:
            ws = self.connections[-1]
        ws.send(json.dumps({"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}))

    def acks(self, envelope_id: str) -> list[dict]:
        with self.cond:
            return [m for m in self.received if m.get("envelope_id") == envelope_id]

    def wait_acks(self, envelope_id: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.acks_locked(envelope_id)) >= count, timeout):
                raise AssertionError(f"envelope {envelope_id} acked {len(self.acks_locked(envelope_id))} "
                                     f"times, expected {count}: {self.received}")
            return self.acks_locked(envelope_id)

    def acks_locked(self, envelope_id: str) -> list[dict]:
        return [m for m in self.received if m.get("envelope_id") == envelope_id]


class FakeTelegram(FakeApi):
    """Telegram Bot API: https://api.telegram.org/bot<token>/<method>.

    Updates for a bot without a webhook wait until getUpdates fetches them (`offer`): a call
    with `offset` confirms, and forgets, every update below it; with `timeout` it waits that
    long for one to arrive (long polling). While a webhook is set, getUpdates answers 409.
    """

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.base_url = f"http://127.0.0.1:{self.port}/bot"
        self._message_id = 100
        self.webhook_url = ""
        self.pending: list[dict] = []  # offered, not yet confirmed
        self.updates = threading.Condition()
        self.closed = False

    def close(self) -> None:
        with self.updates:
            self.closed = True
            self.updates.notify_all()
        super().close()

    def offer(self, update: bytes | dict) -> None:
        """An update for the bot (a user clicked, typed), as getUpdates will return it."""
        with self.updates:
            self.pending.append(json.loads(update) if isinstance(update, bytes) else update)
            self.updates.notify_all()

    def respond(self, name: str, payload: dict, headers):
        if name == "getUpdates":
            return self._get_updates(payload)
        if name == "setWebhook":
            self.webhook_url = payload["url"]
        if name == "deleteWebhook":
            with self.updates:
                self.webhook_url = ""
                if str(payload.get("drop_pending_updates", "")).lower() == "true":
                    self.pending.clear()
        return self.answer(name, payload)

    def _get_updates(self, payload: dict):
        if self.webhook_url:
            return 409, {"ok": False, "error_code": 409, "description": "Conflict: can't use getUpdates method "
                         "while webhook is active; use deleteWebhook to delete the webhook first"}
        offset, limit = int(payload.get("offset") or 0), int(payload.get("limit") or 100)
        deadline = time.monotonic() + float(payload.get("timeout") or 0)
        with self.updates:
            self.pending = [u for u in self.pending if u["update_id"] >= offset]  # confirmed: gone for good
            while not self.pending and not self.closed and (left := deadline - time.monotonic()) > 0:
                self.updates.wait(left)
            return {"ok": True, "result": sorted(self.pending, key=lambda u: u["update_id"])[:limit]}

    def method_name(self, path: str) -> str:
        prefix, _, method = path.rpartition("/")
        assert prefix == f"/bot{self.token}", f"token not in the path: {path}"
        return method

    def answer(self, name: str, payload: dict) -> dict:
        if name == "getMe":
            return {"ok": True, "result": {"id": 4242, "is_bot": True, "first_name": "recon", "username": "recon_bot"}}
        if name in ("sendMessage", "editMessageText"):
            with self.lock:
                self._message_id += 1
                mid = int(payload.get("message_id") or self._message_id)
            chat_id = int(payload["chat_id"])
            return {"ok": True, "result": {"message_id": mid, "date": int(time.time()),
                                           "chat": {"id": chat_id, "type": "group" if chat_id < 0 else "private"},
                                           "text": payload.get("text", "")}}
        if name == "sendPhoto":  # multipart: the picture is the "photo" field
            with self.lock:
                self._message_id += 1
                mid = self._message_id
            chat_id = int(payload["chat_id"])
            size = len(payload["photo"]["data"])
            return {"ok": True, "result": {
                "message_id": mid, "date": int(time.time()), "caption": payload.get("caption", ""),
                "chat": {"id": chat_id, "type": "group" if chat_id < 0 else "private"},
                "photo": [{"file_id": f"AgAC{mid}-s", "file_unique_id": f"AQAD{mid}s", "width": 320, "height": 209,
                           "file_size": size // 8},
                          {"file_id": f"AgAC{mid}-x", "file_unique_id": f"AQAD{mid}x", "width": 1100,
                           "height": 720, "file_size": size}]}}
        if name in ("answerCallbackQuery", "setWebhook", "deleteWebhook"):
            return {"ok": True, "result": True}
        return {"ok": False, "error_code": 404, "description": "Not Found: method not found"}


class FakeWecom(FakeApi):
    """WeCom server API: https://qyapi.weixin.qq.com/cgi-bin/<path> (+ group robot webhooks)."""

    def __init__(self) -> None:
        super().__init__()
        self.base_url = f"http://127.0.0.1:{self.port}/cgi-bin/"
        self.robot_url = f"http://127.0.0.1:{self.port}/cgi-bin/webhook/send?key=ROBOT-KEY"
        self.tokens_issued = 0
        # message/send with enable_duplicate_check: the same request (JSON) within
        # duplicate_check_interval seconds is not delivered again
        self.sent_requests: dict[str, tuple[float, str]] = {}
        self.delivered: list[dict] = []  # message/send calls that reached the users

    def method_name(self, path: str) -> str:
        return path.removeprefix("/cgi-bin/")

    def answer(self, name: str, payload: dict) -> dict:
        if name == "gettoken":
            with self.lock:
                self.tokens_issued += 1
                n = self.tokens_issued
            return {"errcode": 0, "errmsg": "ok", "access_token": f"ACCESS-{n}", "expires_in": 7200}
        if name == "message/send":
            request = {k: v for k, v in payload.items() if k != "access_token"}
            canonical = json.dumps(request, sort_keys=True, ensure_ascii=False)
            with self.lock:
                seen = self.sent_requests.get(canonical)
                interval = float(request.get("duplicate_check_interval") or 1800)
                if request.get("enable_duplicate_check") == 1 and seen and time.time() - seen[0] < interval:
                    return {"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": seen[1]}
                msgid = f"msg{len(self.calls)}"
                self.sent_requests[canonical] = (time.time(), msgid)
                self.delivered.append(request)
            return {"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": msgid}
        if name == "media/upload":  # multipart: the file is the "media" field
            return {"errcode": 0, "errmsg": "", "type": payload.get("type", ""),
                    "media_id": f"3a8{len(self.calls):04d}Fake{payload['media']['filename']}",
                    "created_at": str(int(time.time()))}
        if name == "message/update_template_card":
            return {"errcode": 0, "errmsg": "ok", "invaliduser": []}
        if name == "webhook/send":
            return {"errcode": 0, "errmsg": "ok"}
        return {"errcode": 404, "errmsg": "unknown"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- what the platforms do to the requests they send us ----------------------------------

def slack_signed(secret: str, body: bytes, timestamp: int | None = None) -> dict:
    """Slack's v0 signature: HMAC-SHA256 of "v0:{timestamp}:{body}" with the signing secret."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig,
            "Content-Type": "application/x-www-form-urlencoded"}


def slack_command(text: str, user: str = "U0ALICE", channel: str = "C0FIN") -> dict:
    """A slash command's fields (HTTP: form-encoded; Socket Mode: the envelope's payload)."""
    return {"token": "legacy", "team_id": "T0FAKE", "team_domain": "fake", "channel_id": channel,
            "channel_name": "finance", "user_id": user, "user_name": user.lower(), "command": "/recon",
            "text": text, "api_app_id": "A0RECON", "response_url": "https://hooks.slack.test/x",
            "trigger_id": "1.2.3"}


def slack_command_body(text: str, user: str = "U0ALICE", channel: str = "C0FIN") -> bytes:
    return urlencode(slack_command(text, user, channel)).encode()


def slack_click_body(action_id: str, value: str, user: str = "U0ALICE", channel: str = "C0FIN",
                     ts: str = "1764000001.000100") -> bytes:
    return urlencode({"payload": json.dumps(slack_click(action_id, value, user, channel, ts))}).encode()


def slack_click(action_id: str, value: str, user: str = "U0ALICE", channel: str = "C0FIN",
                ts: str = "1764000001.000100") -> dict:
    """A block_actions payload (HTTP: form field `payload`; Socket Mode: the envelope's payload)."""
    return {
        "type": "block_actions", "user": {"id": user, "username": user.lower(), "team_id": "T0FAKE"},
        "api_app_id": "A0RECON", "token": "legacy", "team": {"id": "T0FAKE", "domain": "fake"},
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": "1.2.3", "channel": {"id": channel, "name": "finance"},
        "message": {"type": "message", "ts": ts, "text": "card", "user": "U0BOT"},
        "response_url": "https://hooks.slack.test/actions/x",
        "actions": [{"action_id": action_id, "block_id": "recon:break:1", "value": value, "type": "button",
                     "action_ts": f"{time.time():.6f}", "text": {"type": "plain_text", "text": "x"}}],
    }


def telegram_headers(secret: str) -> dict:
    return {"X-Telegram-Bot-Api-Secret-Token": secret, "Content-Type": "application/json"}


def telegram_command(update_id: int, text: str, user_id: int = 1001, chat_id: int = -100500,
                     date: int | None = None) -> bytes:
    return json.dumps({"update_id": update_id, "message": {
        "message_id": 7, "date": int(time.time()) if date is None else date, "text": text,
        "from": {"id": user_id, "is_bot": False, "first_name": "Alice"},
        "chat": {"id": chat_id, "type": "supergroup", "title": "Finance"},
        "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}}).encode()


def telegram_click(update_id: int, data: str, user_id: int = 1001, chat_id: int = -100500,
                   message_id: int = 101) -> bytes:
    return json.dumps({"update_id": update_id, "callback_query": {
        "id": f"cq{update_id}", "chat_instance": "ci", "data": data,
        "from": {"id": user_id, "is_bot": False, "first_name": "Alice"},
        "message": {"message_id": message_id, "date": int(time.time()) - 3600, "text": "card",
                    "chat": {"id": chat_id, "type": "supergroup", "title": "Finance"},
                    "from": {"id": 4242, "is_bot": True, "first_name": "recon"}}}}).encode()


def wecom_encrypt(plain_xml: str, aes_key: str, corp_id: str) -> str:
    """WeCom's message encryption: AES-256-CBC, key = base64(EncodingAESKey + "="), IV = key[:16],
    plaintext = 16 random bytes + 4-byte length + message + corp id, PKCS#7 to 32 bytes."""
    key = base64.b64decode(aes_key + "=")
    msg = plain_xml.encode()
    raw = os.urandom(16) + struct.pack(">I", len(msg)) + msg + corp_id.encode()
    pad = 32 - len(raw) % 32
    raw += bytes([pad]) * pad
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(raw) + enc.finalize()).decode()


def wecom_signature(token: str, timestamp: str, nonce: str, data: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, data])).encode()).hexdigest()


def wecom_post(token: str, aes_key: str, corp_id: str, agent_id: int, plain_xml: str,
               timestamp: int | None = None, nonce: str | None = None) -> tuple[dict, bytes]:
    """(query, body) of an encrypted callback POST exactly as WeCom sends it."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or os.urandom(6).hex()
    encrypted = wecom_encrypt(plain_xml, aes_key, corp_id)
    body = (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><AgentID><![CDATA[{agent_id}]]></AgentID>"
            f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>").encode()
    return {"msg_signature": wecom_signature(token, ts, nonce, encrypted), "timestamp": ts, "nonce": nonce}, body


def wecom_click_xml(corp_id: str, agent_id: int, user: str, key: str, task_id: str, response_code: str) -> str:
    return (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[template_card_event]]></Event><EventKey><![CDATA[{key}]]></EventKey>"
            f"<TaskId><![CDATA[{task_id}]]></TaskId><CardType><![CDATA[button_interaction]]></CardType>"
            f"<ResponseCode><![CDATA[{response_code}]]></ResponseCode><AgentID>{agent_id}</AgentID></xml>")


def wecom_text_xml(corp_id: str, agent_id: int, user: str, content: str, msg_id: int = 1) -> str:
    return (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId><AgentID>{agent_id}</AgentID></xml>")
