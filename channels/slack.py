"""Slack: Block Kit cards with buttons, the `/recon` slash command, edits with chat.update,
chart images as files (files.getUploadURLExternal + files.completeUploadExternal).

HTTP mode: Slack posts slash commands and button clicks (interactivity) to one URL,
`/slack/events`. Each request is verified here before anything is read from its body: the
timestamp must be within the window, the v0 HMAC-SHA256 signature must match (constant-time
comparison), and the signature must not have been seen before (replay). Only then does
slack-bolt parse and dispatch it; its listeners `ack()` at once (Slack waits 3 s at most)
and the action's work (database, chat.update) runs after the ack.

Socket Mode (`mode = "socket"`, for a host Slack cannot reach): reconbot opens a WebSocket to
Slack itself (apps.connections.open with the app-level token) and Slack sends the same
payloads over it as envelopes. There is no request to sign: the connection is ours, opened
with a secret token. Each envelope is recorded by its id (an Events API event by its
event_id, which survives redelivery) before it is dispatched, so a redelivered envelope is
acked again but not acted on twice; then the very same Bolt app and listeners handle it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import socket
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor

from slack_bolt import App, BoltRequest
from slack_bolt.adapter.socket_mode.builtin import SocketModeHandler
from slack_bolt.adapter.socket_mode.internals import build_headers, send_response
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot.cards import Card
from bot.delivery import deliver, deliver_reply
from bot.inbound import Conversation, fresh, received
from bot.transport import HttpRequest, HttpResponse, MessageRef, Refused, TransportError

log = logging.getLogger("reconbot.slack")

# Slack's own error codes (the `error` field of a failed Web API call) that no retry fixes.
PERMANENT_ERRORS = {
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed", "account_inactive",
    "token_revoked", "token_expired", "missing_scope", "no_permission", "message_not_found",
    "cant_update_message", "edit_window_closed", "msg_too_long", "invalid_blocks", "invalid_arguments",
    "user_not_in_channel", "restricted_action",
}
# HTTP statuses worth another try (429 carries Retry-After, in seconds).
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
SIGNATURE_VERSION = "v0"
METADATA_EVENT = "reconbot_alert"  # message metadata event type carrying the outbox's idempotency key
HISTORY_LOOKBACK = 200  # messages looked through for one left in doubt by a crash
MAX_FIELDS_PER_SECTION = 10  # Block Kit: a section holds at most 10 fields
ACTION_ID = re.compile(r"^recon\.(\w+)(\.\d+)?$")


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def blocks(card: Card) -> list[dict]:
    out: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": card.title[:150], "emoji": True}}]
    for i in range(0, len(card.fields), MAX_FIELDS_PER_SECTION):
        chunk = card.fields[i:i + MAX_FIELDS_PER_SECTION]
        out.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*{_mrkdwn(k)}*\n{_mrkdwn(v)}"} for k, v in chunk]})
    if card.text:
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(card.text)[:3000]}})
    if card.evidence:
        out.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": _mrkdwn("\n".join(card.evidence))[:3000]}]})
    if card.note:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"*{_mrkdwn(card.note)}*"}]})
    if card.buttons:
        elements = []
        for i, b in enumerate(card.buttons):
            el = {"type": "button", "action_id": f"recon.{b.action}.{i}",
                  "text": {"type": "plain_text", "text": b.label[:75], "emoji": True}, "value": b.value}
            if b.style in ("primary", "danger"):
                el["style"] = b.style
            if b.confirm:
                el["confirm"] = {"title": {"type": "plain_text", "text": "Are you sure?"},
                                 "text": {"type": "plain_text", "text": b.confirm},
                                 "confirm": {"type": "plain_text", "text": b.label[:30]},
                                 "deny": {"type": "plain_text", "text": "Cancel"}}
            elements.append(el)
        out.append({"type": "actions", "block_id": f"recon:{card.key}", "elements": elements})
    return out


def _transport_error(exc: SlackApiError) -> TransportError:
    status = exc.response.status_code
    error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
    retry_after = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after")
    permanent = error in PERMANENT_ERRORS or (status not in TRANSIENT_STATUS and status >= 400
                                              and error not in ("ratelimited", "internal_error", "fatal_error"))
    return TransportError(f"Slack {status} {error or ''}".strip(), permanent=permanent,
                          retry_after=float(retry_after) if retry_after else None)


class SlackChannel:
    kind = "slack"
    edits_without_event = True

    def __init__(self, bot_token: str, signing_secret: str | None, base_url: str = "https://slack.com/api/",
                 language: str = "en", conversation: Conversation | None = None, max_age: int = 300,
                 app_token: str | None = None) -> None:
        self.language = language
        self.signing_secret = signing_secret
        # Socket Mode when an app-level token is given: inbound traffic over our own connection
        self.listener = SocketModeListener(self, app_token) if app_token else None
        self.max_age = max_age
        self.conversation = conversation
        self.client = WebClient(token=bot_token, base_url=base_url, timeout=10)
        # Our verification (freshness, HMAC, replay) runs before Bolt sees the request, so
        # Bolt's own check is off; Bolt parses, dispatches and acks.
        self.app = App(client=self.client, signing_secret=signing_secret, request_verification_enabled=False,
                       token_verification_enabled=False, process_before_response=False,
                       # listeners only ack (and answer commands); clicks are worked in the
                       # conversation's pool, so a burst of clicks never delays an ack
                       listener_executor=ThreadPoolExecutor(max_workers=64, thread_name_prefix="slack-ack"),
                       logger=log)
        self.app.command("/recon")(self._on_command)
        self.app.action(ACTION_ID)(self._on_action)

    @classmethod
    def from_config(cls, cfg, conversation=None) -> "SlackChannel":
        c = cfg.chat.slack
        return cls(c.bot_token, c.signing_secret if c.mode == "http" else None, c.base_url, c.language, conversation,
                   cfg.chat.server.max_age_seconds, c.app_token if c.mode == "socket" else None)

    # -- outbound ----------------------------------------------------------------------
    def _call(self, method: str, **payload) -> dict:
        try:
            return self.client.api_call(method, json=payload).data
        except SlackApiError as exc:
            raise _transport_error(exc) from None

    def send(self, target: str, card: Card, idempotency_key: str | None = None) -> MessageRef:
        if card.image is not None:
            return self.upload(target, card)
        extra = {}
        if idempotency_key:  # message metadata: how `find_sent` recognises this message later
            extra["metadata"] = {"event_type": METADATA_EVENT, "event_payload": {"idempotency_key": idempotency_key}}
        data = self._call("chat.postMessage", channel=target, text=card.title, blocks=blocks(card), **extra)
        return MessageRef(self.kind, data.get("channel", target), data["ts"])

    def find_sent(self, target: str, idempotency_key: str) -> MessageRef | None:
        """The message posted with this key among the channel's latest (conversations.history
        with include_all_metadata), or None. Needs the channels:history (groups:history) scope."""
        data = self._call("conversations.history", channel=target, limit=HISTORY_LOOKBACK, include_all_metadata=True)
        for msg in data.get("messages", []):
            meta = msg.get("metadata") or {}
            if (meta.get("event_type") == METADATA_EVENT
                    and (meta.get("event_payload") or {}).get("idempotency_key") == idempotency_key):
                return MessageRef(self.kind, target, msg["ts"])
        return None

    def upload(self, target: str, card: Card) -> MessageRef:
        """The card's image into the channel, the way Slack takes files now: files.getUploadURLExternal,
        the bytes POSTed to the URL it gives, files.completeUploadExternal (slack_sdk's
        files_upload_v2 makes the three calls). -> the file id."""
        img = card.image
        try:
            done = self.client.files_upload_v2(channel=target, file=img.png, filename=img.filename,
                                               title=img.alt[:250], alt_txt=img.alt[:1000],
                                               initial_comment=card.title)
        except SlackApiError as exc:
            raise _transport_error(exc) from None
        except urllib.error.HTTPError as exc:  # the upload URL answered 4xx/5xx
            raise TransportError(f"Slack file upload: HTTP {exc.code}",
                                 permanent=exc.code not in TRANSIENT_STATUS) from None
        except (SlackRequestError, OSError) as exc:  # refused before sending, or the connection failed
            raise TransportError(f"Slack file upload failed: {exc.__class__.__name__}") from None
        files = done.get("files") or [{}]
        return MessageRef(self.kind, target, files[0].get("id", ""))

    def update(self, ref: MessageRef, card: Card) -> None:
        self._call("chat.update", channel=ref.target, ts=ref.message_id, text=card.title, blocks=blocks(card))

    def tell(self, channel: str, user: str, text: str) -> None:
        """A note only the clicking user sees (who won, why it was refused)."""
        self._call("chat.postEphemeral", channel=channel, user=user, text=text)

    # -- inbound -----------------------------------------------------------------------
    def verify(self, request: HttpRequest) -> None:
        if not self.signing_secret:  # Socket Mode: nothing arrives over HTTP
            raise Refused("forged", "Slack is in Socket Mode: no signing secret to check a request against")
        fresh(request.headers.get("x-slack-request-timestamp"), self.max_age)
        ts = request.headers["x-slack-request-timestamp"]
        basestring = f"{SIGNATURE_VERSION}:{ts}:".encode() + request.body
        expected = f"{SIGNATURE_VERSION}=" + hmac.new(self.signing_secret.encode(), basestring,
                                                       hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("x-slack-signature", "")):
            raise Refused("forged", "Slack signature does not match")
        self.conversation.replay.first_time(self.kind, request.headers["x-slack-signature"])

    def handle(self, request: HttpRequest) -> HttpResponse:
        self.verify(request)
        headers = {k: [v] for k, v in request.headers.items()}
        resp = self.app.dispatch(BoltRequest(body=request.body.decode("utf-8"), headers=headers,
                                             query=request.query, context={"raw_body": request.body}))
        return HttpResponse(resp.status, resp.body, resp.headers.get("content-type", ["application/json"])[0])

    def _on_command(self, ack, command, context):
        reply = self.conversation.command(self.kind, command["user_id"], command.get("text", ""),
                                          command.get("channel_id"), self.language)
        cards = reply.cards
        ack(response_type="in_channel", text=cards[0].title, blocks=[b for c in cards for b in blocks(c)])
        channel = command.get("channel_id")
        self.conversation.later(reply, lambda card: deliver_reply(self.kind, lambda c: self.send(channel, c), card))

    def _on_action(self, ack, body, action, context):
        ack()  # within Slack's 3 seconds, before any work
        self.conversation.submit(self._act, body, action, context["raw_body"])

    def _act(self, body: dict, action: dict, raw_body: bytes) -> None:
        m = ACTION_ID.match(action["action_id"])
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id") or body.get("container", {}).get("channel_id")
        ts = (body.get("message") or {}).get("ts") or body.get("container", {}).get("message_ts")
        outcome = self.conversation.click(self.kind, user, m.group(1), action.get("value", ""), raw_body,
                                          self.language)
        try:
            if outcome.card is not None and channel and ts:
                deliver(self.kind, "chat.update", lambda: self.update(MessageRef(self.kind, channel, ts), outcome.card))
            if outcome.message and outcome.status not in ("applied", "picker", "shown") and channel:
                deliver(self.kind, "ephemeral", lambda: self.tell(channel, user, outcome.message))
        except TransportError as exc:
            log.error("Slack answer to a click failed: %s", exc.message)



def envelope_identity(req: SocketModeRequest) -> str:
    """What makes a Socket Mode delivery the same delivery again: an Events API event keeps
    its event_id across Slack's retries; anything else is one envelope."""
    event_id = req.payload.get("event_id") if req.type == "events_api" else None
    return f"event:{event_id}" if event_id else f"envelope:{req.envelope_id}"


