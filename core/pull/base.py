"""What every puller shares: its errors, the retry stage, secret redaction, downloads.

A puller only talks to its platform and says which failures are worth another try
(`retryable`); the retry policy itself lives here, once (STYLE.md §3). Errors are phrased
for the operator and pass through `redact`, so a key never reaches a log or a message.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

import httpx
import tenacity
from pydantic import SecretStr

from core.config import ConfigError, MerchantConfig, PullConfig, SourceConfig
from core.sources.base import MAX_COMPRESSION_RATIO, MAX_UNCOMPRESSED_BYTES

log = logging.getLogger("reconbot.pull")

PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", ".filepart", ".crdownload")


class PullError(Exception):
    """A pull that failed; the message names the source and never holds a secret."""


class NotAvailable(PullError):
    """The platform has no statement for that day yet (not an error of ours or theirs)."""


class FileRejected(PullError):
    """Bytes arrived but fail the platform's own integrity check (hash): not ingested."""

    def __init__(self, message: str, data: bytes = b""):
        super().__init__(message)
        self.sha256 = hashlib.sha256(data).hexdigest()


class TransportFailure(PullError):
    """No answer: timeout, refused or broken connection (worth another try)."""


class HttpStatusError(PullError):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def redact(text: str, secrets: list[str]) -> str:
    """`text` with every secret (and every long line of a multi-line secret) starred out."""
    for secret in secrets:
        for piece in [secret, *secret.splitlines()]:
            piece = piece.strip()
            if len(piece) >= 6 and not piece.startswith("-----"):
                text = text.replace(piece, "***")
    return text


class _Redacting(logging.Filter):
    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


# Libraries that log requests and answers (the Stripe SDK logs error bodies at INFO).
CHATTY_LOGGERS = ("stripe", "httpx", "httpcore", "reconbot.pull")


@contextmanager
def redacted_logs(secrets: list[str]):
    """While pulling, every log line of those libraries has the secrets starred out."""
    f = _Redacting(secrets)
    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
    for lg in loggers:
        lg.addFilter(f)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(f)


def http_retryable(exc: BaseException) -> bool:
    """5xx, 429, timeouts and broken connections are worth another try; the rest is not."""
    if isinstance(exc, HttpStatusError):
        return exc.status >= 500 or exc.status == 429
    return isinstance(exc, TransportFailure)


def with_retries(policy: PullConfig, retryable: Callable[[BaseException], bool], what: str, fn: Callable):
    """Call `fn()`; on a retryable failure wait (exponential backoff) and call it again."""

    def _log(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s: attempt %d failed (%s), retrying in %.2f s", what, state.attempt_number,
                    exc.__class__.__name__, state.next_action.sleep if state.next_action else 0)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.retries + 1),
        wait=tenacity.wait_exponential(multiplier=policy.retry_wait_seconds, min=policy.retry_wait_seconds, max=60),
        retry=tenacity.retry_if_exception(retryable),
        before_sleep=_log,
        reraise=True,
    )
    return retrying(fn)


@dataclass
class PullContext:
    """A puller's configuration, resolved: secrets unwrapped, paths made absolute."""

    source: SourceConfig
    merchant: MerchantConfig
    base_dir: Path

    @property
    def pull(self) -> PullConfig:
        if self.source.pull is None:
            raise ConfigError(f"source {self.source.name!r}: no [pull] settings (add a pull table to pull it)")
        return self.source.pull

    def need(self, key: str) -> str:
        value = getattr(self.pull, key)
        if value is None or value == "":
            raise ConfigError(f"merchant {self.merchant.id}: source {self.source.name!r}: pull.{key} is needed "
                              f"to pull a {self.source.kind} statement")
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    def pem(self, key: str) -> bytes:
        """A PEM given inline (from the environment, say) or as a path to a file."""
        text = self.need(key)
        if "-----BEGIN" in text:
            return text.encode()
        path = Path(text) if Path(text).is_absolute() else self.base_dir / text
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"source {self.source.name!r}: pull.{key}: cannot read {path} ({exc.strerror})") from None

    @property
    def secrets(self) -> list[str]:
        out = []
        for key in ("private_key", "api_key"):
            value = getattr(self.pull, key) if self.source.pull else None
            if value is not None:
                out.append(value.get_secret_value())
        return out

    def fail(self, message: str, cls=PullError, **kw) -> PullError:
        return cls(redact(f"{self.source.name}: {message}", self.secrets), **kw)

    def client(self) -> httpx.Client:
        return httpx.Client(timeout=self.pull.timeout_seconds, follow_redirects=False)

    def target(self, day: date, name: str) -> Path:
        folder = Path(self.pull.download_folder)
        folder = folder if folder.is_absolute() else self.base_dir / folder
        return folder / f"{self.source.name}_{day.isoformat()}_{name}"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def send(ctx: PullContext, client: httpx.Client, request: httpx.Request, what: str,
         follow_redirects: bool = False) -> Answer:
    """Send `request` and read the body (refusing more than the ingest limit); any status."""
    try:
        response = client.send(request, stream=True, follow_redirects=follow_redirects)
    except httpx.TimeoutException:
        raise ctx.fail(f"{what}: no answer within {ctx.pull.timeout_seconds} s", TransportFailure) from None
    except httpx.TransportError as exc:
        raise ctx.fail(f"{what}: {exc.__class__.__name__}: {exc}", TransportFailure) from None
    try:
        body = io.BytesIO()
        for chunk in response.iter_bytes():
            body.write(chunk)
            if body.tell() > MAX_UNCOMPRESSED_BYTES:
                raise ctx.fail(f"{what}: the response is over {MAX_UNCOMPRESSED_BYTES} bytes")
    except httpx.TransportError as exc:  # the connection broke mid-body
        raise ctx.fail(f"{what}: {exc.__class__.__name__} while reading the body", TransportFailure) from None
    finally:
        response.close()
    return Answer(response.status_code, response.headers, body.getvalue())


def get_bytes(ctx: PullContext, client: httpx.Client, request: httpx.Request, what: str,
              follow_redirects: bool = False) -> bytes:
    """The body of a successful answer; a 4xx/5xx raises HttpStatusError with the start of the body."""
    answer = send(ctx, client, request, what, follow_redirects)
    if answer.status >= 400:
        raise ctx.fail(f"{what}: HTTP {answer.status}: {answer.text[:300]}", HttpStatusError, status=answer.status)
    return answer.body


def gunzip(ctx: PullContext, data: bytes, what: str) -> bytes:
    out = io.BytesIO()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            while chunk := gz.read(1 << 20):
                out.write(chunk)
                if out.tell() > min(MAX_UNCOMPRESSED_BYTES, MAX_COMPRESSION_RATIO * len(data) + 10**6):
                    raise ctx.fail(f"{what}: gzip inflates past {out.tell()} bytes: refused as a zip bomb",
                                   FileRejected, data=data)
    except (EOFError, OSError, gzip.BadGzipFile) as exc:
        raise ctx.fail(f"{what}: damaged gzip data ({exc})", FileRejected, data=data) from None
    return out.getvalue()


def write_atomic(path: Path, data: bytes) -> Path:
    """Write beside the target as `.part`, then rename: a folder scan never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with open(partial, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, path)
    return path
