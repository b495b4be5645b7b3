"""The rollout engine across iterations: kept running, or started per stage.

With `rollout.keep_engine` (one machine), the first stage starts the engine and
every later policy is loaded into it in place (`Engine.reload_weights`), which on
CPU saves vLLM's ~30 s start per iteration. Otherwise each stage starts its own
engine from the checkpoint folder and closes it when done, so a stage running in its
own pod frees all accelerator memory (the baseline hand-off).

Inside `reuse_engines()` (a sweep running many training runs in one process), a
session that ends parks its engine instead of closing it, and the next session with the
same engine settings and tokenizer takes it over and reloads its policy in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from a2tgpo.config import RunConfig
from a2tgpo.engines.adapters import read_adapter_config
from a2tgpo.engines.base import Engine
from a2tgpo.engines.options import engine_options

log = logging.getLogger(__name__)

_PARKED: dict[str, Engine] = {}  # engines of ended sessions, inside reuse_engines()
_REUSE_DEPTH = 0


@contextmanager
def reuse_engines() -> Iterator[None]:
    """Keep engines alive across the sessions started inside (closed at the end)."""
    global _REUSE_DEPTH
    _REUSE_DEPTH += 1
    try:
        yield
    finally:
        _REUSE_DEPTH -= 1
        if _REUSE_DEPTH == 0:
            while _PARKED:
                _PARKED.popitem()[1].close()


def _engine_key(config: RunConfig, policy_dir: str) -> str:
    """Engines are interchangeable when their settings and tokenizer are the same."""
    tokenizer = Path(policy_dir) / "tokenizer.json"
    digest = hashlib.sha256(tokenizer.read_bytes()).hexdigest() if tokenizer.exists() else ""
    options = json.dumps(engine_options(config), sort_keys=True, default=str)
    return f"{config.rollout.engine}|{options}|{digest}"


def options_for(config: RunConfig, adapter_dir: str | None) -> dict:
    """The engine options, with LoRA slots wide enough for the adapter served even when
    `model.lora` is unset (evaluating a LoRA checkpoint of another run)."""
    options = engine_options(config)
    if adapter_dir:
        rank = int(read_adapter_config(adapter_dir).get("r") or 0)
        options["max_lora_rank"] = max(options["max_lora_rank"], rank)
    return options


class EngineSession:
    def __init__(self, config: RunConfig, keep: bool | None = None):
        """`keep` (default `rollout.keep_engine`): hold one engine across stages."""
        self.config = config
        self.keep = config.rollout.keep_engine if keep is None else keep
        self.engine: Engine | None = None
        self.owns_engine = True
        self.key = ""  # the engine's settings + tokenizer, when it may be parked for reuse
        self.timings: list[dict[str, float]] = []  # one entry per start or reload
        # the flow's persistent trainer (a2tgpo.training.persistent), closed with the session
        self.trainer = None

    @classmethod
    def around(cls, config: RunConfig, engine: Engine) -> EngineSession:
        """A session holding an engine the caller started (and closes itself)."""
        session = cls(config, keep=True)
        session.engine = engine
        session.owns_engine = False
        return session

    @staticmethod
    @contextmanager
    def borrow(session: EngineSession | None, config: RunConfig) -> Iterator[EngineSession]:
        """The caller's session when it keeps an engine; else one of the stage's own,
        closed when the stage ends (a pod per stage in a cluster, or a CLI command)."""
        if session is not None and session.keep:
            yield session
            return
        with EngineSession(config, keep=True) as own:
            yield own

    def engine_for(self, policy_dir: str, adapter_dir: str | None = None) -> Engine | None:
        """A running engine holding `policy_dir` (with the LoRA adapter `adapter_dir` on
        it), or None when stages start their own."""
        if not self.keep:
            return None
        start = time.perf_counter()
        if self.engine is None and _REUSE_DEPTH:
            self.key = _engine_key(self.config, policy_dir)
            self.engine = _PARKED.pop(self.key, None)
        if self.engine is None:
            from a2tgpo.engines import make_engine

            self.engine = make_engine(
                self.config.rollout.engine,
                policy_dir,
                adapter_dir=adapter_dir,
                **options_for(self.config, adapter_dir),
            )
            self.timings.append({"start_s": time.perf_counter() - start})
        elif self.engine.hold(str(policy_dir), adapter_dir):
            self.timings.append({"reload_s": time.perf_counter() - start})
            log.info(
                "loaded %s into the running engine in %.1f s",
                adapter_dir or policy_dir,
                self.timings[-1]["reload_s"],
            )
        return self.engine

    def close(self) -> None:
        if self.trainer is not None:
            self.trainer.close()
            self.trainer = None
        if self.engine is not None and self.owns_engine:
            if _REUSE_DEPTH and self.key:
                previous = _PARKED.pop(self.key, None)
                if previous is not None:
                    previous.close()
                _PARKED[self.key] = self.engine
            else:
                self.engine.close()
        self.engine = None

    def __enter__(self) -> EngineSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
