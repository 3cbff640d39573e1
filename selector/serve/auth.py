"""Optional bearer-token auth, compared in constant time."""
from __future__ import annotations

import hmac
import os

from .http_errors import APIError

API_KEY_ENV = "TTS_SELECTOR_API_KEY"


def resolve_api_key(api_key: str | None) -> str | None:
    """``api_key`` if given, else ``$TTS_SELECTOR_API_KEY``, else None (no auth).

    A key that is empty or only whitespace (``--api-key ""``, an unset variable exported as
    ``TTS_SELECTOR_API_KEY=``) is an InputError, not "no auth": a gateway must never fail open
    because a key went missing on the way."""
    from ..errors import InputError

    where = "--api-key" if api_key is not None else f"${API_KEY_ENV}"
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip():
        raise InputError(f"{where} is empty: give a real key (e.g. `openssl rand -hex 16`), or unset it to serve without "
                         "auth (on 127.0.0.1 only is wise)")
    if key != key.strip() or any(not c.isprintable() for c in key):
        raise InputError(f"{where} has surrounding whitespace or unprintable characters: clients send the key in an "
                         "HTTP header, so give it without them")
    return key


def check_bearer(authorization: str | None, api_key: str | None) -> None:
    """Raise a 401 unless ``authorization`` is ``Bearer <api_key>`` (no-op without a key)."""
    if api_key is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "invalid or missing API key: send 'Authorization: Bearer <key>' with the server's --api-key",
                       "authentication_error", None, "invalid_api_key")
