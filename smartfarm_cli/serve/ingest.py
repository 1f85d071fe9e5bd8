"""POST /record and POST /records as a plain ASGI endpoint (the hot path).

The rest of the server is a Starlette app; the two ingest routes are answered here, in front of
it, without Starlette's request, routing and middleware objects: a device POST is the one
request a farm sends thousands of times a second, and those layers cost more per request than
the contract checks themselves (bench/serve_bench.py, P13). The contract lives in contract.py.
"""

from __future__ import annotations

import asyncio
import json

from . import contract
from .pipeline import StreamBusy, StreamClosed

JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientGone(Exception):
    """The client disconnected before its body arrived."""


class IngestEndpoint:
    def __init__(self, app, pipeline, keys, body_timeout_s: float):
        self.app = app
        self.pipeline = pipeline
        self.keys = keys
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in contract.ROUTES
        ):
            await self.app(scope, receive, send)
            return
        try:
            status, body, extra = await self._handle(scope, receive)
        except ClientGone:
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *JSON_HEADERS,
                    (b"content-length", str(len(body)).encode()),
                    *((k.lower().encode(), v.encode()) for k, v in extra.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope, receive) -> tuple[int, bytes, dict]:
        route = scope["path"]
        key = content_type = length = key_id = None
        for name, value in scope["headers"]:
            if name == b"x-api-key" and key is None:
                key = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                length = value
        pipeline = self.pipeline
        try:
            key_id = self.keys.match(key)
            if key_id is None:
                raise contract.forbidden()
            wait = pipeline.limiter.take(key_id)  # the usage plan's throttle is per key
            if wait:
                raise contract.too_many_requests(wait)
            contract.check_media_type(content_type)
            body = await self._body(receive, length)
            readings = contract.parse(route, body)
            try:
                future = pipeline.writer.submit(readings, asyncio.get_running_loop())
            except StreamBusy:  # what error_response.vtl makes of Kinesis throttling: 429
                raise contract.stream_error(
                    429, "ProvisionedThroughputExceededException", "the stream is busy", 1
                ) from None
            except StreamClosed:
                raise contract.stream_error(
                    503, "ServiceUnavailable", "the server is shutting down", 5
                ) from None
            try:
                outcome = await future
            except Exception as exc:
                reason = f"the stream cannot take writes ({type(exc).__name__})"
                raise contract.stream_error(503, "ServiceUnavailable", reason, 5) from None
        except contract.ContractError as exc:
            scope["smartfarm"] = {"refused": exc.body.get("message")}
            if key_id is not None:
                scope["smartfarm"]["key_id"] = key_id
            return exc.status, _dump(exc.body), exc.headers
        scope["smartfarm"] = {
            "readings": len(readings),
            "rejected": len(outcome.rejected),
            "key_id": key_id,  # as API Gateway's access log has apiKeyId: the id, never the key
        }
        answer = contract.answer(route, pipeline.sequence.take(len(readings)))
        return 200, _dump(answer), {"X-Smartfarm-Rejected": str(len(outcome.rejected))}

    async def _body(self, receive, length: bytes | None) -> bytes:
        """At most MAX_BODY_BYTES, arriving within the timeout (slow clients get 408)."""
        if length is not None:
            if not length.isdigit():
                raise contract.ContractError(400, {"message": "Content-Length is not a number"})
            if int(length) > contract.MAX_BODY_BYTES:
                raise contract.too_large()
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone()
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > contract.MAX_BODY_BYTES:  # chunked bodies: counted as they come
                        raise contract.too_large()
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise contract.ContractError(
                408, {"message": f"the body did not arrive within {self.body_timeout_s:g} s"}
            ) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _dump(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
