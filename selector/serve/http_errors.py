"""OpenAI-style error bodies: ``{"error": {"message", "type", "param", "code"}}``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import TTSError


@dataclass
class APIError(TTSError):
    """A request the gateway answers with ``status`` and an OpenAI-style error body."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)