class _EnvelopeHandler(SocketModeHandler):
    """slack-bolt's built-in Socket Mode handler, with our replay record in front of Bolt and
    an ack for every envelope (Bolt leaves an envelope no listener takes unacked, and Slack
    would deliver it again)."""

    def __init__(self, channel: "SlackChannel", app_token: str) -> None:
        super().__init__(channel.app, app_token, logger=log, web_client=channel.client)
        self.channel = channel

    def handle(self, client, req: SocketModeRequest) -> None:
        started = time.time()
        conversation = self.channel.conversation
        answer = []

        def take():
            # a redelivered envelope is refused here (and acked below, so Slack stops sending it)
            conversation.replay.first_time(self.channel.kind, envelope_identity(req))
            # the audit's request hash: the envelope's payload, as a request body would be
            raw = json.dumps(req.payload, sort_keys=True, ensure_ascii=False).encode()
            with conversation.answering():
                answer.append(self.channel.app.dispatch(BoltRequest(
                    body=req.payload, headers=build_headers(req), context={"raw_body": raw}, mode="socket_mode")))

        received(self.channel.kind, f"{req.type} envelope {req.envelope_id}", take)
        if answer and answer[0].status == 200:
            send_response(client, req, answer[0], started)
        else:  # a replay, or nothing of ours listens for it (an event type we never asked for)
            client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))


