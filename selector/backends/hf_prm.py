"""A :class:`~selector.backends.base.PRM` on Hugging Face ``transformers`` process reward models.

:class:`HFPRM` scores every step of a solution in **one forward pass**. How a model family
wants its input laid out, where its step scores are read and how logits become probabilities is
its *step protocol*: a typed :class:`StepProtocol` entry in :data:`PROTOCOLS`, chosen by name
(``protocol=``), never guessed from the model's name.

Protocols (steps are stripped of surrounding whitespace first, as the models were trained on
steps split at blank lines):

* ``"qwen25-math-prm"`` (Qwen2.5-Math-PRM): chat template with the entry's system prompt, the
  question as the user turn, and the steps as the assistant turn, each step followed by the
  separator token ``<extra_0>``. The model is a 2-class token-classification head; a step's
  score is ``softmax(logits at its separator)[1]``. The real checkpoint ships its own model class
  and needs ``trust_remote_code=True`` (then loaded with ``AutoModel``); it is only passed when
  you set it. Without it the model is loaded with ``AutoModelForTokenClassification``
  (``num_labels=2``).
* ``"math-shepherd"`` (peiyi9979/math-shepherd-mistral-7b-prm): plain text
  ``question + " " + "\\n".join(step + " ки")``, a causal LM; a step's score is
  ``softmax([logit(plus_token), logit(minus_token)])[0]`` read at the last token of its
  ``ки`` tag.
* ``"rlhflow"`` (RLHFlow/Llama3.1-8B-PRM-*): a conversation in which each step is a user turn
  (the first one ``question + " " + step``) and each is answered by an assistant ``plus_token``
  turn, as in training; the whole conversation is one sequence. A step's score is ``P(plus)``
  among ``{plus, minus}`` read at the position that predicts that step's assistant token.

``plus_token`` / ``minus_token`` are tokenizer vocabulary entries (or strings that encode to a
single token). Check them against the model card: math-shepherd's reference code takes the
ids of ``tokenizer.encode("+ -")[1:]``.

Scoring sorts requests by input length and runs chunks of ``max_batch_size`` rows with right
padding and an explicit attention mask, under ``torch.inference_mode()``; results do not
depend on batch composition (up to float rounding). ``num_tokens`` is the length of the
request's input sequence. Everything is read from local files only (``local_files_only``,
``use_safetensors``); the model loads lazily (thread-safe) on first use or :meth:`HFPRM.load`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from ..threads import configure_threads

configure_threads()  # before torch loads OpenMP: yield instead of spin (see selector/threads.py)
import torch  # noqa: E402

from .base import ScoreOutput, ScoreRequest
from .hf_common import (
    DTYPES, check_batch_size, count_parameters, count_parameters_from_config, load_progress, parse_device, parse_dtype,
)

__all__ = [
    "HFPRM", "StepProtocol", "PROTOCOLS", "TokenIds", "resolve_protocol", "check_candidate_tokens",
    "load_protocol_tokenizer", "protocol_auto_class", "build_protocol_inputs",
]

log = logging.getLogger(__name__)


QWEN_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclasses.dataclass(frozen=True)
class TokenIds:
    """The token ids a protocol needs, resolved once from the tokenizer at load time."""

    separator: int | None
    plus: int | None
    minus: int | None
    plus_text: str | None = None  # the assistant's answer in the rlhflow conversation


BuildInputs = Callable[["StepProtocol", str, tuple[str, ...], Any, TokenIds], tuple[list[int], list[int]]]
ToProbabilities = Callable[[torch.Tensor, TokenIds], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class StepProtocol:
    """One model family's step protocol.

    ``build_inputs(protocol, question, steps, tokenizer, ids)`` returns the input token ids and
    one score position per step (indices into those ids). ``to_probabilities(logits, ids)`` maps
    the logits at those positions (``[n_steps, vocab or classes]``, float32) to ``[n_steps]``
    probabilities in [0, 1].
    """

    name: str
    description: str
    model_kind: Literal["token_classification", "causal_lm"]
    build_inputs: BuildInputs
    to_probabilities: ToProbabilities
    separator: str | None = None  # a token the tokenizer must have (e.g. "<extra_0>", "ки")
    uses_candidates: bool = False  # reads the plus/minus token logits
    needs_chat_template: bool = False
    system_prompt: str | None = None


# ---------------------------------------------------------------------------- protocols
def _clean(steps: tuple[str, ...]) -> list[str]:
    return [s.strip() for s in steps]


def _token_at_char(offsets: Sequence[tuple[int, int]], char: int) -> int:
    """Index of the token whose character span holds character ``char``."""
    for k, (start, end) in enumerate(offsets):
        if start <= char < end:
            return k
    raise ValueError(
        f"no token covers character {char} of the PRM input (the tokenizer dropped or normalized "
        "it); this tokenizer does not fit the protocol"
    )


def _build_qwen(p: StepProtocol, question: str, steps: tuple[str, ...], tok: Any, ids: TokenIds):
    sep = p.separator
    assert sep is not None and ids.separator is not None
    cleaned = _clean(steps)
    if any(sep in s for s in cleaned) or sep in question:
        raise ValueError(f"the question or a step contains the separator {sep!r}; remove it before scoring")
    messages = []
    if p.system_prompt is not None:
        messages.append({"role": "system", "content": p.system_prompt})
    messages.append({"role": "user", "content": question})
    messages.append({"role": "assistant", "content": "".join(s + sep for s in cleaned)})
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    input_ids = tok(text, add_special_tokens=False)["input_ids"]
    positions = [k for k, t in enumerate(input_ids) if t == ids.separator]
    if len(positions) != len(steps):
        raise ValueError(
            f"found {len(positions)} separator tokens {sep!r} in the PRM input for {len(steps)} steps; "
            "the chat template or tokenizer does not keep the separator as one token"
        )
    return input_ids, positions


def _build_shepherd(p: StepProtocol, question: str, steps: tuple[str, ...], tok: Any, ids: TokenIds):
    tag = p.separator
    assert tag is not None
    text = question + " "
    tag_ends: list[int] = []
    for k, step in enumerate(_clean(steps)):
        if k:
            text += "\n"
        text += step + " " + tag
        tag_ends.append(len(text) - 1)  # the tag's last character
    enc = tok(text, add_special_tokens=True, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    return list(enc["input_ids"]), [_token_at_char(offsets, c) for c in tag_ends]


def _build_rlhflow(p: StepProtocol, question: str, steps: tuple[str, ...], tok: Any, ids: TokenIds):
    plus_text = ids.plus_text
    assert plus_text is not None
    conversation: list[dict[str, str]] = []
    answer_chars: list[int] = []
    for k, step in enumerate(_clean(steps)):
        conversation.append({"role": "user", "content": f"{question} {step}" if k == 0 else step})
        prompt = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        answer_chars.append(len(prompt))  # the assistant's token starts here
        conversation.append({"role": "assistant", "content": plus_text})
    text = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
    for k, char in enumerate(answer_chars):
        if not text.startswith(plus_text, char):
            raise ValueError(
                f"the chat template does not render the conversation as a continuation of its "
                f"generation prompt (step {k}); the 'rlhflow' protocol needs a template whose "
                "assistant turn starts right after add_generation_prompt's text"
            )
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    positions = []
    for char in answer_chars:
        answer = _token_at_char(offsets, char)
        if answer == 0:
            raise ValueError("the assistant token is the first token of the input; nothing predicts it")
        positions.append(answer - 1)  # the position whose logits predict the assistant token
    return list(enc["input_ids"]), positions


def _probs_positive_class(logits: torch.Tensor, ids: TokenIds) -> torch.Tensor:
    if logits.shape[-1] != 2:
        raise ValueError(
            f"the model's head has {logits.shape[-1]} classes; the 'qwen25-math-prm' protocol needs 2 "
            "(negative, positive)"
        )
    return logits.softmax(dim=-1)[:, 1]


def _probs_plus_minus(logits: torch.Tensor, ids: TokenIds) -> torch.Tensor:
    pair = logits[:, [ids.plus, ids.minus]]
    return pair.softmax(dim=-1)[:, 0]


PROTOCOLS: dict[str, StepProtocol] = {
    "qwen25-math-prm": StepProtocol(
        name="qwen25-math-prm",
        description="Qwen2.5-Math-PRM: steps in the assistant turn, each followed by <extra_0>; "
        "2-class head, P(class 1) at each separator",
        model_kind="token_classification",
        build_inputs=_build_qwen,
        to_probabilities=_probs_positive_class,
        separator="<extra_0>",
        needs_chat_template=True,
        system_prompt=QWEN_SYSTEM_PROMPT,
    ),
    "math-shepherd": StepProtocol(
        name="math-shepherd",
        description="Math-Shepherd: 'question step1 ки\\nstep2 ки...'; causal LM, "
        "softmax(logit(+), logit(-))[0] at each tag",
        model_kind="causal_lm",
        build_inputs=_build_shepherd,
        to_probabilities=_probs_plus_minus,
        separator="ки",
        uses_candidates=True,
    ),
    "rlhflow": StepProtocol(
        name="rlhflow",
        description="RLHFlow PRM: each step a user turn answered '+' by the assistant; causal LM, "
        "P(+) among {+,-} at the position predicting each assistant token",
        model_kind="causal_lm",
        build_inputs=_build_rlhflow,
        to_probabilities=_probs_plus_minus,
        uses_candidates=True,
        needs_chat_template=True,
    ),
}



def resolve_protocol(protocol: Any) -> StepProtocol:
    """The :data:`PROTOCOLS` entry named ``protocol``, or a ValueError listing the known ones."""
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise ValueError(
            f"unknown PRM protocol {protocol!r}; known protocols: {sorted(PROTOCOLS)}. The protocol "
            "is never guessed from the model name: pass the one the checkpoint was trained with."
        )
    return PROTOCOLS[protocol]


def check_candidate_tokens(plus_token: Any, minus_token: Any) -> tuple[str, str]:
    for name, value in (("plus_token", plus_token), ("minus_token", minus_token)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    if plus_token == minus_token:
        raise ValueError(f"plus_token and minus_token must differ, both are {plus_token!r}")
    return plus_token, minus_token


def protocol_auto_class(protocol: StepProtocol, trust_remote_code: bool) -> Any:
    """The ``transformers`` auto class that builds this protocol's model."""
    import transformers

    if protocol.model_kind == "causal_lm":
        return transformers.AutoModelForCausalLM
    # The real Qwen2.5-Math-PRM registers its own class under AutoModel (remote code).
    return transformers.AutoModel if trust_remote_code else transformers.AutoModelForTokenClassification


