"""The multi-turn search agent loop (Search-R1 format, one assistant message).

    prompt -> generate one turn (stop at </search>, </answer> or end of turn)
           -> <search>q</search>: run the tool, append <information>...</information>
           -> <answer>a</answer>: done
           -> anything else: append a short correction as an observation, go on
    until an answer, `max_turns`, or the trajectory's token budget.

All active trajectories advance together: one engine call and one batched tool call
per turn. Tokens are kept exactly as the engine generated them (the loss mask is 1 on
them, 0 on prompt and observation tokens); observations are tokenized from their
pieces (open tag, body cut to `max_observation_tokens`, close tag), never from text
the policy wrote, and the text of a special token in them stays ordinary text (a
passage cannot end the turn). A turn's span is [start, end); its observation
[obs_start, obs_end) is empty for the terminal turn: an observation that no later
turn reads is dropped. Each episode counts its searches and tool errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from a2tgpo.config import RolloutConfig
from a2tgpo.engines.base import Engine, SamplingSpec
from a2tgpo.envs.parser import parse_action
from a2tgpo.envs.prompting import OBSERVATION_CLOSE, OBSERVATION_OPEN
from a2tgpo.envs.tools import Observation, SearchTool
from a2tgpo.seeds import derive_seed

STOP_STRINGS = ("</search>", "</answer>")
INVALID_ACTION_TEXT = (
    "Invalid action. Write <search>query</search> to search or <answer>answer</answer> to answer."
)


@dataclass
class Episode:
    """One trajectory being generated."""

    prompt_id: str
    trajectory_id: str
    sample_index: int
    seed: int
    token_ids: list[int]
    prompt_length: int
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: list[dict] = field(default_factory=list)
    generated_text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    # Searches sent to the tool and those that failed (not in the TRAJECTORIES schema:
    # the rollout's manifest stats count them), and the first failure's reason.
    tool_calls: int = 0
    tool_errors: int = 0
    first_tool_error: str | None = None

    def __post_init__(self) -> None:
        if not self.loss_mask:
            self.loss_mask = [0] * len(self.token_ids)
            self.logprobs = [0.0] * len(self.token_ids)

    @property
    def response_text(self) -> str:
        """What the policy wrote, all turns, without observations."""
        return "".join(self.generated_text)

    def append(self, tokens: list[int], generated: bool, logprobs: list[float] | None = None):
        self.token_ids.extend(tokens)
        self.loss_mask.extend([int(generated)] * len(tokens))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(tokens))

    def add_turn(
        self,
        tokens: list[int],
        text: str,
        action: str,
        query: str | None,
        logprobs: list[float] | None = None,
    ) -> dict:
        """Append one generated turn and its record (an empty observation span for now)."""
        start = len(self.token_ids)
        self.append(tokens, generated=True, logprobs=logprobs)
        self.generated_text.append(text)
        end = len(self.token_ids)
        turn = {"turn": len(self.turns), "start": start, "end": end}
        turn |= {"obs_start": end, "obs_end": end, "action": action, "query": query}
        self.turns.append(turn)
        return turn

    def count_tool_result(self, observation: Observation) -> None:
        self.tool_calls += 1
        if observation.error:
            self.tool_errors += 1
            if self.first_tool_error is None:
                self.first_tool_error = observation.reason or observation.text

    def add_observation(self, tokens: list[int]) -> None:
        """Append the observation that follows the last turn (loss mask 0)."""
        turn = self.turns[-1]
        turn["obs_start"] = len(self.token_ids)
        self.append(tokens, generated=False)
        turn["obs_end"] = len(self.token_ids)


def encode_external_text(tokenizer, text: str) -> list[int]:
    """Token ids of text the policy did not write (a tool's answer, a passage).

    `split_special_tokens=True`: the literal text of a special token (`<|im_end|>`,
    the end of turn and EOS) becomes ordinary tokens, so a retrieved passage cannot end
    the turn or open a new message. `add_special_tokens=False` alone does not do it.
    Text without special tokens gets the same ids either way."""
    return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)


class ObservationTokens:
    """Observation token ids from their pieces: open tag, body cut to a budget, close tag.

    The loop and the warm-start demonstrations both build observations here, so a
    demonstration's tokens are exactly what the policy later sees in rollouts.
    """

    def __init__(self, tokenizer, max_body_tokens: int):
        self.tokenizer = tokenizer
        self.max_body_tokens = max_body_tokens
        self.open = encode_external_text(tokenizer, OBSERVATION_OPEN)
        self.close = encode_external_text(tokenizer, OBSERVATION_CLOSE)

    def __call__(self, body_text: str) -> list[int]:
        body = encode_external_text(self.tokenizer, body_text)
        return self.open + body[: self.max_body_tokens] + self.close


class AgentLoop:
    """Runs episodes to completion with one engine and one search tool."""

    def __init__(
        self,
        engine: Engine,
        tool: SearchTool,
        config: RolloutConfig,
        turn_regex: Callable[[Episode, int], str | None] | None = None,
    ):
        """`turn_regex(episode, turn)` may constrain a turn's text (vLLM): scripted policies."""
        self.engine = engine
        self.tool = tool
        self.config = config
        self.turn_regex = turn_regex
        self.observation_tokens = ObservationTokens(engine.tokenizer, config.max_observation_tokens)

    def run(self, episodes: list[Episode], on_finish: Callable[[int], None] | None = None) -> None:
        """Generate every episode until it finishes (sets `finish_reason` on each)."""
        active = list(episodes)
        for turn in range(self.config.max_turns):
            active = [ep for ep in active if not self._out_of_budget(ep)]
            if not active:
                break
            generations = self.engine.generate(
                [ep.token_ids for ep in active], [self._spec(ep, turn) for ep in active]
            )
            searches: list[tuple[Episode, str]] = []
            for ep, gen in zip(active, generations, strict=True):
                query = self._record_turn(ep, gen)
                if query is not None:
                    searches.append((ep, query))
            self._observe(searches, last_turn=turn == self.config.max_turns - 1)
            active = [ep for ep in active if ep.finish_reason is None]
            if on_finish is not None:
                on_finish(len(episodes) - len(active))
        for ep in episodes:
            if ep.finish_reason is None:
                ep.finish_reason = "max_tokens" if self._out_of_budget(ep) else "max_turns"

    def _remaining(self, ep: Episode) -> int:
        return self.config.max_total_tokens - len(ep.token_ids)

    def _out_of_budget(self, ep: Episode) -> bool:
        if ep.finish_reason is None and self._remaining(ep) < 1:
            ep.finish_reason = "max_tokens"
        return ep.finish_reason is not None

    def _spec(self, ep: Episode, turn: int) -> SamplingSpec:
        return SamplingSpec(
            max_tokens=min(self.config.max_turn_tokens, self._remaining(ep)),
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            top_k=self.config.top_k,
            seed=derive_seed(ep.seed, turn),
            stop=STOP_STRINGS,
            logprobs=True,
            regex=self.turn_regex(ep, turn) if self.turn_regex else None,
        )

    def _record_turn(self, ep: Episode, gen) -> str | None:
        """Append the turn's tokens; return its search query, if it made one."""
        action = parse_action(gen.text)
        logprobs = list(gen.logprobs or []) or None
        ep.add_turn(list(gen.token_ids), gen.text, action.kind, None, logprobs)
        cut_by_budget = gen.finish_reason == "length" and self._remaining(ep) < 1
        kind = "truncated" if cut_by_budget and action.kind == "invalid" else action.kind
        ep.turns[-1]["action"] = kind
        ep.turns[-1]["query"] = action.content if kind == "search" else None
        if kind == "answer":
            ep.finish_reason = "answer"
        elif kind == "truncated":
            ep.finish_reason = "max_tokens"
        elif kind == "search":
            return action.content
        else:  # invalid: tell the policy, as Search-R1 does, and let it try again
            ep.turns[-1]["query"] = None
            return ""
        return None

    def _observe(self, searches: list[tuple[Episode, str]], last_turn: bool) -> None:
        """Run the batched tool call and append each observation (unless nobody reads it)."""
        if last_turn or not searches:
            return
        real = [(ep, q) for ep, q in searches if q]
        observations = self.tool.run([q for _, q in real]) if real else []
        texts: dict[int, str] = {}
        for (ep, _), obs in zip(real, observations, strict=True):
            ep.count_tool_result(obs)
            texts[id(ep)] = obs.text
        for ep, query in searches:
            tokens = self.observation_tokens(texts[id(ep)] if query else INVALID_ACTION_TEXT)
            if len(tokens) >= self._remaining(ep):
                ep.finish_reason = "max_tokens"  # no room for another turn: drop the observation
                continue
            ep.add_observation(tokens)
