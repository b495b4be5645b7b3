"""Fixtures of the browser tests: headless Chromium through Playwright, `mlflow ui` over a
store holding a GRPO and an A²TGPO run, and a Prefect server with its UI on.

The browser is Debian's Chromium (/usr/bin/chromium, installed by `make browser`, a step
of `make test`): Playwright's own browser download is not used. The two MLflow runs are
written with the project's own tracker, metric names and figures (`RunTracker`,
`ig_metrics`, `advantage_metrics`, `run_figures`) from synthetic per-turn statistics,
so the pages show what a training run logs without training. Screenshots go to
$A2TGPO_TEST_ARTIFACTS, else test-artifacts/ at the repository root (git-ignored).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.infra.conftest import free_port, prefect_cli, running_prefect_server, stop_group
from tests.infra.helpers import LOCAL_POOL, PREFECT_YAML, ROOT

CHROMIUM = Path(os.environ.get("A2TGPO_CHROMIUM", "/usr/bin/chromium"))
# Flags that work as root on a machine without network or GPU (Playwright adds --headless)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MLFLOW_UI = [sys.executable, "-m", "mlflow", "ui"]  # `mlflow ui` of the tests' interpreter
LISTEN = ["--host", "127.0.0.1", "--port"]
SERVER_TIMEOUT_S = 120
ITERATIONS = 3
TURNS = 3  # turn indices 0..2: two searches and the answer turn (no IG)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the pages' screenshots go (printed, so a failed run says where to look)."""
    folder = Path(os.environ.get("A2TGPO_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the UI tests: {folder}")
    return folder


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """A Playwright browser context of headless Chromium with a fresh profile."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: `make browser` installs Debian's chromium"
        # `make test` installs it, so CI fails without it; a bare `pytest` on a machine
        # without the package skips the browser tests instead of erroring in set-up
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        context.set_default_timeout(60_000)  # pages render with JS on a busy 2-core machine
        try:
            yield context
        finally:
            context.close()


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} not up in {timeout_s} s"
        time.sleep(0.5)


# ----------------------------------------------------------------------------- MLflow


def synthetic_turn_stats(estimator: str, k: int) -> dict[str, Any]:
    """Iteration k's per-turn statistics as the score-ig and advantages stages write them:
    GRPO's clip range is fixed, A²TGPO's is scaled per turn."""
    ig_by_turn, by_turn = {}, {}
    for t in range(TURNS):
        if t < TURNS - 1:  # the answer turn has no IG
            ig_by_turn[str(t)] = {"mean": 0.05 * (t + 1) + 0.01 * k, "std": 0.02, "count": 16}
        eps = 0.2 if estimator == "grpo" else 0.2 * (0.7 + 0.3 * t)
        by_turn[str(t)] = {
            "count": 16,
            "ig_norm_mean": 0.0,
            "ig_norm_abs_mean": 0.8 - 0.1 * t,
            "adv_mean": 0.1 * (t - 1),
            "adv_abs_mean": 0.5 + 0.05 * t,
            **{f"eps_low_{a}": eps * f for a, f in (("min", 0.8), ("mean", 1.0), ("max", 1.2))},
            **{f"eps_high_{a}": eps * f for a, f in (("min", 0.9), ("mean", 1.1), ("max", 1.3))},
        }
    return {"iteration": k, "ig_by_turn": ig_by_turn, "by_turn": by_turn}


def log_synthetic_run(preset: str, root: Path, mlflow_uri: str) -> tuple[str, str, str]:
    """A finished MLflow run of `preset` as the training flow leaves it: params, per-turn
    metrics per iteration, the figures. (experiment id, run id, run name)."""
    import matplotlib

    matplotlib.use("Agg")
    from a2tgpo.presets import resolve_config
    from a2tgpo.tracking.figures import run_figures
    from a2tgpo.tracking.metrics import advantage_metrics, ig_metrics, turn_key
    from a2tgpo.tracking.mlflow_logger import RunTracker, display_name

    config = resolve_config(
        preset,
        [
            f"run_id=ui-{preset}-{uuid.uuid4().hex[:6]}",
            f"storage.root={root}",
            f"tracking.mlflow_uri={mlflow_uri}",
            f"iterations={ITERATIONS}",
            "tracking.system_metrics_s=0",
        ],
    )
    tracker = RunTracker(config, storage_uri=str(root / config.run_id))
    history = []
    for k in range(ITERATIONS):
        stats = synthetic_turn_stats(config.estimator.name, k)
        history.append(stats)
        metrics = {"reward": 0.2 + 0.1 * k, "em": 0.1 * k, "f1": 0.15 * k}
        metrics |= ig_metrics({"ig_by_turn": stats["ig_by_turn"]})
        metrics |= advantage_metrics({"by_turn": stats["by_turn"]})
        metrics |= {turn_key("clip_fraction", t): 0.01 * (t + 1) for t in range(TURNS)}
        tracker.log_metrics(metrics, step=k)
    for path, figure in run_figures(history, base_eps=config.estimator.clip_eps_low).items():
        tracker.log_figure(figure, path)
    tracker.finish()
    return tracker.experiment_id, tracker.run_id, display_name(config)


@dataclass
class MlflowUi:
    url: str
    experiment_id: str
    runs: dict[str, tuple[str, str]]  # preset -> (run id, run name)

    def run_page(self, preset: str) -> str:
        return f"{self.url}/#/experiments/{self.experiment_id}/runs/{self.runs[preset][0]}"


@pytest.fixture(scope="session")
def mlflow_ui(tmp_path_factory) -> Iterator[MlflowUi]:
    """`mlflow ui` on 127.0.0.1 over a sqlite store with a GRPO and an A²TGPO run."""
    root = tmp_path_factory.mktemp("mlflow-ui")
    database = f"sqlite:///{root / 'mlflow.db'}"
    runs, experiments = {}, set()
    for preset in ("grpo", "a2tgpo"):
        experiment_id, run_id, name = log_synthetic_run(preset, root / "runs", database)
        runs[preset] = (run_id, name)
        experiments.add(experiment_id)
    assert len(experiments) == 1, "both runs belong to one experiment"
    port = free_port()
    log = root / "mlflow-ui.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [*MLFLOW_UI, "--backend-store-uri", database, *LISTEN, str(port), "--workers", "1"],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_http(f"{url}/health", server, log, SERVER_TIMEOUT_S)
            yield MlflowUi(url, experiments.pop(), runs)
        finally:
            stop_group(server)


# ----------------------------------------------------------------------------- Prefect


@dataclass
class PrefectUi:
    url: str
    api_url: str
    deployment_id: str


@pytest.fixture(scope="session")
def prefect_ui(tmp_path_factory) -> Iterator[PrefectUi]:
    """A Prefect server with its UI on, the local pool and `train_flow/local` deployed."""
    home = tmp_path_factory.mktemp("prefect-ui-home")
    with running_prefect_server(home, ui=True, startup_timeout_s=SERVER_TIMEOUT_S) as (
        api_url,
        env,
    ):
        prefect_cli(env, "work-pool", "create", LOCAL_POOL, "--type", "process")
        prefect_cli(
            env, "--no-prompt", "deploy", "--prefect-file", str(PREFECT_YAML.relative_to(ROOT)),
            "--name", "train_flow/local",
        )  # fmt: skip
        deployment = httpx.get(f"{api_url}/deployments/name/a2tgpo-train/local", timeout=10)
        yield PrefectUi(
            api_url.removesuffix("/api"), api_url, deployment.raise_for_status().json()["id"]
        )
