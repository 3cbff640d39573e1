"""Request models of the OpenAI-compatible endpoints (pydantic), and the ``tts`` overrides.

Only what routing uses is typed; other OpenAI fields (``temperature``, ``max_tokens``, ...) are
accepted and ignored: the table's strategy was profiled with the table's sampling settings,
so a per-request temperature would route by measurements that no longer apply.
"""
from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict, Field


class TTSOptions(BaseModel):
    """Per-request overrides (``extra_body={"tts": {...}}`` in the openai client)."""

    model_config = ConfigDict(extra="forbid")

    budget: int | None = Field(None, description="budget N (generations per round) to route at")
    strategy: str | None = Field(None, description="force this strategy: routing is bypassed")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    stream: bool = False
    n: int = 1
    seed: int | None = None
    tts: TTSOptions | None = None


class ChatCompletionRequest(_Base):
    messages: list[ChatMessage] = Field(..., min_length=1)

    def question(self) -> str:
        """The last user message: the question routed and solved (system and earlier turns are not read)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""


class CompletionRequest(_Base):
    prompt: Union[str, list[str]]

    def questions(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
