"""Optional bearer-token auth, compared in constant time."""
from __future__ import annotations

import hmac
import os

from .errors import APIError

API_KEY_ENV = "TTS_SELECTOR_API_KEY"


def resolve_api_key(api_key: str | None) -> str | None:
    """``api_key`` if given, else ``$TTS_SELECTOR_API_KEY``, else None (no auth)."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    return key or None


def check_bearer(authorization: str | None, api_key: str | None) -> None:
    """Raise a 401 unless ``authorization`` is ``Bearer <api_key>`` (no-op without a key)."""
    if api_key is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "invalid or missing API key: send 'Authorization: Bearer <key>' with the server's --api-key",
                       "authentication_error", None, "invalid_api_key")
