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

import pyarrow as pa

from a2tgpo.config import RunConfig
from a2tgpo.data.manifest import Manifest
from a2tgpo.data.schemas import TRAJECTORIES
from a2tgpo.data.stage import read_manifest, write_stage
from a2tgpo.data.storage import Storage
from a2tgpo.envs.prompting import OBSERVATION_CLOSE, OBSERVATION_OPEN, build_messages
from a2tgpo.envs.synthetic import SyntheticWorld
from a2tgpo.envs.tools import SearchTool
from a2tgpo.rollout.agent import ObservationTokens
from a2tgpo.training.checkpoints import local_policy
from a2tgpo.training.launcher import run_train_step


def demonstration_row(world: SyntheticWorld, question, tool: SearchTool, tokenizer, encode_obs):
    """One demonstration as a TRAJECTORIES row (outcome 1: it answers with the gold)."""
    prompt = list(
        tokenizer.apply_chat_template(
            build_messages(question.text),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
    )
    tokens, mask, turns = list(prompt), [0] * len(prompt), []
    demo = world.demonstration(question, tool)
    for k, step in enumerate(demo):
        start = len(tokens)
        action = tokenizer.encode(step.action, add_special_tokens=False)
        tokens += action
        mask += [1] * len(action)
        end = len(tokens)
        if step.observation:
            body = step.observation.removeprefix(OBSERVATION_OPEN).removesuffix(OBSERVATION_CLOSE)
            obs = encode_obs(body)
            tokens += obs
            mask += [0] * len(obs)
        is_search = step.action.startswith("<search>")
        turns.append(
            {
                "turn": k,
                "start": start,
                "end": end,
                "obs_start": end,
                "obs_end": len(tokens),
                "action": "search" if is_search else "answer",
                "query": step.action[len("<search>") : -len("</search>")] if is_search else None,
            }
        )
    return {
        "prompt_id": question.question_id,
        "trajectory_id": f"demo/{question.question_id}",
        "sample_index": 0,
        "policy_version": 0,
        "data_source": "synthetic",
        "golds": list(question.golds),
        "token_ids": tokens,
        "loss_mask": mask,
        "prompt_length": len(prompt),
        "turns": turns,
        "answer": question.golds[0],
        "outcome": 1.0,
        "em": 1.0,
        "f1": 1.0,
        "finish_reason": "answer",
        "sampling": {
            "temperature": 0.0,
            "top_p": 1.0,
            "max_turn_tokens": 0,
            "seed": 0,
            "engine": "demonstration",
        },
        "rollout_logprobs": None,
    }


def demonstrations_table(config: RunConfig, tokenizer) -> pa.Table:
    """`warmstart.examples` demonstrations of training questions of the synthetic world."""
    if config.env.kind != "synthetic":
        raise ValueError("the warm-start demonstrations need env.kind='synthetic'")
    world = SyntheticWorld(config.env.seed, config.env.num_entities, config.env.max_hops)
    tool = world.search_tool(config.env.topk)
    encode_obs = ObservationTokens(tokenizer, config.rollout.max_observation_tokens)
    rows = [
        demonstration_row(world, q, tool, tokenizer, encode_obs)
        for q in world.questions("train", config.warmstart.examples)
    ]
    for i, row in enumerate(rows):  # questions repeat when a split is cycled: keep ids unique
        row["trajectory_id"] = f"demo/{i}"
    return pa.Table.from_pylist(rows, schema=TRAJECTORIES)


def run_warmstart(config: RunConfig, *, init_uri: str, demos_uri: str, out_uri: str) -> Manifest:
    """Commit the demonstrations, then fit them (SFT) starting from the initial model."""
    storage = Storage(config.storage)
    existing = read_manifest(storage, out_uri)
    if existing is not None:
        return existing
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
    return run_train_step(
        config,
        advantaged_uri=demos_uri,
        policy_uri=init_uri,
        out_uri=out_uri,
        policy_version=0,
        mode="sft",
    )