class SocketModeListener:
    """Slack Socket Mode through slack-bolt's built-in adapter: slack_sdk's own WebSocket
    client, no extra package, and it drives the same synchronous Bolt app as HTTP mode (the
    aiohttp and websockets adapters need an AsyncApp, i.e. every listener written twice).
    It reconnects by itself when Slack asks (`disconnect` messages) or the link goes quiet."""

    def __init__(self, channel: "SlackChannel", app_token: str) -> None:
        self.channel = channel
        self.app_token = app_token
        self.handler: _EnvelopeHandler | None = None

    def start(self) -> None:
        # built here, not in __init__: the client starts its threads as soon as it exists
        self.handler = _EnvelopeHandler(self.channel, self.app_token)
        try:
            self.handler.connect()  # apps.connections.open, then the WebSocket handshake
        except SlackApiError as exc:
            self.stop()
            raise _transport_error(exc) from None
        if not self.handler.client.is_connected():
            self.stop()
            raise TransportError("Slack Socket Mode: the WebSocket connection failed (see the log)")

    def stop(self) -> None:
        if self.handler is None:
            return
        # close() waits for the client's threads, which sit in a recv() (3 s timeout) and a
        # queue get (1 s): wake both, so a shutdown takes milliseconds
        client = self.handler.client
        client.auto_reconnect_enabled = False
        client.closed = True
        client.message_queue.put(None)
        session = client.current_session
        if session is not None and session.sock is not None:
            with contextlib.suppress(OSError):
                session.sock.shutdown(socket.SHUT_RDWR)
        self.handler.close()
        self.handler = None

    def connected(self) -> bool:
        return self.handler is not None and self.handler.client.is_connected()
