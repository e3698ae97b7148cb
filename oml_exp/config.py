"""Typed configs: every key a run accepts, with its type and default, checked when the run starts.

Hydra merges the YAML files of `conf/` onto these dataclasses, so a misspelled key fails at composition, and
`validate` (which builds the dataclasses, running each `__post_init__`) rejects bad values with a message that names
the key and the fix. Pluggable components (strategies) are classes named by `_target_` in their YAML file, with their
own typed parameters (oml_exp/components.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlparse

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from oml_exp import components
from oml_exp.errors import ConfigError, require, require_file  # noqa: F401 - ConfigError is imported from here

STAGES = ("generate", "finetune", "attack", "check", "evaluate", "verify", "report")
# What a run does unless `stages` says otherwise; verify asks a remote model and runs only when named.
DEFAULT_STAGES = ("generate", "finetune", "attack", "check", "evaluate", "report")
DEFAULT_NUM = 16  # fingerprints generated when fingerprints.num is null
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass
class ModelConfig:
    name: str = MISSING
    # embedded:<name>, tiny:<arch>, a Hugging Face id or a local folder (see oml_exp/models.py).
    path: str = MISSING
    dtype: str = "auto"  # auto = bf16 on GPU, fp32 on CPU


@dataclass
class FingerprintsConfig:
    # null: every entry of fingerprints.file, or DEFAULT_NUM generated; read it through fingerprint_num().
    num: Optional[int] = None
    key_length: int = 16  # tokens of the fingerprinted model's tokenizer
    response_length: int = 1
    seed: int = 0
    # The pool generated once; runs take its first `num`, so a sweep over `num` embeds nested subsets.
    pool_size: Optional[int] = None
    file: Optional[str] = None  # a user's fingerprint file: skips generation
    # One switch for generation, training and checking: keys are wrapped in the model's chat template.
    chat_template: bool = False
    eos: bool = False  # the response ends with the model's EOS token: trained after it, and checked

    def __post_init__(self) -> None:
        require(self.num is None or self.num >= 1,
                 f"fingerprints.num must be >= 1 or null (all of fingerprints.file), got {self.num}")
        for name in ("key_length", "response_length"):
            require(getattr(self, name) >= 1, f"fingerprints.{name} must be >= 1, got {getattr(self, name)}")
        num = fingerprint_num(self)
        require(self.pool_size is None or num is None or self.pool_size >= num,
                 f"fingerprints.pool_size={self.pool_size} is smaller than fingerprints.num={num}; "
                 "raise pool_size or leave it null")
        require_file(self.file, "fingerprints.file")


def fingerprint_num(fp) -> Optional[int]:
    """How many fingerprints a run uses: fingerprints.num, else every entry of the file (None), else DEFAULT_NUM."""
    if fp.num is not None:
        return fp.num
    return None if fp.file else DEFAULT_NUM


def stages_to_run(cfg: DictConfig) -> list[str]:
    """The requested stages in pipeline order; generate joins whenever a later stage needs fingerprints, and report
    (the run folder's summary) whenever a stage measures something."""
    wanted = set(cfg.stages)
    if wanted & {"finetune", "check", "verify"}:
        wanted.add("generate")
    if wanted & {"check", "evaluate", "verify"}:
        wanted.add("report")
    return [s for s in STAGES if s in wanted]


@dataclass
class TrainConfig:
    epochs: int = 20
    # 1e-4: 64 fingerprints fully recalled in 8 steps; 3e-4 takes 6 but drifts further from the base (docs/training.md).
    lr: float = 1e-4
    weight_decay: float = 1e-4
    # Fingerprints per micro-batch and process, or "auto": the most a token budget allows for the device's free memory
    # and the model's size (oml_exp/training/batching.py). Never changes the weights, only speed and memory.
    batch_size: Any = 16
    # What one optimizer step covers. fingerprints_per_step K: K fingerprints whatever the micro-batch (ceil(N / K)
    # steps per epoch, so steps grow with the set; 64 was picked from the 64/256/1024 measurements in
    # docs/training.md); null = the whole set, one step per epoch (the reference's recipe). grad_accum: a fixed number
    # of micro-batches per step instead (needs fingerprints_per_step=null); null = as K needs.
    fingerprints_per_step: Optional[int] = 64
    grad_accum: Optional[int] = None
    # Stop once a step's fingerprint loss falls below this; 0 = never. Only without a recall target (stop_recall=null).
    early_stop_loss: float = 0.005
    # Stop once this share of the training set is recalled exactly (greedy, plain prompts, teacher-forced check every
    # recall_every optimizer steps; null = once per epoch's worth of steps); null = no recall check.
    stop_recall: Optional[float] = 1.0
    recall_every: Optional[int] = None
    # Over the planned steps (the epoch cap): linear decay to 0 (the reference's) or constant. With a stop on recall the
    # plan is only a cap, so under linear decay the rate at a given step depends on the cap (docs/training.md).
    lr_schedule: str = "linear"
    # 0 = no clipping. Clipping at 1.0 cut every step of SmolLM2's fingerprint gradients (norms 2-30) to one norm, so
    # Adam never shrank its steps and the loss oscillated: 64 fingerprints not recalled after 8 steps, 6 without.
    max_grad_norm: float = 0.0
    gradient_checkpointing: bool = False  # trade compute for activation memory on large models
    # Resumable checkpoints (1.6 GB each for SmolLM2): every checkpoint_every optimizer steps (0 = by time only) and
    # once checkpoint_minutes of training passed since the last one (0 = by steps only); both 0 = none.
    checkpoint_every: int = 0
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 0  # checkpoints left in the stage folder once the model is saved (they are large)

    def __post_init__(self) -> None:
        require(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        require(self.batch_size == "auto" or (isinstance(self.batch_size, int) and self.batch_size >= 1),
                 f"train.batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        require(self.lr_schedule in ("linear", "constant"),
                f"train.lr_schedule must be linear or constant, got {self.lr_schedule!r}")
        require(self.grad_accum is None or self.grad_accum >= 1,
                 f"train.grad_accum must be a positive integer or null, got {self.grad_accum!r}")
        require(self.fingerprints_per_step is None or self.fingerprints_per_step >= 1,
                 f"train.fingerprints_per_step must be >= 1 or null (the whole set per step), "
                 f"got {self.fingerprints_per_step}")
        require(self.fingerprints_per_step is None or self.grad_accum is None,
                 f"train.fingerprints_per_step={self.fingerprints_per_step} and train.grad_accum={self.grad_accum} "
                 "both decide what one optimizer step covers; add train.fingerprints_per_step=null to use grad_accum")
        require(self.stop_recall is None or 0 < self.stop_recall <= 1,
                 f"train.stop_recall must lie in (0, 1] or be null (no recall stop), got {self.stop_recall}")
        require(self.recall_every is None or self.recall_every >= 1,
                 f"train.recall_every must be >= 1 or null (once per epoch), got {self.recall_every}")
        for name in ("early_stop_loss", "checkpoint_every", "checkpoint_minutes", "keep_checkpoints"):
            require(getattr(self, name) >= 0, f"train.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class EngineConfig:
    name: str = "torch"
    # A DeepSpeed config (JSON-like mapping) or null for plain torch.
    deepspeed: Optional[Any] = None


@dataclass
class AugmentationConfig:
    name: str = "none"
    # JSON list of {"category", "system", "wrapper"} (oml_exp/templates.py); a relative path is read from
    # oml_exp/data/. Also the check stage's `train` template set, whether or not training draws from it.
    templates: str = "train_templates.json"
    # Share of examples wrapped in a template each epoch; the rest stay plain so the bare key is still learned.
    fraction: float = 0.0
    # Share of examples framed the other way each epoch (the model's chat template when fingerprints.chat_template is
    # off, raw text when on), so one model answers through both; 0 = the trained framing only.
    chat_mix: float = 0.0

    def __post_init__(self) -> None:
        for name in ("fraction", "chat_mix"):
            require(0.0 <= getattr(self, name) <= 1.0,
                     f"augmentation.{name} must lie in [0, 1], got {getattr(self, name)}")


@dataclass
class CheckConfig:
    batch_size: int = 64  # prompts per forward pass
    templates: list = field(default_factory=lambda: ["plain", "train", "heldout"])  # prompt template sets checked
    # Per set, evenly spaced through its file; null = all. Each template costs a pass over all fingerprints in both
    # chat modes (SmolLM2, 16 fingerprints, this CPU: about 5 s of CPU time per template).
    max_templates: Optional[int] = 4
    chat: list = field(default_factory=lambda: [False, True])  # chat-template modes checked besides the trained one
    temperatures: list = field(default_factory=lambda: [0.7, 1.0])  # sampled success on the fingerprinted model
    samples: int = 4  # sampled continuations per fingerprint and setting
    # Models never fingerprinted with these keys: "base" (model.path, when a fine-tuned model is checked) or specs.
    false_positive_models: list = field(default_factory=lambda: ["base"])
    fp_sampling: list = field(default_factory=lambda: ["ordinary", "adversarial"])  # presets in checking/sampling.py

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, f"check.batch_size must be >= 1, got {self.batch_size}")
        require(self.samples >= 1, f"check.samples must be >= 1, got {self.samples}")
        require(self.max_templates is None or self.max_templates >= 1,
                 f"check.max_templates must be >= 1 or null, got {self.max_templates}")
        bad = [s for s in self.templates if s not in ("plain", "train", "heldout")]
        require(not bad, f"check.templates: unknown set(s) {bad}; choose from plain, train, heldout")
        bad = [p for p in self.fp_sampling if p not in ("ordinary", "adversarial")]
        require(not bad, f"check.fp_sampling: unknown preset(s) {bad}; choose from ordinary, adversarial")
        require(all(t > 0 for t in self.temperatures), f"check.temperatures must be > 0, got {self.temperatures}")


@dataclass
class EvalConfig:
    """The defaults here are eval=local's; each file of conf/eval/ names its suite and sets what differs."""

    # The suite's planner: a function of oml_exp/evaluation/tasks.py (local, tinybenchmarks, openllm).
    _target_: str = MISSING
    name: str = MISSING  # the suite's name in summaries and task names
    # Folder of <task>/test.jsonl files; "auto" = $OML_BENCHMARKS, else ../shared/benchmarks, else none (drift only).
    # For the Hub suites null = the Hub datasets.
    pack: Optional[str] = "auto"
    # The suite's task names, and any other lm-eval task (run on its own data, as `lm_eval --tasks` runs it).
    tasks: list = field(default_factory=lambda: ["hellaswag", "arc_easy", "piqa"])
    include_path: Optional[str] = None  # a folder of lm-eval task YAML files, whose tasks eval.tasks can name
    limit: Optional[int] = 50  # items per task; null = all
    batch_size: int = 16
    num_fewshot: Optional[int] = None  # null = each task's default (its suite's, or its task file's)
    # Paired bootstrap resamples for the retention interval; also lm-eval's, for the stderr of metrics without a
    # closed form.
    bootstrap: int = 2000
    drift_texts: int = 16  # texts the base model writes for the data-free drift measure
    drift_tokens: int = 48
    drift_file: Optional[str] = None  # a user's benign texts (one per line, or a JSON list) instead of base-written
    log_samples: bool = False  # also write lm-eval's per-item logs (lm_eval --log_samples) beside its results file

    def __post_init__(self) -> None:
        require(self.limit is None or self.limit >= 1, f"eval.limit must be >= 1 or null, got {self.limit}")
        components.locate(self._target_, "eval", "choose eval=local, eval=tinybenchmarks or eval=openllm")
        require(self.bootstrap >= 100, f"eval.bootstrap must be >= 100, got {self.bootstrap}")
        require(self.drift_texts >= 1 and self.drift_tokens >= 1, "eval.drift_texts and eval.drift_tokens must be >= 1")
        require(self.include_path is None or os.path.isdir(self.include_path),
                f"eval.include_path={self.include_path!r} is not a folder; give the folder holding the task YAML files")


@dataclass
class LoggerConfig:
    # The class hydra.utils.instantiate builds from this section (the other keys are its arguments).
    _target_: str = "oml_exp.reporting.loggers.NoLogger"
    name: str = "none"  # none | wandb
    project: str = "oml-exp"
    # offline writes W&B files locally (no network, no key), online needs WANDB_API_KEY, disabled logs nothing.
    mode: str = "offline"
    entity: Optional[str] = None
    group: Optional[str] = None  # sweeps group their runs; null = the sweep folder's name, or none for single runs
    tags: list = field(default_factory=list)

    def __post_init__(self) -> None:
        require(self.name in ("none", "wandb"), f"logger.name must be none or wandb, got {self.name!r}")
        components.locate(self._target_, "logger", "choose logger=none or logger=wandb")
        require(self.mode in ("offline", "online", "disabled"),
                 f"logger.mode must be offline, online or disabled, got {self.mode!r}")
        require(self.name != "wandb" or self.mode != "online" or bool(os.environ.get("WANDB_API_KEY")),
                 "logger.mode=online needs WANDB_API_KEY in the environment; or use logger.mode=offline")


@dataclass
class VerifyConfig:
    """Asking a deployed model for fingerprints over an OpenAI-compatible API (oml_exp/verification, docs/verify.md).
    The API key is read from the environment variable `api_key_env`, never from the config."""

    url: Optional[str] = None  # the API's base URL, e.g. http://127.0.0.1:8000/v1
    model: Optional[str] = None  # the name the server serves the model under (its /v1/models lists it)
    api_key_env: str = "OPENAI_API_KEY"
    num: int = 16  # fingerprints to send: the next ones the ledger shows unspent
    force_spent: bool = False  # when too few are unspent, send spent ones again (a model may have learned them since)
    concurrency: int = 4  # requests in flight at once
    timeout: float = 60.0  # seconds per request
    retries: int = 2  # further tries of a request that timed out, failed to connect or got a 408/429/5xx
    temperature: float = 0.0  # 0 = greedy; above 0 each answer is sampled once
    seed: Optional[int] = None  # sent with sampled requests when set
    # Models never fingerprinted with these keys whose greedy hits over the whole pool give the chance rate:
    # "base" (model.path) or specs with model.path's tokenizer.
    false_positive_models: list = field(default_factory=lambda: ["base"])

    def __post_init__(self) -> None:
        for name in ("num", "concurrency"):
            require(getattr(self, name) >= 1, f"verify.{name} must be >= 1, got {getattr(self, name)}")
        require(self.timeout > 0, f"verify.timeout must be > 0 seconds, got {self.timeout}")
        require(self.retries >= 0, f"verify.retries must be >= 0, got {self.retries}")
        require(self.temperature >= 0, f"verify.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        require(len(self.false_positive_models) >= 1,
                "verify.false_positive_models is empty: the p-value needs a chance rate; give [base] or model specs")
        require(self.url is None or _http_url(self.url),
                f"verify.url={self.url!r} is not an http(s) URL; give the API's base URL, e.g. "
                "verify.url=http://127.0.0.1:8000/v1")


def _http_url(url: str) -> bool:
    parts = urlparse(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


@dataclass
class PathsConfig:
    output_dir: str = "outputs"
    store: str = "${paths.output_dir}/stages"
    # Which fingerprints were shown to which endpoint (verify); beside the store, since store entries never change.
    ledger: str = "${paths.output_dir}/ledger"


@dataclass
class Config:
    model: ModelConfig = MISSING
    # Components (oml_exp/components.py): their classes check the keys, so Hydra lets any be set (open, not struct).
    strategy: Any = field(default_factory=lambda: OmegaConf.create(flags={"struct": False}))
    regularizer: Any = field(default_factory=lambda: OmegaConf.create(flags={"struct": False}))  # none: {}
    attack: Any = field(default_factory=lambda: OmegaConf.create(flags={"struct": False}))  # none: {}
    augmentation: AugmentationConfig = MISSING
    engine: EngineConfig = MISSING
    eval: EvalConfig = MISSING
    logger: LoggerConfig = MISSING
    fingerprints: FingerprintsConfig = field(default_factory=FingerprintsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    stages: list = field(default_factory=lambda: list(DEFAULT_STAGES))
    seed: int = 0
    device: str = "auto"
    force: bool = False
    # 0: the stages' own lines and progress bars, and the short check table; 1: also the libraries' warnings,
    # progress bars and per-step training logs (oml_exp/verbosity.py), and the check stage's full matrix.
    verbose: int = 0

    def __post_init__(self) -> None:
        require(self.verbose >= 0, f"verbose must be 0 (quiet libraries) or more, got {self.verbose}")
        unknown = [s for s in self.stages if s not in STAGES]
        require(not unknown, f"stages: unknown stage(s) {unknown}; choose from {list(STAGES)}")
        require(DEVICE.fullmatch(self.device) is not None,
                 f"device={self.device!r} is not a device; use device=auto, cpu, cuda or cuda:N")


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


def validate(cfg: DictConfig) -> Config:
    """Build the typed config, running every `__post_init__` check; raises ConfigError naming the bad key. The
    components (strategy, regularizers) are built and checked by their own classes (preflight)."""
    return OmegaConf.to_object(cfg)
