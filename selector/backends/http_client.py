"""JSON over HTTP for the server backends: pooled ``httpx`` clients with a hard deadline.

- **One client per server root**, kept for the process and shared by every thread (an
  ``httpx.Client`` is thread-safe): keep-alive connections are reused, so a fleet profile's
  thousands of requests do not open thousands of connections.
- **A total deadline per request.** httpx's timeouts bound each socket operation, so a server
  that trickles a byte every 2 s never trips a 3 s read timeout. Our transport's network
  streams clip every connect/read/write timeout to what is left of the request's deadline
  (set for the calling thread by :func:`post_json`), so the request fails at ``timeout``
  seconds whatever the server does; bodies over :data:`MAX_RESPONSE_BYTES` are refused.
- **Retries** (:func:`post_json`): connection errors, timeouts, HTTP 408, 429 and 5xx only.
- No proxies or credentials from the environment (``trust_env=False``): requests go only to
  the URL the user named.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Sequence

import httpcore
import httpx

_RETRY_STATUS = frozenset({408, 429})  # plus every 5xx
#: The largest response body accepted (bytes); a completions answer is far smaller.
MAX_RESPONSE_BYTES = 64 << 20
#: Connections kept per server root (requests beyond it wait for a free one).
MAX_CONNECTIONS = 256

_deadline = threading.local()  # .at: time.monotonic() deadline of this thread's request


def _clip(timeout: float | None) -> float:
    at = getattr(_deadline, "at", None)
    if at is None:
        return timeout  # type: ignore[return-value]
    left = at - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the request's total deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clip(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clip(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None):
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _clip(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(host, port, _clip(timeout), local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None):
        return _DeadlineStream(self._inner.connect_unix_socket(path, _clip(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool whose streams honour the thread's deadline."""

    def __init__(self) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_CONNECTIONS,
            keepalive_expiry=30.0,
            network_backend=_DeadlineBackend(),
        )


_clients: dict[str, httpx.Client] = {}
_clients_lock = threading.Lock()


def client_for(base: str) -> httpx.Client:
    """The process's shared ``httpx.Client`` for the server root ``base``."""
    c = _clients.get(base)
    if c is None:
        with _clients_lock:
            c = _clients.get(base)
            if c is None:
                c = _clients[base] = httpx.Client(transport=_DeadlineTransport(), trust_env=False, follow_redirects=False)
    return c


class _Retryable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def post_json(
    base_urls: Sequence[str],
    path: str,
    payload: bytes,
    *,
    slot: int,
    timeout: float,
    retries: int,
    backoff: float,
    api_key: str | None,
    error: type[Exception],
    client_error: Callable[[str, int, str], Exception | None] | None = None,
) -> tuple[Any, str]:
    """POST a JSON ``payload`` to ``{base}{path}`` and return ``(decoded JSON, base)``.

    Attempt ``k`` goes to ``base_urls[(slot + k) % len]`` (a retry moves on to the next
    server). Each attempt has a total deadline of ``timeout`` seconds (connect, send, wait
    and read together). Connection errors, timeouts, HTTP 408, 429 and 5xx are retried
    ``retries`` times after ``backoff * 2**k`` seconds; then ``error`` is raised with the last
    reason, the attempt count and a fix. Other 4xx fail at once: with the exception
    ``client_error(url, status, message)`` returns, else ``error`` naming the status. A body
    that is not JSON raises ``error`` at once.
    """
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    last = ""
    for attempt in range(retries + 1):
        base = base_urls[(slot + attempt) % len(base_urls)]
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            return _send_json(base, path, payload, headers, timeout, error, client_error), base
        except _Retryable as e:
            last = e.message
    raise error(
        f"{last} (gave up after {retries + 1} attempts). Check that the server is up and healthy, "
        "or raise the policy's timeout=/retries= (e.g. openai:...,timeout=120)."
    )


def _send_json(
    base: str,
    path: str,
    payload: bytes,
    headers: dict,
    timeout: float,
    error: type[Exception],
    client_error: Callable[[str, int, str], Exception | None] | None,
) -> Any:
    url = f"{base}{path}"
    _deadline.at = time.monotonic() + timeout
    try:
        with client_for(base).stream("POST", url, content=payload, headers=headers, timeout=timeout) as resp:
            raw = bytearray()
            for chunk in resp.iter_bytes():
                raw += chunk
                if len(raw) > MAX_RESPONSE_BYTES:
                    raise error(
                        f"server at {url} sent a response over {MAX_RESPONSE_BYTES >> 20} MiB; "
                        "check that the URL is an OpenAI-compatible completions server"
                    )
            status = resp.status_code
    except httpx.TimeoutException:
        raise _Retryable(f"request to {url} timed out after {timeout:g}s") from None
    except httpx.ConnectError as e:
        raise _Retryable(f"could not connect to {url}: {e}") from None
    except (httpx.TransportError, OSError) as e:  # resets, remote protocol errors, ...
        raise _Retryable(f"connection to {url} failed: {type(e).__name__}: {e}") from None
    except httpx.HTTPError as e:  # anything else httpx raises (invalid URL, ...)
        raise error(f"request to {url} failed: {type(e).__name__}: {e}; check the server URL") from None
    finally:
        _deadline.at = None
    if status >= 400:
        message = _error_message(raw.decode("utf-8", "replace"))
        if status >= 500 or status in _RETRY_STATUS:
            raise _Retryable(f"server at {url} answered HTTP {status}: {message}")
        specific = client_error(url, status, message) if client_error is not None else None
        if specific is not None:
            raise specific
        raise error(f"server at {url} rejected the request with HTTP {status}: {message}; check the URL, model name and API key")
    try:
        return json.loads(raw)
    except ValueError:
        raise error(
            f"server at {url} answered with invalid JSON: {bytes(raw[:200])!r}; check that the URL is an "
            "OpenAI-compatible server (vllm serve, SGLang, llama.cpp's server)"
        ) from None


def _error_message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:500] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err
            return str(msg)[:500]
        if isinstance(err, str):
            return err[:500]
        if "detail" in data:
            return str(data["detail"])[:500]
    return str(data)[:500]
