"""Local fake platform servers (127.0.0.1, random port) that speak the real API shapes.

Only the outermost seam is faked: our pullers reach these through their configured
`api_base`, exactly as they reach the real platforms. Each fake records the requests it
saw and can be told to answer the next requests to a path with given error statuses.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    raw_query: str = ""

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data, headers: dict | None = None) -> "Reply":
        return cls(status, json.dumps(data, ensure_ascii=False).encode(), {"Content-Type": "application/json", **(headers or {})})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that timed out and left: fine
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class FakeServer:
    """Subclasses implement `handle(seen) -> Reply`."""

    def __init__(self):
        self.seen: list[Seen] = []
        self._failures: dict[str, list[int]] = {}
        self._delays: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()},
                            {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length), parts.query)
                reply = fake._dispatch(seen)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = _serve

            def log_message(self, *args):  # quiet
                pass

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def fail_next(self, path: str, *statuses: int) -> None:
        """Answer the next requests to `path` with these statuses (then serve normally)."""
        self._failures.setdefault(path, []).extend(statuses)

    def slow_next(self, path: str, *seconds: float) -> None:
        """Let the next requests to `path` wait this long before answering (timeouts)."""
        self._delays.setdefault(path, []).extend(seconds)

    def calls(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def _dispatch(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            delays = self._delays.get(seen.path)
            delay = delays.pop(0) if delays else 0.0
            pending = self._failures.get(seen.path)
            status = pending.pop(0) if pending else None
        time.sleep(delay)
        if status is not None:
            return Reply.json(status, {"code": "SYSTEM_ERROR", "message": f"fake {status}"})
        return self.handle(seen)

    def handle(self, seen: Seen) -> Reply:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
