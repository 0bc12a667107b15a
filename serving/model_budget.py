"""A multi-model endpoint's memory budget: whether a model fits, and what to evict (lru) so
that it does.

The models' total is each one's footprint (bytes per worker) times the workers. The budget is
``SERVING_MME_MEMORY_MB``, or by default the container's memory limit less the server's own
memory without models (the master's, and each worker's baseline as it reports it), the
workers' request-body memory and a twentieth of the limit for the allocator's slack.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from .memory import MIB, memory_limit, resident_bytes
from .model_loading import InsufficientMemory
from .model_store import LOADED, Entry, Registry, SharedStore
from .settings import Settings

log = logging.getLogger(__name__)

#: Of the container's memory limit, the share kept back by default (allocator slack).
SLACK_SHARE = 0.05


class MemoryBudget:
    def __init__(self, settings: Settings, store: SharedStore) -> None:
        self._settings = settings
        self._store = store

    def total(self) -> int:
        """Bytes the models may take, every worker's copy together."""
        settings = self._settings
        if settings.mme_memory_mb:
            return int(settings.mme_memory_mb * MIB)
        limit = memory_limit()
        server = resident_bytes(os.getppid()) + sum(r.baseline for r in self._store.reports())
        bodies = int(settings.workers * settings.max_buffered_mb * MIB)
        return limit - server - bodies - int(limit * SLACK_SHARE)

    def room(
        self, registry: Registry, name: str, footprint: int, last_used: Mapping[str, float]
    ) -> list[str]:
        """Make ``registry`` hold ``name`` at ``footprint`` bytes per worker: evict (lru,
        removing them from ``registry``) or raise :class:`InsufficientMemory` (a 507).
        ``last_used`` is this worker's own last use of its models. Returns the names evicted."""
        workers = self._settings.workers
        budget = self.total()
        others = {n: e for n, e in registry.models.items() if n != name}
        used = sum(entry.footprint for entry in others.values()) * workers
        needed = footprint * workers
        evicted: list[str] = []
        if used + needed > budget and self._settings.mme_evict == "lru":
            for victim in self._least_recently_used(loaded(registry), last_used):
                del registry.models[victim]
                evicted.append(victim)
                used -= others[victim].footprint * workers
                if used + needed <= budget:
                    break
        if used + needed > budget:
            raise InsufficientMemory(
                f"model {name!r} needs {needed / MIB:.1f} MB ({workers} worker"
                f"{'s' if workers > 1 else ''}); {max(budget - used, 0) / MIB:.1f} MB of "
                f"{budget / MIB:.1f} MB is free"
            )
        for victim in evicted:
            log.info("model %s evicted (least recently used) to make room for %s", victim, name)
        return evicted

    def _least_recently_used(
        self, models: dict[str, Entry], last_used: Mapping[str, float]
    ) -> list[str]:
        last: dict[str, float] = {name: entry.loaded_at for name, entry in models.items()}
        reported = [report.last_used for report in self._store.reports()]
        for uses in (*reported, last_used):
            for name, when in uses.items():
                if name in last:
                    last[name] = max(last[name], when)
        return sorted(last, key=last.__getitem__)


def loaded(registry: Registry) -> dict[str, Entry]:
    """The models of ``registry`` that are loaded (not being loaded)."""
    return {name: e for name, e in registry.models.items() if e.state == LOADED}
