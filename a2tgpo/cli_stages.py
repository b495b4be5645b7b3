"""The stage commands: each runs one stage alone, by URI or by `--iteration k`."""

from __future__ import annotations

from pathlib import Path

import typer

from a2tgpo.cli_common import (
    ConfigOpt,
    IterOpt,
    PresetOpt,
    SetOpt,
    _done,
    _layout,
    _local_uri,
    _need,
    app,
    console,
    load_config,
)


@app.command("make-tiny-model")
def make_tiny_model(
    out: Path = typer.Argument(..., help="Folder to write."),
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Build the project's tiny Qwen2 model (tokenizer trained on the environment's text)."""
    from a2tgpo.pipeline import build_configured_tiny_model

    path = build_configured_tiny_model(load_config(preset, config, set_), out, overwrite)
    console.print(f"[green]wrote[/green] {path}")


@app.command()
def prepare(
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    iteration: int = IterOpt,
) -> None:
    """Initial model and prompt pools (and the prompts of --iteration k)."""
    from a2tgpo.pipeline import ensure_initial_model, ensure_prompt_pool, sample_prompts
    from a2tgpo.rollout.agent import derive_seed

    cfg = load_config(preset, config, set_)
    layout = _layout(cfg)
    console.print(f"initial policy: {ensure_initial_model(cfg, layout)}")
    pool = ensure_prompt_pool(cfg, layout, "train")
    console.print(f"train prompts: {pool}")
    if iteration is not None:
        seed = derive_seed("prompts", cfg.seed, iteration) % (1 << 32)
        _done(
            sample_prompts(
                cfg,
                layout,
                pool,
                layout.stage(iteration, "prompts"),
                cfg.rollout.prompts_per_iteration,
                seed,
            )
        )


@app.command()
def warmstart(preset: str = PresetOpt, config: Path = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Supervised warm-start on synthetic demonstrations (DeepSpeed, SFT)."""
    from a2tgpo.pipeline import ensure_initial_model
    from a2tgpo.training.warmstart import run_warmstart

    cfg = load_config(preset, config, set_)
    layout = _layout(cfg)
    init = ensure_initial_model(cfg, layout)
    _done(run_warmstart(cfg, init_uri=init, demos_uri=layout.demos, out_uri=layout.warmstart))


@app.command()
def rollout(
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    iteration: int = IterOpt,
    prompts: str = typer.Option(None, help="Prompts URI.", callback=_local_uri),
    policy: str = typer.Option(
        None, help="Policy URI (checkpoint or model folder).", callback=_local_uri
    ),
    out: str = typer.Option(None, help="Output trajectories URI.", callback=_local_uri),
    version: int = typer.Option(None, help="Policy version recorded in the rows."),
) -> None:
    """Generate trajectories with the multi-turn search agent (vLLM or HF)."""
    from a2tgpo.rollout.stage import run_rollout
    from a2tgpo.training.checkpoints import local_policy

    cfg = load_config(preset, config, set_)
    layout = _layout(cfg)
    if iteration is not None:
        prompts = prompts or layout.stage(iteration, "prompts")
        policy = policy or layout.policy(cfg, iteration)
        out = out or layout.stage(iteration, "trajectories")
        version = iteration if version is None else version
    for value, name in ((prompts, "prompts"), (policy, "policy"), (out, "out")):
        _need(value, name)
    policy_dir = str(local_policy(layout.storage, policy))
    _done(
        run_rollout(
            cfg,
            prompts_uri=prompts,
            policy_dir=policy_dir,
            out_uri=out,
            policy_version=version or 0,
            parents=[prompts, policy],
        )
    )


@app.command("score-ig")
def score_ig(
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    iteration: int = IterOpt,
    trajectories: str = typer.Option(None, help="Trajectories URI.", callback=_local_uri),
    policy: str = typer.Option(
        None, help="Policy URI: the policy that generated them.", callback=_local_uri
    ),
    out: str = typer.Option(None, help="Output scored URI.", callback=_local_uri),
) -> None:
    """Teacher-forced information gain per turn (naive / packed / vLLM scorer)."""
    from a2tgpo.scoring.stage import run_score_ig

    cfg = load_config(preset, config, set_)
    layout = _layout(cfg)
    if iteration is not None:
        trajectories = trajectories or layout.stage(iteration, "trajectories")
        policy = policy or layout.policy(cfg, iteration)
        out = out or layout.stage(iteration, "scored")
    for value, name in ((trajectories, "trajectories"), (policy, "policy"), (out, "out")):
        _need(value, name)
    if cfg.ig.scorer == "vllm":
        from a2tgpo.engines import make_engine
        from a2tgpo.rollout.stage import engine_options
        from a2tgpo.training.checkpoints import local_policy

        with make_engine(
            "vllm", str(local_policy(layout.storage, policy)), **engine_options(cfg)
        ) as eng:
            _done(
                run_score_ig(
                    cfg, trajectories_uri=trajectories, policy_uri=policy, out_uri=out, engine=eng
                )
            )
        return
    _done(run_score_ig(cfg, trajectories_uri=trajectories, policy_uri=policy, out_uri=out))


@app.command()
def advantages(
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    iteration: int = IterOpt,
    scored: str = typer.Option(None, help="Scored URI.", callback=_local_uri),
    out: str = typer.Option(None, help="Output advantaged URI.", callback=_local_uri),
) -> None:
    """Per-turn advantages and clip ranges (the configured estimator)."""
    from a2tgpo.training.advantages import run_advantages

    cfg = load_config(preset, config, set_)
    layout = _layout(cfg)
    if iteration is not None:
        scored = scored or layout.stage(iteration, "scored")
        out = out or layout.stage(iteration, "advantaged")
    for value, name in ((scored, "scored"), (out, "out")):
        _need(value, name)
    _done(run_advantages(cfg, scored_uri=scored, out_uri=out))


@app.command("train-step")
def train_step(
    preset: str = PresetOpt,
    config: Path = ConfigOpt,
    set_: list[str] = SetOpt,
    iteration: int = IterOpt,
    advantaged: str = typer.Option(None, help="Advantaged URI.", callback=_local_uri),
    policy: str = typer.Option(None, help="Policy checkpoint URI to update.", callback=_local_uri),
    out: str = typer.Option(None, help="Output checkpoint URI.", callback=_local_uri),
    version: int = typer.Option(None, help="Version of the written policy."),
) -> None:
    """One DeepSpeed ZeRO-3 policy update (subprocess workers), committed as a checkpoint."""
    from a2tgpo.training.launcher import run_train_step

    cfg = load_config(preset, config, set_)
    layout = _layout(cfg)
    if iteration is not None:
        advantaged = advantaged or layout.stage(iteration, "advantaged")
        policy = policy or layout.policy(cfg, iteration)
        out = out or layout.stage(iteration, "checkpoint")
        version = iteration + 1 if version is None else version
    for value, name in ((advantaged, "advantaged"), (policy, "policy"), (out, "out")):
        _need(value, name)
    _done(
        run_train_step(
            cfg,
            advantaged_uri=advantaged,
            policy_uri=policy,
            out_uri=out,
            policy_version=version or 1,
            reference_uri=layout.initial_policy(cfg),
            stream=True,
        )
    )
