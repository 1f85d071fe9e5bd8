"""Start `farmctl serve`: bind, warn where the defaults are left, run uvicorn until a signal.

uvicorn handles SIGINT / SIGTERM: it stops accepting connections, lets the requests in flight
finish (each gets its answer after its readings are in the stream), then runs the app's
lifespan shutdown, which drains the writer and delivers everything to the lake.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

from ..errors import UserError

MAX_CONNECTIONS = 1000  # beyond this uvicorn answers 503 at once
KEEP_ALIVE_S = 5
GRACEFUL_S = 30


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"cannot resolve --host {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def check_tls(certfile: Path | None, keyfile: Path | None) -> None:
    if (certfile is None) != (keyfile is None):
        raise UserError("give both --certfile and --keyfile for TLS, or neither")
    for path in (certfile, keyfile):
        if path is not None and not path.is_file():
            raise UserError(f"no such file: {path}")


def serve(
    app,
    host: str,
    port: int,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    client_timeout_s: float = 10.0,
    say=lambda line: print(line, file=sys.stderr, flush=True),
) -> None:
    import uvicorn

    from .protocol import GuardedHttpToolsProtocol

    protocol = type(
        "ServeProtocol", (GuardedHttpToolsProtocol,), {"header_timeout_s": client_timeout_s}
    )

    check_tls(certfile, keyfile)
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    scheme = "https" if certfile else "http"
    shown = f"[{host}]" if ":" in host else host
    say(f"farmctl serve: listening on {scheme}://{shown}:{bound_port} (Ctrl-C or SIGTERM stops)")
    if not is_loopback(host):
        say(
            f"warning: --host {host} accepts connections from other machines; the API key is the "
            "only guard on POST /record(s), and the dashboard at / is readable without it"
            + ("" if certfile else "; TLS is off (give --certfile and --keyfile to turn it on)")
        )
    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,  # the app writes its own structured access log
        log_level="warning",
        server_header=False,
        date_header=True,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_S,
        http=protocol,  # httptools plus header size and header time limits
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
