"""A router's engines, built and loaded on first use."""
from __future__ import annotations

import threading
from typing import Any, Callable

from ..backends.base import PRM, Policy, SamplingParams
from ..estimators import EstimateContext


class LazyEngines:
    """A router's policy and PRM, loaded on first use: routing with a prompt estimator needs
    neither, so ``route`` loads no weights; ``solve`` loads them once (``api.resolve_engines``
    caches them per spec). ``check`` runs once on the loaded engines (e.g. the table's ids).

    ``sampling``: the sampling parameters to search with (None: the policy's defaults, with
    ``sampling_overrides`` applied, e.g. a table's profiled settings). ``policy_params``
    (parameters) stands in for the policy's count until it is loaded (a table's record)."""

    def __init__(self, policy: str | Policy, prm: str | PRM | None,
                 check: Callable[[Policy, PRM | None], None] | None = None, *,
                 sampling: SamplingParams | None = None, sampling_overrides: dict[str, Any] | None = None,
                 policy_params: int | None = None):
        self._specs = (policy, prm)
        self._check = check
        self._engines: tuple[Policy, PRM | None] | None = None
        self._lock = threading.Lock()
        self._sampling = sampling
        self._sampling_overrides = sampling_overrides
        self._policy_params = policy_params

    @property
    def loaded(self) -> bool:
        return self._engines is not None

    def get(self) -> tuple[Policy, PRM | None]:
        """The loaded (policy, PRM), loading them now if they were not."""
        if self._engines is None:
            with self._lock:
                if self._engines is None:
                    from ..api import resolve_engines

                    engines = resolve_engines(*self._specs)
                    if self._check is not None:
                        self._check(*engines)
                    self._engines = engines
        return self._engines

    @property
    def sampling(self) -> SamplingParams | None:
        """The sampling parameters searches run with (None: the policy's defaults)."""
        if self._sampling is None and self._sampling_overrides:
            self._sampling = self.get()[0].default_sampling_params().replace(**self._sampling_overrides)
        return self._sampling

    def policy_params(self) -> int:
        """The policy's parameter count, without loading it when the table records it or the
        engine object can count its own."""
        if not self.loaded:
            if self._policy_params is not None:
                return self._policy_params
            built = self._specs[0]
            if not isinstance(built, str):  # an engine object counts its parameters without loading
                return built.num_parameters
        return self.get()[0].num_parameters

    def loaded_with_sampling(self) -> tuple[Policy, PRM | None, SamplingParams | None]:
        """(policy, PRM, sampling), loaded: what a sampling estimator draws with."""
        policy, prm = self.get()
        return policy, prm, self.sampling

    def context(self, seed: int = 0) -> EstimateContext:
        """The estimate context of this router's engines: the policy's size now, the engines
        only if the estimator samples."""
        return EstimateContext(int(self.policy_params() or 0), seed, self.loaded_with_sampling)
