"""The ASGI application of `farmctl serve` (Starlette): ingest API, health, dashboard.

POST /record, POST /records   the kinesis_api_gw contract (contract.py, openapi.json), answered
                              by ingest.py in front of Starlette
GET  /healthz                 stream and delivery health (200 healthy, 503 not)
GET  /openapi.json            the contract, as kept in the repository
GET  /                        the live dashboard (static page + vendored uPlot)
GET  /api/latest|trend|spikes the dashboard's data: the CLI's queries (LocalTarget.latest,
                              .trend, .spikes over core.queries) plus the live stream tail
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..core.jsonlog import log as jsonlog
from . import contract
from .ingest import IngestEndpoint
from .keys import KeyRing
from .pipeline import DeliveryLoop, DeliveryOptions, LiveBoard, RateLimiter, Writer

log = logging.getLogger("smartfarm.serve")
PACKAGE = resources.files("smartfarm_cli.serve")
UNHEALTHY_DELIVERY_S = 60.0  # no successful delivery pass for this long -> unhealthy


@dataclass
class Settings:
    home: Path
    api_key: KeyRing  # the keys devices may send (keys.py)
    rules_path: str | None = None
    rate_limit: float = 50.0  # requests/s per key, as the usage plan's default
    burst_limit: int = 100
    flush_rows: int = 5_000
    flush_age_s: float = 10.0
    delivery_tick_s: float = 0.5
    body_timeout_s: float = 10.0
    alerts: bool = True
    fsync: bool = True  # fsync each stream commit before answering 200
    access_log: bool = True


class Pipeline:
    """The writer, the delivery loop and the live board of one server."""

    def __init__(self, settings: Settings):
        from ..core.rules import load_rules

        self.settings = settings
        self.rules = load_rules(settings.rules_path)
        self.writer = Writer(self._target, self._stored, settings.fsync)
        if settings.alerts:  # a malformed webhook URL: one clear line now, not a dying child
            from ..alerting import resolve_webhook

            resolve_webhook()
        self.delivery = DeliveryLoop(
            DeliveryOptions(
                str(settings.home),
                settings.rules_path,
                settings.flush_rows,
                settings.flush_age_s,
                settings.delivery_tick_s,
                settings.alerts,
            )
        )
        self.board = LiveBoard(self._target)
        self.sequence = contract.SequenceNumbers()
        self.limiter = RateLimiter(settings.rate_limit, settings.burst_limit)
        self.accepted = 0
        self.started = time.time()

    def _target(self):
        from ..targets.local import LocalTarget

        return LocalTarget(
            self.settings.home,
            self.rules,
            flush_rows=self.settings.flush_rows,
            flush_age_s=self.settings.flush_age_s,
        )

    def _stored(self, count: int) -> None:
        self.accepted += count

    def start(self) -> None:
        self.writer.start()
        self.delivery.start()
        self.board.start()

    def stop(self) -> None:
        """Finish every accepted request, deliver everything, then stop."""
        self.writer.close()
        self.delivery.stop()
        self.board.stop()

    def health(self) -> tuple[bool, dict]:
        now = time.time()
        writer, delivery = self.writer, self.delivery
        stream_ok = writer.last_error is None
        delivery_ok = delivery.last_error is None and now - delivery.last_run < UNHEALTHY_DELIVERY_S
        body = {
            "status": "ok" if stream_ok and delivery_ok else "unhealthy",
            "stream": {
                "writable": stream_ok,
                "queued_readings": writer.queued,
                "commits": writer.commits,
                "last_error": writer.last_error,
            },
            "delivery": {
                "healthy": delivery_ok,
                "pending_readings": delivery.pending,
                "seconds_since_last_pass": round(now - delivery.last_run, 1),
                "delivered_readings": delivery.delivered,
                "process_restarts": delivery.restarts,
                "spikes": delivery.spikes,
                "last_error": delivery.last_error,
            },
            "uptime_s": round(now - self.started, 1),
        }
        return stream_ok and delivery_ok, body


def _json(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), default=_default),
        status,
        headers,
        media_type="application/json",
    )


def _default(value):
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value)


def _refuse(exc: contract.ContractError) -> Response:
    return _json(exc.body, exc.status, exc.headers)


def create_app(settings: Settings, pipeline: Pipeline | None = None) -> Starlette:
    pipeline = pipeline or Pipeline(settings)
    key = settings.api_key

    async def healthz(request: Request) -> Response:
        ok, body = pipeline.health()
        return _json(body, 200 if ok else 503)

    async def openapi(request: Request) -> Response:
        return FileResponse(str(PACKAGE / "openapi.json"), media_type="application/json")

    async def index(request: Request) -> Response:
        return FileResponse(str(PACKAGE / "static" / "index.html"), media_type="text/html")

    def _query_target():
        from ..targets.local import LocalTarget

        return LocalTarget(settings.home, pipeline.rules)

    async def api_latest(request: Request) -> Response:
        from .dashboard import latest_rows

        rows = await run_in_threadpool(latest_rows, _query_target(), pipeline.board.rows())
        return _json({"devices": rows})

    async def api_trend(request: Request) -> Response:
        from .dashboard import trend_rows

        params = request.query_params
        rows = await run_in_threadpool(
            trend_rows,
            _query_target(),
            params.get("metric", "temperature"),
            params.get("days", "7"),
            params.get("every"),
            params.get("greenhouse"),
        )
        return _json(rows)

    async def api_spikes(request: Request) -> Response:
        from .dashboard import spike_rows

        params = request.query_params
        rows = await run_in_threadpool(
            spike_rows,
            _query_target(),
            params.get("since", "24h"),
            params.get("severity"),
            params.get("limit", "50"),
        )
        return _json(rows)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        if request.method not in ("GET", "HEAD") or request.url.path in contract.ROUTES:
            return _refuse(contract.missing_route())
        return _json({"message": "Not Found"}, 404)

    async def bad_query(request: Request, exc: Exception) -> Response:
        return _json({"message": str(exc)}, 400)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        pipeline.start()
        try:
            yield
        finally:
            await run_in_threadpool(pipeline.stop)
            key.flush()  # the keys' last-used times collected since the last write
            jsonlog(
                "INFO",
                "shutdown",
                accepted=pipeline.accepted,
                delivered=pipeline.delivery.delivered,
                final_flush=pipeline.delivery.final_readings,
                pending=pipeline.delivery.pending,
            )

    from ..core.queries import QueryError

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/", index, methods=["GET"]),
        Route("/api/latest", api_latest, methods=["GET"]),
        Route("/api/trend", api_trend, methods=["GET"]),
        Route("/api/spikes", api_spikes, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(PACKAGE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_found, QueryError: bad_query},
    )
    app.state.pipeline = pipeline
    # POST /record(s) is answered in front of Starlette (ingest.py: the hot path).
    wrapped = IngestEndpoint(app, pipeline, key, settings.body_timeout_s)
    return AccessLog(wrapped) if settings.access_log else wrapped


class AccessLog:
    """One JSON line per request: no body, no header values, never the key."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen = {"status": 0, "bytes": 0}

        async def sending(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client") or ("-", 0)
            jsonlog(
                "INFO",
                "access",
                time=datetime.now(UTC).isoformat(timespec="milliseconds"),
                client=client[0],
                method=scope["method"],
                path=scope["path"][:200],
                status=seen["status"],
                bytes=seen["bytes"],
                ms=round((time.perf_counter() - started) * 1000, 2),
                **scope.get("smartfarm", {}),
            )

    def __getattr__(self, name):
        return getattr(self.app, name)
