"""uvicorn's httptools protocol with the two guards it lacks: header size and header time.

uvicorn bounds idle keep-alive connections and the number of connections, but neither how long
a client may take to send its request line and headers (a slow-loris client holds a connection
for ever) nor how large they may be (httptools buffers any amount). Here:

- request line + headers larger than contract.MAX_HEADER_BYTES (API Gateway's 10 KiB) -> 431
  (one header line that never ends: 431 once twice that much has arrived);
- request line + headers not complete within HEADER_TIMEOUT_S of the request's first byte (or
  of the connection, for the first request) -> 408, connection closed.
The body has its own limit and timeout in ingest.py.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import contract

HEADER_TIMEOUT_S = 10.0


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    return head + body


TOO_LARGE = _raw_response(
    431,
    "Request Header Fields Too Large",
    f"request line and headers may be at most {contract.MAX_HEADER_BYTES} bytes",
)
TOO_SLOW = _raw_response(408, "Request Timeout", "the request headers did not arrive in time")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s = HEADER_TIMEOUT_S
    max_header_bytes = contract.MAX_HEADER_BYTES

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._header_bytes = 0
        self._raw_bytes = 0
        self._oversize = False
        self._header_timer = None
        self._arm()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(TOO_SLOW)
            self.transport.close()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._oversize = True
            raise ValueError("headers too large")  # httptools stops; send_400_response follows

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # httptools hands a header over only once the next one starts: count raw bytes too,
        # so one endless header line cannot grow without bound.
        if self._header_timer is not None and not self.transport.is_closing():
            self._raw_bytes += len(data)
            if self._raw_bytes > 2 * self.max_header_bytes:
                self._oversize = True
                self.send_400_response("headers too large")

    def send_400_response(self, msg: str) -> None:
        if self._oversize:
            self._disarm()
            self.transport.write(TOO_LARGE)
            self.transport.close()
            return
        super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._raw_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)
