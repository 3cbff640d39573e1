"""Running the gateway with uvicorn."""
from __future__ import annotations

import ipaddress
import socket
import sys

import uvicorn

from ..errors import InputError
from ..routing import Router
from .app import ServeConfig, create_app
from .auth import API_KEY_ENV, resolve_api_key


def make_server(router: Router, config: ServeConfig = ServeConfig(), *, host: str = "127.0.0.1", port: int = 8000,
                log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for the gateway. On SIGINT/SIGTERM it stops accepting connections and
    finishes the requests in flight (no graceful-shutdown timeout) before the batcher stops."""
    app = create_app(router, config)
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                                         timeout_graceful_shutdown=None, lifespan="on"))


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening), or an InputError saying why not: a
    busy port or an address that is not this machine's is the user's to fix (exit 2), and is
    found before any model loads."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"--port must be a TCP port from 0 to 65535, got {port!r}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise InputError(f"--host {host!r} is not an address this machine can listen on ({exc}): use e.g. 127.0.0.1 "
                         "(this machine only) or 0.0.0.0 (every interface)") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart over TIME_WAIT
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}: choose a free --port (or stop what "
                         "listens there), or a --host of this machine") from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(router: Router, config: ServeConfig = ServeConfig(), *, host: str = "127.0.0.1", port: int = 8000,
          sock: socket.socket | None = None) -> None:
    """Serve until interrupted (blocks). ``sock``: a socket from :func:`bind` (else one is bound
    here). Serving beyond this machine without an API key is allowed, and said loudly."""
    key = resolve_api_key(config.api_key)
    if key is None and not _is_loopback(host):
        print(f"WARNING: tts-selector serve is listening on {host}:{port} WITHOUT an API key: anyone who can reach "
              f"this address can send prompts to it and use its compute. Set --api-key or ${API_KEY_ENV}, or bind "
              f"--host 127.0.0.1", file=sys.stderr, flush=True)
    own = sock is None
    sock = bind(host, port) if own else sock
    try:
        server = make_server(router, config, host=host, port=port)
        # uvicorn announces its address only when it binds the socket itself: say it here.
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        print(f"tts-selector serve: listening on http://{shown}:{bound} (Ctrl+C or SIGTERM to stop)", file=sys.stderr,
              flush=True)
        server.run(sockets=[sock])
    finally:
        if own:
            sock.close()
