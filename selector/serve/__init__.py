"""``tts-selector serve``: an OpenAI-compatible gateway that routes every request through the tables."""
from .app import ServeConfig, create_app
from .auth import API_KEY_ENV
from .http_errors import APIError
from .server import make_server, serve

__all__ = ["API_KEY_ENV", "APIError", "ServeConfig", "create_app", "make_server", "serve"]
