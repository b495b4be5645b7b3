"""Prompt templates: the one place that says how a question becomes the policy's prompt.

A `PromptTemplate` turns a bare question into chat messages (an instruction as a system
message, or rendered into the user message around a `{question}` slot) and names the
text that IG scoring teacher-forces before the gold answer (`answer_prefix`). The
synthetic world, the warm-start demonstrations, search-QA datasets and the IG scorer
all take the template from `env.prompt_template`, so the format the policy is taught,
the one it is prompted with and the one IG is scored in cannot drift apart.

Built-ins (`TEMPLATES`):

- `compact`: the project's short system instruction (the default; every prompt token
  costs context in the tiny model's 2k window).
- `search-r1`: Search-R1's instruction in the user message (reason in <think>, search
  with <search>, results in <information>, answer in <answer>), as its data scripts
  render NQ / HotpotQA, so a Search-R1 checkpoint sees the prompt it was trained on.
- `igpo`: IGPO's system prompt (a research assistant that thinks, then either calls a
  tool or answers), with its tool call written as <search>, the one tool syntax this
  project's agent loop parses; IG is scored after IGPO's own answer prefix.
- `none`: the messages as given (a bare question stays bare).

Any other value is a file: `.json` / `.yaml` with the `PromptTemplate` fields, or plain
text with a `{question}` slot (rendered into the user message).

Prompts that already carry an instruction (a system message, or a user message that
names the tool tags) are left alone; `render_prompts` counts them for the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from a2tgpo.config import IGConfig, RunConfig

OBSERVATION_OPEN = "\n<information>"
OBSERVATION_CLOSE = "</information>\n"
QUESTION_SLOT = "{question}"
# A user message naming one of these already tells the policy its tools.
TOOL_TAGS = ("<search>", "<answer>")
DEFAULT_ANSWER_PREFIX = "<answer> "

Placement = Literal["system", "user", "none"]


@dataclass(frozen=True)
class PromptTemplate:
    """How a question becomes chat messages, and the IG answer prefix that goes with it.

    placement "system": `instruction` is the system message, the question the user one.
    placement "user": `instruction` holds a `{question}` slot and is the user message.
    placement "none": the question alone as the user message.
    """

    name: str
    instruction: str
    placement: Placement
    answer_prefix: str = DEFAULT_ANSWER_PREFIX

    def __post_init__(self) -> None:
        if self.placement not in ("system", "user", "none"):
            raise ValueError(f"template {self.name!r}: unknown placement {self.placement!r}")
        if self.placement == "user" and QUESTION_SLOT not in self.instruction:
            raise ValueError(f"template {self.name!r}: a user template needs a {{question}} slot")
        if self.placement == "system" and QUESTION_SLOT in self.instruction:
            raise ValueError(f"template {self.name!r}: a system instruction has no question slot")

    def messages(self, question: str) -> list[dict[str, str]]:
        """The chat messages of a bare question."""
        question = question.strip()
        if self.placement == "system":
            return [
                {"role": "system", "content": self.instruction},
                {"role": "user", "content": question},
            ]
        if self.placement == "user":
            # replace, not str.format: instructions quote JSON and tags with braces
            return [{"role": "user", "content": self.instruction.replace(QUESTION_SLOT, question)}]
        return [{"role": "user", "content": question}]


COMPACT = PromptTemplate(
    "compact",
    "Answer the question. To look something up, write <search>query</search>; "
    "the results come back in <information>...</information>. "
    "Search as often as you need, then give the final answer as <answer>answer</answer>.",
    "system",
)

# Search-R1's instruction as its data scripts (scripts/data_process/*_search.py) render
# it, kept word for word: a Search-R1 checkpoint is sensitive to its own prompt.
SEARCH_R1 = PromptTemplate(
    "search-r1",
    "Answer the given question. You must conduct reasoning inside <think> and </think> "
    "first every time you get new information. After reasoning, if you find you lack some "
    "knowledge, you can call a search engine by <search> query </search> and it will return "
    "the top searched results between <information> and </information>. You can search as "
    "many times as your want. If you find no further external knowledge needed, you can "
    "directly provide the answer inside <answer> and </answer>, without detailed "
    "illustrations. For example, <answer> Beijing </answer>. Question: {question}\n",
    "user",
)

# IGPO's system prompt (tools_server/config.yaml of the released code): think first, then
# call a tool or answer. Its JSON <tool_call> is written as <search> here.
IGPO = PromptTemplate(
    "igpo",
    "You are a research assistant. The question I give you needs research to answer, "
    "and you have a search engine to help you.\n"
    "You don't have to answer the question now: first think about the research plan or "
    "what to search next. Your output format should be one of the following two formats:\n\n"
    "<think>\nYOUR THINKING PROCESS\n</think>\n<answer>\n"
    "YOUR ANSWER AFTER GETTING ENOUGH INFORMATION\n</answer>\n\nor\n\n"
    "<think>\nYOUR THINKING PROCESS\n</think>\n<search>\nYOUR SEARCH QUERY\n</search>\n\n"
    "Search results come back between <information> and </information>. "
    "You should always follow the above two formats strictly. Only output the final answer "
    "(in words, numbers or phrase) inside the <answer></answer> tag, without any "
    "explanations or extra information. If this is a yes-or-no question, you should only "
    "answer yes or no.",
    "system",
    answer_prefix="\nNow there's enough information to answer\n</think>\n<answer>\n",
)

NONE = PromptTemplate("none", "", "none")

TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (COMPACT, SEARCH_R1, IGPO, NONE)}


def load_template(name_or_path: str) -> PromptTemplate:
    """A built-in template by name, or one read from a file (see the module docstring)."""
    if name_or_path in TEMPLATES:
        return TEMPLATES[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(
            f"env.prompt_template {name_or_path!r} is neither a built-in "
            f"({', '.join(TEMPLATES)}) nor a file"
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".json", ".yaml", ".yml"):
        fields = _structured(path, text)
        return PromptTemplate(**{"name": path.stem, "placement": "system", **fields})
    return PromptTemplate(path.stem, text, "user")


def _structured(path: Path, text: str) -> dict[str, Any]:
    if path.suffix == ".json":
        fields = json.loads(text)
    else:
        import yaml

        fields = yaml.safe_load(text)
    allowed = {"name", "instruction", "placement", "answer_prefix"}
    if not isinstance(fields, dict) or not set(fields) <= allowed or "instruction" not in fields:
        raise ValueError(f"{path}: a template file holds 'instruction' and optionally {allowed}")
    return fields


def has_instruction(messages: Iterable[dict[str, str]]) -> bool:
    """Whether a prompt already tells the policy its tools: a system message, or a user
    message that names a tool tag."""
    for m in messages:
        if m["role"] == "system":
            return True
        if m["role"] == "user" and any(tag in m["content"] for tag in TOOL_TAGS):
            return True
    return False


def render_prompts(rows: list[dict[str, Any]], template: PromptTemplate) -> dict[str, Any]:
    """Give every PROMPTS row without an instruction the template's messages, in place.

    The question (`row["question"]`) is rendered; a row that already carries an
    instruction keeps its messages, and template `none` keeps every row's. Returns the
    counts the manifest records."""
    if template.placement == "none":  # the messages as given
        return {"prompt_template": template.name, "templated": 0, "kept": len(rows)}
    kept = 0
    for row in rows:
        if has_instruction(row["messages"]):
            kept += 1
            continue
        row["messages"] = template.messages(row["question"])
    return {"prompt_template": template.name, "templated": len(rows) - kept, "kept": kept}


def answer_prefix(config: RunConfig) -> str:
    """The text IG scoring teacher-forces before a gold: `ig.answer_prefix` when set,
    else the prompt template's."""
    if config.ig.answer_prefix is not None:
        return config.ig.answer_prefix
    return load_template(config.env.prompt_template).answer_prefix


def resolved_ig(config: RunConfig) -> IGConfig:
    """`config.ig` with its answer prefix resolved (see `answer_prefix`)."""
    return config.ig.model_copy(update={"answer_prefix": answer_prefix(config)})


def wrap_observation(text: str) -> str:
    """The observation as the loop appends it after a search turn (Search-R1 format)."""
    return f"{OBSERVATION_OPEN}{text}{OBSERVATION_CLOSE}"


__all__ = [
    "COMPACT",
    "IGPO",
    "SEARCH_R1",
    "TEMPLATES",
    "PromptTemplate",
    "answer_prefix",
    "has_instruction",
    "load_template",
    "render_prompts",
    "resolved_ig",
    "wrap_observation",
]
