"""A synthetic multi-hop QA world for tiny-model runs: questions, golds, demonstrations.

Deterministic by seed. A question names one entity and composes 1..max_hops
relations ("In which country is the birthplace of Vorn Kadel?"); answering it
takes one search per hop, each query being the name of the entity the hop is
about: copied from the question for the first hop, from the last observation
afterwards. Entities, facts and passages: `synthetic_world.py`.

Every question (start entity + relation path, all entities on the path
distinct) is enumerated; per hop count, a seeded shuffle sends `eval_fraction`
(20%) to `eval` and the rest to `train`, so the splits are disjoint and fixed by
the seed. `questions(split, n)` interleaves hop counts round-robin and cycles
through the split when n exceeds it (question ids stay unique; `key` repeats).

World kinds (`EnvConfig.world`; the easy one is the default and never changes):

- easy: `synthetic_world.World`, every name word unique to its entity.
- hard: `synthetic_hard.HardWorld`, namesakes (knob `name_sharing`: entities per
  shared name word, default 2): a partial query returns a namesake's passages,
  only the full name retrieves the right ones. Eval holds out whole START
  entities (`eval_fraction` of the questions, seeded), so training never asks
  about them (they still appear inside training chains and observations).
  Questions end on the name ("What is the country of the birthplace of Vorn
  Kadel?", "Who is the founder of Brimex Labs?"): with the name at a fixed place
  the tiny model learns to copy it (with the easy phrasing it kept recalling a
  namesake's first name from memory instead, EM 0 on held-out entities).

Difficulty mix of the `hard` presets (seed 0, 160 people, max_hops 4,
eval_fraction 0.16; 347 entities, 520 passages, BM25 top-3):

    hops        1     2     3     4   total
    train     494   576   623   617    2310   (from 285 start entities)
    eval       93   115   119   123     450   (from 62 other start entities)

Usage:
    world = SyntheticWorld(seed=0, num_entities=60, max_hops=2)
    hard = SyntheticWorld.from_config(preset("hard").env)   # a2tgpo.presets.preset
    tool = SearchTool(BM25Retriever(world.corpus), topk=3)
    q = world.questions("train", 1)[0]; turns = world.demonstration(q, tool)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from a2tgpo.envs.prompting import COMPACT, PromptTemplate, load_template, wrap_observation
from a2tgpo.envs.retrievers import Passage, Retriever
from a2tgpo.envs.synthetic_hard import HardWorld
from a2tgpo.envs.synthetic_world import Fact, World
from a2tgpo.envs.tools import SearchTool

if TYPE_CHECKING:
    from a2tgpo.config import EnvConfig

EVAL_FRACTION = 0.2
DATA_SOURCE = "synthetic"

# relation -> (noun phrase of its value, question asking for its value), around "{x}".
RELATIONS: dict[str, tuple[str, str]] = {
    "born_in": ("the birthplace of {x}", "Where was {x} born?"),
    "works_for": ("the employer of {x}", "Which company does {x} work for?"),
    "spouse": ("the spouse of {x}", "Who is {x} married to?"),
    "founded_by": ("the founder of {x}", "Who founded {x}?"),
    "located_in": ("the country of {x}", "In which country is {x}?"),
    "capital_of": ("the capital of {x}", "What is the capital of {x}?"),
}


@dataclass(frozen=True)
class Question:
    """A question, its gold answers and the facts a perfect agent looks up, in order."""

    question_id: str
    text: str
    golds: tuple[str, ...]
    hops: int
    chain: tuple[Fact, ...]
    split: str
    key: str  # identifies the underlying question; repeats when a split is cycled


@dataclass(frozen=True)
class DemoTurn:
    """One assistant turn of a demonstration and the observation the loop appends after it."""

    action: str  # "<search>name</search>" or "<answer>gold</answer>"
    observation: str = ""  # wrapped "\n<information>...</information>\n"; "" after the answer

    @property
    def text(self) -> str:
        return self.action + self.observation


def question_text(entity: str, relations: tuple[str, ...]) -> str:
    """Compose the relations applied to the entity, innermost first, into one question."""
    x = entity
    for rel in relations[:-1]:
        x = RELATIONS[rel][0].format(x=x)
    return RELATIONS[relations[-1]][1].format(x=x)


def name_last_question(entity: str, relations: tuple[str, ...]) -> str:
    """The hard world's form: one noun phrase, the entity's name last ("What is the
    country of the birthplace of Vorn Kadel?"), so the name always sits before the "?"."""
    x = entity
    for rel in relations:
        x = RELATIONS[rel][0].format(x=x)
    return f"{'Who' if relations[-1] in ('spouse', 'founded_by') else 'What'} is {x}?"


class SyntheticWorld:
    """The world, its question splits, and ideal transcripts for supervised warm-start."""

    def __init__(
        self,
        seed: int = 0,
        num_entities: int = 60,
        max_hops: int = 2,
        world: str = "easy",
        name_sharing: int = 2,
        eval_fraction: float = EVAL_FRACTION,
        template: PromptTemplate = COMPACT,
    ):
        if not 1 <= max_hops <= 4:
            raise ValueError(f"max_hops must be in 1..4, got {max_hops}")
        if world not in ("easy", "hard"):
            raise ValueError(f"world must be 'easy' or 'hard', got {world!r}")
        self.seed = seed
        self.max_hops = max_hops
        self.kind = world
        self.eval_fraction = eval_fraction
        self.template = template  # prompts and warm-start demonstrations alike
        self.world = (
            World(seed, num_entities)
            if world == "easy"
            else HardWorld(seed, num_entities, name_sharing)
        )
        chains = self._enumerate()
        self._splits = self._split(chains) if world == "easy" else self._split_by_start(chains)
        self._tool: SearchTool | None = None
        self._id_prefix = "syn" if world == "easy" else "syn-hard"
        self._phrase = question_text if world == "easy" else name_last_question

    @classmethod
    def from_config(cls, env: EnvConfig) -> SyntheticWorld:
        """The world an EnvConfig describes (kind, seed, size, hops and the hard world's knobs)."""
        return cls(
            env.seed,
            env.num_entities,
            env.max_hops,
            world=env.world,
            name_sharing=env.name_sharing,
            eval_fraction=env.eval_fraction,
            template=load_template(env.prompt_template),
        )

    @property
    def corpus(self) -> list[Passage]:
        """One passage per stated fact (a spouse or capital passage states two)."""
        return list(self.world.passages)

    def _enumerate(self) -> dict[int, list[tuple[Fact, ...]]]:
        """Every chain of 1..max_hops facts through distinct entities, by hop count."""
        by_subject: dict[str, list[Fact]] = {}
        for (subject, _), fact in sorted(self.world.facts.items()):
            by_subject.setdefault(subject, []).append(fact)
        chains: dict[int, list[tuple[Fact, ...]]] = {h: [] for h in range(1, self.max_hops + 1)}

        def extend(chain: tuple[Fact, ...], seen: frozenset[str]) -> None:
            chains[len(chain)].append(chain)
            if len(chain) < self.max_hops:
                for fact in by_subject.get(chain[-1].object, []):
                    if fact.object not in seen:
                        extend((*chain, fact), seen | {fact.object})

        for subject in sorted(by_subject):
            for fact in by_subject[subject]:
                if fact.object != subject:
                    extend((fact,), frozenset({subject, fact.object}))
        return chains

    def _split(self, chains: dict[int, list[tuple[Fact, ...]]]) -> dict[str, list[list[Any]]]:
        rng = random.Random(f"a2tgpo-synthetic-split-{self.seed}")
        splits: dict[str, list[list[Any]]] = {"train": [], "eval": []}
        for hops in sorted(chains):
            pool = list(chains[hops])
            rng.shuffle(pool)
            n_eval = max(1, round(self.eval_fraction * len(pool))) if len(pool) > 1 else 0
            splits["eval"].append(pool[:n_eval])
            splits["train"].append(pool[n_eval:])
        return splits

    def _split_by_start(
        self, chains: dict[int, list[tuple[Fact, ...]]]
    ) -> dict[str, list[list[Any]]]:
        """Hard world: whole start entities go to eval (in seeded order) until it holds
        `eval_fraction` of the questions, so training never asks about them."""
        starts: dict[str, int] = {}
        for pool in chains.values():
            for chain in pool:
                starts[chain[0].subject] = starts.get(chain[0].subject, 0) + 1
        order = sorted(starts)
        random.Random(f"a2tgpo-synthetic-hard-split-{self.seed}").shuffle(order)
        target, held, count = self.eval_fraction * sum(starts.values()), set(), 0
        for entity in order:
            if count >= target:
                break
            held.add(entity)
            count += starts[entity]
        rng = random.Random(f"a2tgpo-synthetic-hard-order-{self.seed}")
        splits: dict[str, list[list[Any]]] = {"train": [], "eval": []}
        for hops in sorted(chains):
            pool = list(chains[hops])
            rng.shuffle(pool)
            splits["eval"].append([c for c in pool if c[0].subject in held])
            splits["train"].append([c for c in pool if c[0].subject not in held])
        return splits

    def _ordered(self, split: str) -> list[tuple[Fact, ...]]:
        """The split's chains, hop counts interleaved round-robin."""
        strata = self._splits[split]
        out: list[tuple[Fact, ...]] = []
        for i in range(max((len(s) for s in strata), default=0)):
            out.extend(s[i] for s in strata if i < len(s))
        return out

    def num_questions(self, split: str) -> int:
        """Distinct questions in a split."""
        return len(self._ordered(self._check(split)))

    def _check(self, split: str) -> str:
        if split not in self._splits:
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        return split

    def questions(self, split: str, n: int | None = None) -> list[Question]:
        """The first n questions of a split (all if None), cycling when n exceeds it."""
        chains = self._ordered(self._check(split))
        n = len(chains) if n is None else n
        if n > 0 and not chains:
            raise ValueError(f"the {split} split is empty; use more entities")
        out = []
        for i in range(n):
            chain = chains[i % len(chains)]
            start, relations = chain[0].subject, tuple(f.relation for f in chain)
            out.append(
                Question(
                    question_id=f"{self._id_prefix}-s{self.seed}-{split}-{i:06d}",
                    text=self._phrase(start, relations),
                    golds=(chain[-1].object,),
                    hops=len(chain),
                    chain=chain,
                    split=split,
                    key=f"{start}|{'/'.join(relations)}",
                )
            )
        return out

    def search_tool(self, topk: int = 3) -> SearchTool:
        """A BM25 search tool over this world's corpus (built once, in memory)."""
        if self._tool is None or self._tool.topk != topk:
            from a2tgpo.envs.bm25 import BM25Retriever

            self._tool = SearchTool(BM25Retriever(self.world.passages), topk=topk)
        return self._tool

    def demonstration(
        self, question: Question, tool: SearchTool | Retriever | None = None
    ) -> list[DemoTurn]:
        """The ideal transcript: one search per hop (the hop's entity), then the gold answer.

        A space follows each opening tag, so a name after a tag is the same token
        sequence as the name inside a sentence (" Zek Branu" in both): a byte-level
        BPE tokenizer would otherwise give the first word a different token after
        the tag, and copying a name would need a learned mapping per name.

        Observations come from the real tool, so they are what the agent sees in
        rollouts. A bare retriever is wrapped in a top-3 SearchTool.
        """
        if tool is None:
            tool = self.search_tool()
        elif not isinstance(tool, SearchTool):
            tool = SearchTool(tool, topk=3)
        turns = []
        for fact in question.chain:
            observation = tool.run_one(fact.subject)
            turns.append(
                DemoTurn(f"<search> {fact.subject}</search>", wrap_observation(observation.text))
            )
        turns.append(DemoTurn(f"<answer> {question.golds[0]}</answer>"))
        return turns

    @staticmethod
    def transcript(turns: list[DemoTurn]) -> str:
        """The assistant message a demonstration amounts to (turns and observations)."""
        return "".join(t.text for t in turns)

    def texts(self, max_demonstrations: int = 4000) -> list[str]:
        """All text of the world, for training a tokenizer: passages, prompts, transcripts."""
        out = [m["content"] for m in self.template.messages("") if m["content"]]
        out += [p.contents for p in self.world.passages]
        for split in ("train", "eval"):
            out += [q.text for q in self.questions(split)]
        for q in self.questions("train")[:max_demonstrations]:
            out.append(self.transcript(self.demonstration(q)))
        return out

    def to_prompts(self, split: str, n: int | None = None) -> list[dict[str, Any]]:
        """Prompt rows (PROMPTS columns; `meta` is a dict for the writer to JSON-encode),
        their messages rendered by the world's prompt template."""
        return [
            {
                "prompt_id": q.question_id,
                "messages": self.template.messages(q.text),
                "golds": list(q.golds),
                "data_source": DATA_SOURCE,
                "split": split,
                "question": q.text,
                "meta": {"hops": q.hops, "key": q.key, "seed": self.seed}
                | ({"world": self.kind} if self.kind != "easy" else {}),
            }
            for q in self.questions(split, n)
        ]

    @cached_property
    def stats(self) -> dict[str, Any]:
        """Sizes worth logging: corpus, entities, vocabulary, questions per split and hop count."""
        words = {w for p in self.world.passages for w in p.contents.lower().split()}
        return {
            "passages": len(self.world.passages),
            "entities": len(self.world.kind),
            "corpus_words": len(words),
            "max_mentions": max(self.world.mentions().values()),
            **{
                f"{split}_hops{h + 1}": len(stratum)
                for split, strata in self._splits.items()
                for h, stratum in enumerate(strata)
            },
        }
