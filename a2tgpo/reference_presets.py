"""Reference presets: the released recipes, one function each, for a GPU cluster.

Each docstring is a table of the recipe's settings and where each comes from. Apply
them with overrides for paths, URLs and GPU counts:

    a2tgpo train --preset a2tgpo-qwen3-4b --set env.dataset=/data/train.parquet \\
        --set env.eval_dataset=/data/test.parquet

Both point `env.retriever_url` at the in-cluster retrieval server
(`infra/k8s/retriever.yaml`, `a2tgpo serve-retriever`). Neither is run in this
repository's tests beyond validation: they need a 4B / 7B model and eight GPUs.
"""

from __future__ import annotations

from a2tgpo.config import RunConfig
from a2tgpo.config_ops import apply_overrides

# What both recipes share: a search-QA run against the in-cluster retrieval server, a
# fresh engine per stage (a pod per stage), no synthetic warm-start.
_SEARCH_QA_CLUSTER = [
    "model.dtype=bfloat16",
    "env.kind=search_qa",
    "env.retriever=http",
    "env.retriever_url=http://retriever:8000/retrieve",
    "env.topk=3",
    "rollout.keep_engine=false",
    "train.gradient_checkpointing=true",
    "train.num_gpus=8",
    "warmstart.enabled=false",
    "eval.every=10",
    "eval.prompts_per_source=512",
]


def a2tgpo_qwen3_4b() -> RunConfig:
    """The released A²TGPO code, as publicly read (issue 12), on Qwen3-4B.

    | setting                      | value                 | source                          |
    |------------------------------|-----------------------|---------------------------------|
    | model                        | Qwen/Qwen3-4B, bf16   | released script                 |
    | GPUs                         | 8 (`train.num_gpus`)  | released script                 |
    | prompts x rollouts per step  | 64 x 16               | released script                 |
    | mini-batch                   | 8 prompts: 8 steps    | released script (64 / 8)        |
    | max response                 | 6192 tokens           | released script; here the whole |
    |                              |                       | trajectory: 6192 + 2000 prompt  |
    | learning rate                | 1e-6                  | released script                 |
    | KL coefficient               | 0                     | released script                 |
    | outcome reward               | EM                    | released script                 |
    | IG                           | mean gold log-prob    | released script                 |
    |                              | difference            | (`ig.mode=log_prob_diff`)       |
    | importance ratio             | one per turn          | released script                 |
    | clip range (low / high)      | 0.003 / 0.004, x c    | released script (adaptive clip) |
    | dual clip                    | off                   | released script                 |
    | GRPO warm-up iterations      | 0 (optional)          | released script                 |
    | prompt template              | igpo                  | assumed: the code builds on     |
    |                              |                       | IGPO's                          |
    | max turns, tokens per turn   | 10, 512               | not stated: IGPO's values       |
    | entropy bonus, loss agg.     | 0, token-mean         | not stated: verl's defaults     |
    | iterations                   | 200                   | not stated: set your budget     |
    """
    return apply_overrides(
        RunConfig(preset="a2tgpo-qwen3-4b"),
        [
            *_SEARCH_QA_CLUSTER,
            "model.policy=Qwen/Qwen3-4B",
            "env.prompt_template=igpo",
            "rollout.prompts_per_iteration=64",
            "rollout.group_size=16",
            "rollout.max_turns=10",
            "rollout.max_turn_tokens=512",
            "rollout.max_total_tokens=8192",
            "rollout.max_observation_tokens=512",
            "reward.metric=em",
            "ig.mode=log_prob_diff",
            "estimator.name=a2tgpo",
            "estimator.clip_eps_low=0.003",
            "estimator.clip_eps_high=0.004",
            "estimator.adaptive_clip=true",
            "estimator.grpo_warmup_iterations=0",
            "train.learning_rate=1e-6",
            "train.kl_coef=0",
            "train.entropy_coef=0",
            "train.ratio_level=turn",
            "train.dual_clip=null",
            "train.mini_batches=8",
            "train.micro_batch_tokens=16384",
            "iterations=200",
        ],
    )