def load_protocol_tokenizer(
    protocol: StepProtocol,
    source: str | os.PathLike,
    *,
    plus_token: str = "+",
    minus_token: str = "-",
    trust_remote_code: bool = False,
) -> tuple[Any, TokenIds]:
    """Load the tokenizer in ``source`` (local files only) and resolve the token ids ``protocol``
    needs; errors name what the tokenizer lacks."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(source), local_files_only=True, trust_remote_code=trust_remote_code)
    p = protocol
    if not getattr(tok, "is_fast", False) and p.name != "qwen25-math-prm":
        raise ValueError(
            f"protocol {p.name!r} needs a fast tokenizer (character offsets); {str(source)!r} gave "
            f"{type(tok).__name__}. Provide a tokenizer.json."
        )
    if p.needs_chat_template and not getattr(tok, "chat_template", None):
        raise ValueError(
            f"protocol {p.name!r} needs a chat template but the tokenizer in {str(source)!r} has none; "
            "pass tokenizer= the PRM's own tokenizer directory"
        )
    sep = _resolve_token(tok, p.separator, "separator", p.name) if p.separator else None
    if p.separator and p.model_kind == "token_classification" and p.separator not in tok.get_vocab():
        raise ValueError(
            f"the tokenizer has no separator token {p.separator!r} (protocol {p.name!r}); use the "
            "PRM's own tokenizer"
        )
    plus = minus = None
    if p.uses_candidates:
        plus = _resolve_token(tok, plus_token, "plus token", p.name)
        minus = _resolve_token(tok, minus_token, "minus token", p.name)
        if plus == minus:
            raise ValueError(f"plus_token {plus_token!r} and minus_token {minus_token!r} are one token")
    return tok, TokenIds(separator=sep, plus=plus, minus=minus, plus_text=plus_token)


def build_protocol_inputs(
    protocol: StepProtocol, tokenizer: Any, ids: TokenIds, request: ScoreRequest
) -> tuple[list[int], list[int]]:
    """The input token ids of one request and its score positions (one per step, ascending)."""
    input_ids, positions = protocol.build_inputs(protocol, request.question, tuple(request.steps), tokenizer, ids)
    if len(positions) != len(request.steps):
        raise AssertionError(f"protocol {protocol.name!r} gave {len(positions)} positions for {len(request.steps)} steps")
    return input_ids, positions


def _resolve_token(tokenizer: Any, token: str, role: str, protocol: str) -> int:
    """The id of ``token``: a vocabulary entry, or a string that encodes to exactly one token."""
    vocab = tokenizer.get_vocab()
    if token in vocab:
        return int(vocab[token])
    encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(encoded) == 1 and encoded[0] != tokenizer.unk_token_id:
        return int(encoded[0])
    raise ValueError(
        f"the tokenizer has no token {token!r} (the {role} of protocol {protocol!r}): it encodes to "
        f"{len(encoded)} tokens {encoded}. Use the tokenizer that belongs to this PRM, or pass the "
        "vocabulary entry that stands for it" + (" (plus_token= / minus_token=)." if role != "separator" else ".")
    )


# ---------------------------------------------------------------------------- the engine
class HFPRM:
    """A local ``transformers`` process reward model (see the module docstring).

    Args:
        model: a local Hugging Face model directory (``config.json`` + ``*.safetensors``).
        protocol: a key of :data:`PROTOCOLS` (``"qwen25-math-prm"``, ``"math-shepherd"``,
            ``"rlhflow"``).
        tokenizer: a tokenizer directory; default the model's own. Must be a fast tokenizer.
        dtype: ``"float32"`` (default), ``"bfloat16"``, ``"float16"`` or ``"auto"``.
        device: a torch device string.
        max_batch_size: most requests in one forward pass.
        trust_remote_code: passed to ``from_pretrained`` as given (the real Qwen2.5-Math-PRM
            needs ``True``; it then loads with ``AutoModel``).
        id: the PRM's name; default the model directory's name.
        plus_token, minus_token: the candidate tokens of the causal-LM protocols.
    """

    def __init__(
        self,
        model: str,
        protocol: str,
        *,
        tokenizer: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        max_batch_size: int = 16,
        trust_remote_code: bool = False,
        id: str | None = None,
        plus_token: str = "+",
        minus_token: str = "-",
    ) -> None:
        self.protocol = resolve_protocol(protocol)
        if not isinstance(model, (str, os.PathLike)) or not str(model):
            raise ValueError(f"model must be a local model directory, got {model!r}")
        path = Path(model).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"model directory {str(path)!r} does not exist; HFPRM loads local files only (it never "
                "downloads): pass a Hugging Face model directory (config.json + *.safetensors)."
            )
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no config.json in model directory {str(path)!r}")
        self._model_dir = path
        if tokenizer is not None:
            tpath = Path(tokenizer).expanduser()
            if not tpath.is_dir():
                raise FileNotFoundError(
                    f"tokenizer directory {str(tpath)!r} does not exist; pass a local tokenizer directory "
                    "or leave tokenizer=None to use the model's."
                )
            self._tokenizer_dir: Path | None = tpath
        else:
            self._tokenizer_dir = None
        self.dtype = parse_dtype(dtype)
        self.device = parse_device(device)
        self.max_batch_size = check_batch_size(max_batch_size)
        if not isinstance(trust_remote_code, bool):
            raise TypeError(f"trust_remote_code must be a bool, got {trust_remote_code!r}")
        self.trust_remote_code = trust_remote_code
        self.plus_token, self.minus_token = check_candidate_tokens(plus_token, minus_token)
        if id is None:
            id = path.resolve().name
        if not isinstance(id, str) or not id:
            raise ValueError(f"id must be a non-empty string, got {id!r}")
        self.id = id

        self._load_lock = threading.Lock()
        self._score_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._ids: TokenIds | None = None
        self._num_parameters: int | None = None
        self.load_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ loading
    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    def _common(self) -> dict[str, Any]:
        return {"local_files_only": True, "trust_remote_code": self.trust_remote_code}

    def _auto_class(self) -> Any:
        return protocol_auto_class(self.protocol, self.trust_remote_code)

    def _load_tokenizer(self) -> tuple[Any, TokenIds]:
        return load_protocol_tokenizer(
            self.protocol,
            self._tokenizer_dir or self._model_dir,
            plus_token=self.plus_token,
            minus_token=self.minus_token,
            trust_remote_code=self.trust_remote_code,
        )

    def load(self) -> "HFPRM":
        """Load tokenizer and model now (idempotent, thread-safe). Returns ``self``."""
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self._load_locked()
        return self

    def _load_locked(self) -> None:
        start = time.perf_counter()
        tok, ids = self._load_tokenizer()
        with load_progress(self._model_dir):
            model, info = self._auto_class().from_pretrained(
                str(self._model_dir), dtype=DTYPES[self.dtype], use_safetensors=True, output_loading_info=True,
                **self._common()
            )
        # A checkpoint whose class differs from what the auto class builds (e.g. Qwen2.5-Math-PRM's
        # own `score` head) loads with freshly initialised layers and only a warning: scores would
        # be random. Refuse instead.
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            raise ValueError(
                f"{self._model_dir}: {len(missing)} weights were not in the checkpoint and would be random "
                f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): the checkpoint's architecture is not "
                f"the {self._auto_class().__name__} this protocol loads. If the model ships its own modeling code "
                "(Qwen2.5-Math-PRM does), pass trust_remote_code=True after reviewing it; otherwise check the protocol."
            )
        model.eval()
        model.to(self.device)
        if self.protocol.uses_candidates:
            vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else None
            if vocab is not None and max(ids.plus, ids.minus) >= vocab:
                raise ValueError("plus/minus token ids are outside the model's vocabulary; tokenizer and model do not match")
        self._num_parameters = count_parameters(model)
        self.load_info = {"seconds": time.perf_counter() - start, "path": str(self._model_dir)}
        log.info("loaded PRM %s (%s) in %.1f s", self.id, self.protocol.name, self.load_info["seconds"])
        self._tokenizer, self._ids = tok, ids
        self._model = model  # published last: other threads test it without the lock

    @property
    def tokenizer(self) -> Any:
        return self.load()._tokenizer

    @property
    def model(self) -> Any:
        return self.load()._model

    @property
    def num_parameters(self) -> int:
        """Parameter count (tied embeddings once); before loading, from the config on ``meta``."""
        if self._num_parameters is None:
            with self._load_lock:
                if self._num_parameters is None:
                    from transformers import AutoConfig

                    config = AutoConfig.from_pretrained(str(self._model_dir), **self._common())
                    self._num_parameters = count_parameters_from_config(
                        config, self._auto_class(), self.trust_remote_code
                    )
        return self._num_parameters

    # ------------------------------------------------------------------ scoring
    def build_inputs(self, request: ScoreRequest) -> tuple[list[int], list[int]]:
        """The input ids of one request and its score positions (one per step)."""
        self.load()
        assert self._ids is not None
        return build_protocol_inputs(self.protocol, self._tokenizer, self._ids, request)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutput]:
        requests = list(requests)
        for k, r in enumerate(requests):
            if not isinstance(r.question, str) or not all(isinstance(s, str) for s in r.steps):
                raise TypeError(f"requests[{k}] must hold a question string and a tuple of step strings")
        results: list[ScoreOutput | None] = [None] * len(requests)
        todo = []
        for k, r in enumerate(requests):
            if not r.steps:
                results[k] = ScoreOutput((), 0)
            else:
                todo.append(k)
        if not todo:
            return results  # type: ignore[return-value]
        self.load()
        with self._score_lock, torch.inference_mode():
            built = {k: self.build_inputs(requests[k]) for k in todo}
            order = sorted(todo, key=lambda k: len(built[k][0]))
            for start in range(0, len(order), self.max_batch_size):
                chunk = order[start : start + self.max_batch_size]
                scores = self._forward([built[k] for k in chunk])
                for k, s in zip(chunk, scores):
                    results[k] = ScoreOutput(tuple(s), len(built[k][0]))
        return results  # type: ignore[return-value]

    def _forward(self, rows: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        assert self._ids is not None
        width = max(len(ids) for ids, _ in rows)
        pad = self._tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, _) in enumerate(rows):  # right padding: real tokens keep their positions
            input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[r, : len(ids)] = 1
        out = self._model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
        logits = out.logits if hasattr(out, "logits") else out[0]
        row_idx = torch.tensor([r for r, (_, pos) in enumerate(rows) for _ in pos], device=logits.device)
        col_idx = torch.tensor([p for _, pos in rows for p in pos], device=logits.device)
        picked = logits[row_idx, col_idx].float()
        probs = self.protocol.to_probabilities(picked, self._ids).clamp(0.0, 1.0).cpu().tolist()
        scores, k = [], 0
        for _, pos in rows:
            scores.append(probs[k : k + len(pos)])
            k += len(pos)
        return scores
