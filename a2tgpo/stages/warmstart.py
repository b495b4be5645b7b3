"""The warm-start stage: supervised training on synthetic demonstrations before RL.

A random tiny model cannot discover the tool format by itself, so RL starts from a
policy that has seen ideal transcripts (one search per hop, then the answer) of the
synthetic world. Demonstrations are committed as a TRAJECTORIES dataset built exactly
like rollouts (chat-templated prompt, action tokens with loss mask 1, observations
from the real search tool with mask 0), then the train-step worker fits them by
likelihood (`mode="sft"`) with the same DeepSpeed engine. The warm-start is kept
short on purpose: it teaches the format, and RL has the answers left to learn.

Departure from the paper: A²TGPO and IGPO start from instruction-tuned models and
need no warm-start; this stage exists only because the embedded model is random.
"""

from __future__ import annotations

import json

import pyarrow as pa

from a2tgpo.config import RunConfig
from a2tgpo.data.checkpoints import local_policy
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.schemas import PROMPTS
from a2tgpo.data.stage import read_manifest, resumable, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.envs.prompting import OBSERVATION_CLOSE, OBSERVATION_OPEN
from a2tgpo.envs.synthetic import SyntheticWorld
from a2tgpo.rollout.agent import Episode, ObservationTokens
from a2tgpo.rollout.trajectories import build_episodes, trajectories_table
from a2tgpo.training.launcher import train_and_commit


def demonstrations_table(config: RunConfig, tokenizer) -> pa.Table:
    """`warmstart.examples` demonstrations of training questions of the synthetic world,
    as TRAJECTORIES rows built by the rollout's own episodes (outcome 1: each answers
    with the gold)."""
    if config.env.kind != "synthetic":
        raise ValueError("the warm-start demonstrations need env.kind='synthetic'")
    world = SyntheticWorld.from_config(config.env)
    questions = world.questions("train", config.warmstart.examples)
    rows = world.to_prompts("train", config.warmstart.examples)
    for row in rows:
        row["meta"] = json.dumps(row["meta"])
    prompts = pa.Table.from_pylist(rows, schema=PROMPTS)
    episodes = build_episodes(prompts, tokenizer, group_size=1, seed=0)
    tool = world.search_tool(config.env.topk)
    encode_obs = ObservationTokens(tokenizer, config.rollout.max_observation_tokens)
    for episode, question in zip(episodes, questions, strict=True):
        play_demonstration(episode, world.demonstration(question, tool), tokenizer, encode_obs)
    return trajectories_table(episodes, prompts, config, 0, engine_name="demonstration")


def play_demonstration(episode: Episode, demo, tokenizer, encode_obs: ObservationTokens) -> None:
    """Append an ideal transcript's turns and observations to an episode, as the agent
    loop appends a policy's (the same turn records, token spans and observation tokens)."""
    for step in demo:
        tokens = tokenizer.encode(step.action, add_special_tokens=False)
        if step.action.startswith("<search>"):
            query = step.action[len("<search>") : -len("</search>")]
            episode.add_turn(tokens, step.action, "search", query)
        else:
            episode.add_turn(tokens, step.action, "answer", None)
        if step.observation:
            body = step.observation.removeprefix(OBSERVATION_OPEN).removesuffix(OBSERVATION_CLOSE)
            episode.add_observation(encode_obs(body))
    episode.finish_reason = "answer"


@resumable
def run_warmstart(config: RunConfig, *, init_uri: str, demos_uri: str, out_uri: str) -> Manifest:
    """Commit the demonstrations, then fit them (SFT) starting from the initial model."""
    storage = Storage(config.storage)
    if read_manifest(storage, demos_uri) is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(local_policy(storage, init_uri))
        table = demonstrations_table(config, tokenizer)
        write_stage(
            storage,
            demos_uri,
            table,
            "trajectories",
            policy_version=0,
            parents=[init_uri],
            stats={"demonstrations": table.num_rows},
        )
    return train_and_commit(
        config,
        advantaged_uri=demos_uri,
        policy_uri=init_uri,
        out_uri=out_uri,
        policy_version=0,
        mode="sft",
    )