def search_qa_7b() -> RunConfig:
    """IGPO's recipe (its published `train.sh`) on Qwen2.5-7B-Instruct, with the A²TGPO
    estimator (`--set estimator.name=igpo` runs IGPO itself).

    | setting                      | value                   | source                        |
    |------------------------------|-------------------------|-------------------------------|
    | model                        | Qwen2.5-7B-Instruct     | train.sh                      |
    | prompts x rollouts per step  | 32 x 16                 | train.sh (train_batch_size,   |
    |                              |                         | agent_grpo.n)                 |
    | max turns                    | 10                      | train.sh                      |
    | optimizer steps per step     | 1                       | train.sh (ppo_mini_batch_size |
    |                              |                         | 512 >= the batch)             |
    | learning rate                | 1e-6                    | train.sh                      |
    | KL (low-variance, in loss)   | 0.001                   | train.sh                      |
    | entropy bonus                | 0.001                   | its verl's default            |
    | loss aggregation             | seq-mean-token-sum      | its verl's default            |
    | clip range, ratio            | 0.2 / 0.2, per token,   | its verl's defaults           |
    |                              | dual clip 3             | (clip_ratio, clip_ratio_c)    |
    | temperature                  | 1.0                     | train.sh                      |
    | outcome reward               | F1, -2 when malformed   | its info_gain.compute_f1      |
    | IG                           | mean gold log-prob diff | train.sh (info_gain_type)     |
    | IG answer prefix, prompt     | IGPO's (`igpo`)         | its generation.py, config.yaml|
    | tokens per turn, trajectory  | 512, 8192               | project choice (IGPO: 2000    |
    |                              |                         | response, 32k context)        |
    | tensor parallel (rollout)    | 2                       | project choice (IGPO: 1)      |
    """
    return apply_overrides(
        RunConfig(preset="search-qa-7b"),
        [
            *_SEARCH_QA_CLUSTER,
            "model.policy=Qwen/Qwen2.5-7B-Instruct",
            "env.prompt_template=igpo",
            "rollout.prompts_per_iteration=32",
            "rollout.group_size=16",
            "rollout.max_turns=10",
            "rollout.max_turn_tokens=512",
            "rollout.max_total_tokens=8192",
            "rollout.max_observation_tokens=512",
            "rollout.tensor_parallel_size=2",
            "rollout.temperature=1.0",
            "reward.metric=f1",
            "reward.format_penalty=-2.0",
            "ig.mode=log_prob_diff",
            "estimator.clip_eps_low=0.2",
            "estimator.clip_eps_high=0.2",
            "train.learning_rate=1e-6",
            "train.ratio_level=token",
            "train.dual_clip=3.0",
            "train.loss_agg=seq-mean-token-sum",
            "train.kl_coef=0.001",
            "train.entropy_coef=0.001",
            "train.mini_batches=1",
            "train.micro_batch_tokens=16384",
            "iterations=300",
        ],
    )


# The LoRA variants (project choices, not the recipes' own): rank 32, alpha 64 on every
# linear layer, and 10x the recipe's learning rate, the LoRA-to-full ratio "LoRA Without
# Regret" (Thinking Machines, 2025) reports for RL; two GPUs instead of eight, since the
# optimizer state shrinks from ~12 bytes per weight to ~12 bytes per adapter weight
# (benchmarks/RESULTS.md, "LoRA").
_LORA_CLUSTER = ["model.lora.rank=32", "model.lora.alpha=64", "train.num_gpus=2"]


def search_qa_7b_lora() -> RunConfig:
    """`search-qa-7b` training LoRA adapters (rank 32) on two GPUs, learning rate 1e-5."""
    return apply_overrides(
        search_qa_7b(),
        ["preset=search-qa-7b-lora", *_LORA_CLUSTER, "train.learning_rate=1e-5"],
    )


def a2tgpo_qwen3_4b_lora() -> RunConfig:
    """`a2tgpo-qwen3-4b` training LoRA adapters (rank 32) on two GPUs, learning rate 1e-5."""
    return apply_overrides(
        a2tgpo_qwen3_4b(),
        ["preset=a2tgpo-qwen3-4b-lora", *_LORA_CLUSTER, "train.learning_rate=1e-5"],
    )
