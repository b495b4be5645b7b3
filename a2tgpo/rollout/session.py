"""The rollout engine across iterations: kept running, or started per stage.

With `rollout.keep_engine` (one machine), the first stage starts the engine and
every later policy is loaded into it in place (`Engine.reload_weights`), which on
CPU saves vLLM's ~30 s start per iteration. Otherwise each stage starts its own
engine from the checkpoint folder and closes it when done, so a stage running in its
own pod frees all accelerator memory (the baseline hand-off).
"""

from __future__ import annotations

import logging
import time

from a2tgpo.config import RunConfig
from a2tgpo.engines.base import Engine

log = logging.getLogger(__name__)


class EngineSession:
    def __init__(self, config: RunConfig):
        self.config = config
        self.engine: Engine | None = None
        self.timings: list[dict[str, float]] = []  # one entry per start or reload

    def engine_for(self, policy_dir: str) -> Engine | None:
        """A running engine holding `policy_dir`, or None when stages start their own."""
        if not self.config.rollout.keep_engine:
            return None
        start = time.perf_counter()
        if self.engine is None:
            from a2tgpo.engines import make_engine
            from a2tgpo.rollout.stage import engine_options

            self.engine = make_engine(
                self.config.rollout.engine, policy_dir, **engine_options(self.config)
            )
            self.timings.append({"start_s": time.perf_counter() - start})
        elif getattr(self.engine, "model_dir", None) != str(policy_dir):
            self.engine.reload_weights(policy_dir)
            self.timings.append({"reload_s": time.perf_counter() - start})
            log.info(
                "reloaded %s into the running engine in %.1f s",
                policy_dir,
                self.timings[-1]["reload_s"],
            )
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def __enter__(self) -> EngineSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
