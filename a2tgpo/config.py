"""One pydantic config tree for the whole pipeline.

Every field carries a description: Prefect renders its run form from them, the CLI
prints them in `--help`, and MLflow records the flattened tree as params. Named
experiments are functions in `a2tgpo.presets`, not flags. Credentials never live
here: they come from the environment (see `StorageConfig`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field

from a2tgpo.config_lora import LoraConfig
from a2tgpo.config_rules import Section as _Section
from a2tgpo.config_rules import check_run_id, check_storage_root, refuse_credentials
from a2tgpo.config_train import PipelineConfig, TrainConfig, WarmstartConfig

if TYPE_CHECKING:  # only for the annotation: a2tgpo.algo imports torch
    from a2tgpo.algo import EstimatorSettings


# Value rules (a2tgpo/config_rules.py): checked when a config is built or assigned, so a
# credential or an escaping run id never reaches Prefect, MLflow or storage.
UrlStr = Annotated[str, AfterValidator(refuse_credentials)]  # any URL or URI field
StorageRoot = Annotated[str, AfterValidator(check_storage_root)]
RunId = Annotated[str, AfterValidator(check_run_id)]


class StorageConfig(_Section):
    root: StorageRoot = Field(
        "runs",
        description="Where stage datasets and checkpoints live: a local folder or s3://bucket/prefix.",
    )
    endpoint_url: UrlStr | None = Field(
        None,
        description="S3 endpoint (MinIO, moto, ...). None = AWS default. Credentials come from "
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment, never from config.",
    )
    region: str | None = Field(None, description="S3 region; None = the environment's default.")
    rows_per_part: int = Field(
        4096, ge=1, description="Rows per Parquet part file when a stage commits a dataset."
    )


class ModelConfig(_Section):
    policy: UrlStr = Field(
        "",
        description="Initial policy: an HF model folder or id. Empty = build the project's tiny "
        "model under {storage.root}/{run_id}/model-init (make-tiny-model).",
    )
    tiny_hidden: int = Field(128, ge=64, description="Tiny model: hidden size.")
    tiny_layers: int = Field(2, ge=1, description="Tiny model: transformer layers.")
    tiny_heads: int = Field(
        2,
        ge=1,
        description="Tiny model: attention heads (head_dim = hidden/heads; vLLM CPU needs 64).",
    )
    tiny_vocab: int = Field(2048, ge=300, description="Tiny model: BPE vocabulary size.")
    tiny_max_positions: int = Field(2048, ge=256, description="Tiny model: context length.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype in engines and trainer. auto = bf16 on GPU, fp32 on CPU."
    )
    lora: LoraConfig = Field(
        default_factory=LoraConfig,
        description="LoRA adapters on the frozen policy (off unless lora.rank > 0).",
    )


class EnvConfig(_Section):
    kind: Literal["synthetic", "search_qa"] = Field(
        "synthetic",
        description="synthetic: the generated multi-hop world (deterministic by seed). "
        "search_qa: prompts from a dataset (verl / FlashRAG format) with a configured retriever.",
    )
    seed: int = Field(0, description="Seed of the synthetic world (entities, corpus, questions).")
    num_entities: int = Field(
        16,
        ge=4,
        description="Synthetic world: people (cities, companies and countries scale with it). "
        "Small worlds let the embedded tiny model learn within minutes on a CPU.",
    )
    max_hops: int = Field(
        2, ge=1, le=4, description="Synthetic world: most lookups a question needs."
    )
    world: Literal["easy", "hard"] = Field(
        "easy",
        description="Synthetic world: easy = every name word belongs to one entity, eval "
        "questions drawn per hop count. hard = namesakes (people sharing a first name or "
        "surname, cities and companies sharing a name word) so that only the full name "
        "retrieves the right passages, and eval questions start at entities training never "
        "starts at (see a2tgpo/envs/synthetic_hard.py).",
    )
    name_sharing: int = Field(
        2,
        ge=1,
        description="Hard synthetic world: entities sharing each made-up name word "
        "(1 = no namesakes).",
    )
    eval_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Synthetic world: share of the questions held out for evaluation "
        "(easy: per hop count; hard: by whole start entities).",
    )
    prompt_template: str = Field(
        "compact",
        description="How a question becomes the prompt: compact (the project's short system "
        "instruction), search-r1 (Search-R1's), igpo (IGPO's), none (messages as given), or a "
        "template file (.txt with a {question} slot, or .json/.yaml with the PromptTemplate "
        "fields). Prompts that already carry an instruction (a system message, or tool tags in "
        "the user message) are left alone. The same template prompts the synthetic world, the "
        "warm-start demonstrations and sets the IG answer prefix (a2tgpo/envs/prompting.py).",
    )
    dataset: UrlStr = Field(
        "", description="search_qa: training prompts file (verl parquet or FlashRAG jsonl/parquet)."
    )
    eval_dataset: UrlStr = Field("", description="search_qa: held-out prompts file.")
    retriever: Literal["bm25", "http"] = Field(
        "bm25",
        description="bm25: local bm25s index over `corpus`. http: a Search-R1 retrieval server.",
    )
    corpus: UrlStr = Field(
        "",
        description="bm25 over search_qa: a jsonl of passages ({'contents': ...} or {'text': ...}).",
    )
    retriever_url: UrlStr = Field("", description="http: the server's /retrieve URL.")
    topk: int = Field(3, ge=1, description="Passages per search.")
    retriever_timeout_s: float = Field(
        10.0,
        gt=0,
        description="http: total deadline of one request (connect, headers and body together).",
    )
    retriever_retries: int = Field(
        3, ge=0, description="http: retries with backoff before a tool error."
    )
    retriever_max_response_bytes: int = Field(
        16 * 2**20,
        ge=1024,
        description="http: largest response body read (decoded); a larger one is a retried "
        "tool error ('response too large').",
    )
    max_question_chars: int = Field(
        16_384,
        ge=1,
        description="search_qa: longest question a dataset row may hold, in characters "
        "(FlashRAG's `question`, or all messages of a verl `prompt` together). A longer row "
        "is a bad row: a loader error naming it, checked before anything is tokenized.",
    )
    max_gold_chars: int = Field(
        131_072,
        ge=1,
        description="search_qa: most characters of a row's gold answers together (TriviaQA's "
        "alias lists reach ~42k). A longer row is a bad row, like an over-long question.",
    )


class RolloutConfig(_Section):
    engine: Literal["vllm", "hf"] = Field(
        "vllm",
        description="Generation engine: vLLM (CPU or CUDA build) or HF transformers generate.",
    )
    prompts_per_iteration: int = Field(16, ge=1, description="Prompts sampled per iteration.")
    group_size: int = Field(8, ge=1, description="G: rollouts per prompt (a group).")
    max_turns: int = Field(4, ge=1, description="Most assistant turns per trajectory.")
    max_turn_tokens: int = Field(48, ge=1, description="Most tokens generated in one turn.")
    max_total_tokens: int = Field(
        768,
        ge=16,
        description="Token budget of a whole trajectory (prompt + turns + observations).",
    )
    max_observation_tokens: int = Field(
        160, ge=8, description="Observations longer than this are cut (head kept)."
    )
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    top_k: int = Field(0, ge=0, description="Top-k sampling: the k most likely tokens (0 = off).")
    logprobs: Literal["raw", "sampled"] = Field(
        "sampled",
        description="Which distribution the PPO ratio and the stored rollout log-probs use. "
        "sampled: the one tokens are drawn from (vLLM processed_logprobs: logits/temperature, "
        "top-k/top-p cut); the trainer divides its logits by the temperature (verl's rule). "
        "raw: the untempered model, log_softmax(logits), in engine and trainer. The two agree "
        "at temperature 1 without top-k/top-p; the run warns at start when the distribution "
        "sampled differs from the trainer's (top-k/top-p cuts, greedy, raw at temperature != 1).",
    )
    seed: int = Field(
        0, description="Base seed; each trajectory's seed derives from it and its id."
    )
    keep_engine: bool = Field(
        True,
        description="Keep one engine across iterations and reload each new policy in place "
        "(one machine, colocated). False: start the engine from every checkpoint and free it "
        "after the stage (a pod per stage in a cluster).",
    )
    kv_cache_gib: float = Field(1.0, gt=0, description="vLLM CPU: KV cache size in GiB.")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallelism (GPUs).")


class RewardConfig(_Section):
    metric: Literal["em", "f1"] = Field(
        "em", description="Outcome reward: exact match or token F1."
    )
    format_penalty: float = Field(
        0.0, description="Outcome when the answer tag is missing or malformed (IGPO: -2 on F1)."
    )


class IGConfig(_Section):
    scorer: Literal["packed", "naive", "vllm"] = Field(
        "packed",
        description="packed: one forward per trajectory with all probes fenced off by an attention "
        "mask. naive: one forward per probe (reference). vllm: prompt log-probs, prefix caching.",
    )
    mode: Literal["prob_diff", "log_prob_diff"] = Field(
        "prob_diff", description="IG = f(v(h_k)) - f(v(h_k-1)) with f = exp or identity."
    )
    multi_gold: Literal["first", "max"] = Field(
        "first",
        description="Several gold answers: score the first, or take the max of v over them.",
    )
    answer_prefix: str | None = Field(
        None,
        description="Text teacher-forced after a context, before the gold answer (the tokens "
        "covering the gold's characters are scored). None = the prompt template's "
        "(compact / search-r1: '<answer> '; igpo: IGPO's '\\nNow there's enough information "
        "to answer\\n</think>\\n<answer>\\n').",
    )
    tokens_per_batch: int = Field(
        16384, ge=256, description="Token budget of one scoring forward (trajectories + probes)."
    )


class EstimatorConfig(_Section):
    name: Literal["grpo", "igpo", "a2tgpo"] = Field("a2tgpo", description="Advantage estimator.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount of later turns' normalized IG.")
    clip_eps_low: float = Field(
        0.2, gt=0, description="PPO lower clip range (before per-turn scaling)."
    )
    clip_eps_high: float = Field(
        0.2, gt=0, description="PPO upper clip range (before per-turn scaling)."
    )
    clip_beta: float = Field(
        0.3, ge=0, lt=1, description="Adaptive clip strength: c = 1 + beta*tanh(IGn/2)."
    )
    turn_group_norm: bool | None = Field(
        None,
        description="Normalize IG per (prompt, turn index); off = pooled per prompt. None = default.",
    )
    variance_rescale: bool | None = Field(
        None, description="Divide the accumulated IG by sqrt(#terms). None = estimator default."
    )
    adaptive_clip: bool | None = Field(
        None, description="Per-turn clip ranges from normalized IG. None = estimator default."
    )
    clip_magnitude: bool = Field(False, description="Adaptive clip on |IGn| instead of IGn.")
    ig_coef: float | None = Field(None, description="alpha; None = default (a2tgpo 0.3, igpo 1.0).")
    grpo_warmup_iterations: int = Field(
        0,
        ge=0,
        description="Train the first N iterations with outcome-only GRPO advantages (same clip "
        "ranges, no IG terms), then switch to this estimator: the released A²TGPO code's "
        "optional warm-up. MLflow records `estimator/grpo_warmup` per iteration.",
    )

    # Fields that say when, not how: every other field is an `EstimatorSettings` field.
    SCHEDULE_FIELDS: ClassVar[frozenset[str]] = frozenset({"grpo_warmup_iterations"})

    def in_warmup(self, iteration: int | None) -> bool:
        """Whether iteration `iteration` is one of the GRPO warm-up iterations."""
        return iteration is not None and iteration < self.grpo_warmup_iterations

    def settings(self, iteration: int | None = None) -> EstimatorSettings:
        """The resolved `a2tgpo.algo.EstimatorSettings` (None switches take the estimator's
        default); GRPO with the configured clip ranges during the warm-up iterations."""
        from a2tgpo.algo import EstimatorSettings  # here, not at the top: config stays a leaf

        if self.in_warmup(iteration):
            return EstimatorSettings.of(
                "grpo", clip_eps_low=self.clip_eps_low, clip_eps_high=self.clip_eps_high
            )
        switches = self.model_dump(exclude=set(self.SCHEDULE_FIELDS))
        return EstimatorSettings.of(**switches)


class EvalConfig(_Section):
    every: int = Field(
        2, ge=0, description="Evaluate every N iterations (0 = never; also at the end)."
    )
    initial: bool = Field(
        True,
        description="Also evaluate the starting policy (after warm-start) before RL: "
        "the baseline of the later evaluations.",
    )
    prompts: int = Field(64, ge=1, description="Held-out prompts per evaluation.")
    prompts_per_source: int = Field(
        0,
        ge=0,
        description="Held-out prompts per data source instead (0 = off, use `prompts`): the "
        "seven-benchmark table samples each benchmark alike.",
    )
    sampled_group: int = Field(4, ge=1, description="Samples per prompt in the sampled evaluation.")


class TrackingConfig(_Section):
    mlflow_uri: UrlStr = Field(
        "",
        description="MLflow tracking URI; empty = sqlite:///{storage.root}/mlflow.db for a local "
        "store, $A2TGPO_CACHE/mlflow/mlflow.db (default ~/.cache/a2tgpo) for an s3:// store.",
    )
    experiment: str = Field(
        "",
        description="MLflow experiment; empty = 'a2tgpo-estimators-<env.kind>', so every preset "
        "and estimator on one environment compares side by side.",
    )
    parent_run_id: str = Field(
        "",
        description="MLflow run id of a sweep's parent run: this run is nested under it "
        "(set by `a2tgpo sweep`; empty = a top-level run).",
    )
    sweep_id: str = Field(
        "", description="The sweep this run is a member of (set by `a2tgpo sweep`); a tag."
    )
    log_model: Literal["auto", "upload", "reference", "off"] = Field(
        "auto",
        description="The final policy as an MLflow logged model (registrable): upload = the HF "
        "folder in MLflow's transformers flavour; reference = an external model entry holding "
        "the checkpoint's URI, nothing uploaded (models of GBs); auto = upload the project's "
        "tiny model, reference any other (model.policy set).",
    )
    system_metrics_s: float = Field(
        10.0,
        ge=0,
        description="Seconds between samples of MLflow's system metrics (CPU, memory, disk, "
        "network, GPU: `system/...`); 0 = off.",
    )


class RunConfig(_Section):
    run_id: RunId = Field(
        "default",
        description="Name of the run folder under storage.root: letters, digits, '.', '_', '-'.",
    )
    preset: str = Field("a2tgpo", description="Name of the preset this config came from.")
    seed: int = Field(0, description="Global seed.")
    iterations: int = Field(
        6, ge=1, description="RL iterations (rollout, score, advantages, train)."
    )
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object storage.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Policy model.")
    env: EnvConfig = Field(default_factory=EnvConfig, description="Environment and tools.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="Rollout generation.")
    reward: RewardConfig = Field(default_factory=RewardConfig, description="Outcome reward.")
    ig: IGConfig = Field(default_factory=IGConfig, description="Information-gain scoring.")
    estimator: EstimatorConfig = Field(
        default_factory=EstimatorConfig, description="Advantage estimator and clip ranges."
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Policy update.")
    warmstart: WarmstartConfig = Field(
        default_factory=WarmstartConfig, description="Supervised warm-start."
    )
    pipeline: PipelineConfig = Field(
        default_factory=PipelineConfig, description="Trainer processes and stage overlap."
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow.")
