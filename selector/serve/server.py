"""Running the gateway with uvicorn."""
from __future__ import annotations

import uvicorn

from ..router import Router
from .app import ServeConfig, create_app


def make_server(router: Router, config: ServeConfig = ServeConfig(), *, host: str = "127.0.0.1", port: int = 8000,
                log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for the gateway. On SIGINT/SIGTERM it stops accepting connections and
    finishes the requests in flight (no graceful-shutdown timeout) before the batcher stops."""
    app = create_app(router, config)
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                                         timeout_graceful_shutdown=None, lifespan="on"))


def serve(router: Router, config: ServeConfig = ServeConfig(), *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted (blocks)."""
    make_server(router, config, host=host, port=port).run()
