"""Typed configs: every key a run accepts, with its type and default, checked when the run starts.

Hydra merges the YAML files of `conf/` onto these dataclasses, so a misspelled key fails at composition, and
`validate` (which builds the dataclasses, running each `__post_init__`) rejects bad values with a message that names
the key and the fix. Config groups whose members take different keys (`strategy`) register one schema per member.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

STAGES = ("generate", "finetune", "check", "evaluate", "report")
KEY_STRATEGIES = ("random_word", "english")  # strategies that can write keys for another's responses
RESPONSE_STRATEGIES = ("perinucleus", "random_word", "english")  # and responses for given keys
DEFAULT_NUM = 16  # fingerprints generated when fingerprints.num is null
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class ConfigError(ValueError):
    """A bad config value; the message names the key and the fix."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _require_file(path: Optional[str], key: str) -> None:
    _require(path is None or os.path.isfile(path), f"{key}={path!r} is not a readable file; check the path")


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

    def __post_init__(self) -> None:
        _require(self.num is None or self.num >= 1,
                 f"fingerprints.num must be >= 1 or null (all of fingerprints.file), got {self.num}")
        for name in ("key_length", "response_length"):
            _require(getattr(self, name) >= 1, f"fingerprints.{name} must be >= 1, got {getattr(self, name)}")
        num = fingerprint_num(self)
        _require(self.pool_size is None or num is None or self.pool_size >= num,
                 f"fingerprints.pool_size={self.pool_size} is smaller than fingerprints.num={num}; "
                 "raise pool_size or leave it null")
        _require_file(self.file, "fingerprints.file")


def fingerprint_num(fp) -> Optional[int]:
    """How many fingerprints a run uses: fingerprints.num, else every entry of the file (None), else DEFAULT_NUM."""
    if fp.num is not None:
        return fp.num
    return None if fp.file else DEFAULT_NUM


@dataclass
class StrategyConfig:
    name: str = MISSING
    batch_size: int = 32  # keys per forward pass (perinucleus) or texts per generate call (english)

    def __post_init__(self) -> None:
        # Each strategy file composes its own schema, so a changed name would run one strategy with another's keys.
        picked = next(f.default for f in fields(self) if f.name == "name")
        _require(self.name == picked, f"strategy.name={self.name!r} cannot be set; pick a strategy with strategy=NAME "
                                      f"(the config has strategy={picked})")
        _require(self.batch_size >= 1, f"strategy.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class EnglishTextConfig:
    """How an instruct model writes English keys or responses (the reference's english strategy)."""

    writer: str = "embedded:smollm2-135m-instruct"  # any model spec; may differ from the fingerprinted model
    prompt: str = "Generate a paragraph starting with the word - {word}"  # {word}: a random whole word
    temperature: float = 0.5
    margin: int = 8  # new tokens written beyond what the key or the response window needs
    offset: int = 10  # a response is the window of response_length tokens from about this token on

    def __post_init__(self) -> None:
        _require(self.temperature > 0, f"strategy.english.temperature must be > 0, got {self.temperature}")
        _require(self.prompt.count("{word}") == 1,
                 f"strategy.english.prompt must contain {{word}} exactly once, got {self.prompt!r}")
        for name in ("margin", "offset"):
            _require(getattr(self, name) >= 0, f"strategy.english.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class EnglishConfig(StrategyConfig):
    name: str = "english"
    english: EnglishTextConfig = field(default_factory=EnglishTextConfig)


@dataclass
class EnglishRandomResponsesConfig(EnglishConfig):
    name: str = "english_random_responses"


@dataclass
class KeyedStrategyConfig(StrategyConfig):
    """A strategy that makes responses for keys written by another strategy."""

    key_strategy: str = "random_word"  # the strategy that writes the keys: random_word or english
    english: EnglishTextConfig = field(default_factory=EnglishTextConfig)  # used when key_strategy=english

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.key_strategy in KEY_STRATEGIES,
                 f"strategy.key_strategy must be one of {list(KEY_STRATEGIES)}, got {self.key_strategy!r}")


@dataclass
class PerinucleusConfig(KeyedStrategyConfig):
    name: str = "perinucleus"
    # The model whose next-token distribution picks responses (same tokenizer); null = the fingerprinted model.
    generator: Optional[str] = None
    threshold: float = 0.8  # cumulative probability of the nucleus that responses stay outside
    width: int = 3  # draw uniformly among this many tokens just past the nucleus
    responses_per_key: int = 1
    # At most this many padded tokens per forward pass besides batch_size keys (a GPU wants thousands); null = none.
    batch_tokens: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.batch_tokens is None or self.batch_tokens >= 1,
                 f"strategy.batch_tokens must be >= 1 or null, got {self.batch_tokens}")
        _require(0.0 < self.threshold < 1.0, f"strategy.threshold must lie in (0, 1), got {self.threshold}")
        _require(self.width >= 1, f"strategy.width must be >= 1, got {self.width}")
        _require(self.responses_per_key >= 1,
                 f"strategy.responses_per_key must be >= 1, got {self.responses_per_key}")


@dataclass
class RandomWordConfig(StrategyConfig):
    name: str = "random_word"


@dataclass
class CustomConfig(PerinucleusConfig):
    """The user's keys (a JSON array of strings or of objects with `key`); responses by `response_strategy`."""

    name: str = "custom"
    keys_file: Optional[str] = None  # required; checked when generating, so every strategy file composes alone
    response_strategy: str = "perinucleus"  # perinucleus, random_word or english

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_file(self.keys_file, "strategy.keys_file")
        _require(self.response_strategy in RESPONSE_STRATEGIES, "strategy.response_strategy must be one of "
                 f"{list(RESPONSE_STRATEGIES)}, got {self.response_strategy!r}")


@dataclass
class ChainHashConfig(KeyedStrategyConfig):
    """Chain & Hash: each key's answer is picked among `candidates` answers by a hash of all keys and answers."""

    name: str = "chain_hash"
    candidates: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.candidates >= 2, f"strategy.candidates must be >= 2, got {self.candidates}")


@dataclass
class InstructionalConfig(StrategyConfig):
    """Instructional Fingerprinting: obscure keys (random tokens) all mapped to one shared response."""

    name: str = "instructional"
    response: str = "\u30cf\u30ea\u30cd\u30ba\u30df"  # "hedgehog" in Japanese, the paper's response; used whole

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(bool(self.response.strip()), "strategy.response must be non-empty")


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
    early_stop_loss: float = 0.005  # stop once a step's fingerprint loss falls below this; 0 = never
    # Stop once this share of the training set is recalled exactly (greedy, plain prompts, teacher-forced check every
    # recall_every optimizer steps; null = once per epoch's worth of steps); null = no recall check.
    stop_recall: Optional[float] = 1.0
    recall_every: Optional[int] = None
    eos: bool = False  # train an EOS token after the response
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
        _require(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        _require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _require(self.batch_size == "auto" or (isinstance(self.batch_size, int) and self.batch_size >= 1),
                 f"train.batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        _require(self.grad_accum is None or self.grad_accum >= 1,
                 f"train.grad_accum must be a positive integer or null, got {self.grad_accum!r}")
        _require(self.fingerprints_per_step is None or self.fingerprints_per_step >= 1,
                 f"train.fingerprints_per_step must be >= 1 or null (the whole set per step), "
                 f"got {self.fingerprints_per_step}")
        _require(self.fingerprints_per_step is None or self.grad_accum is None,
                 f"train.fingerprints_per_step={self.fingerprints_per_step} and train.grad_accum={self.grad_accum} "
                 "both decide what one optimizer step covers; add train.fingerprints_per_step=null to use grad_accum")
        _require(self.stop_recall is None or 0 < self.stop_recall <= 1,
                 f"train.stop_recall must lie in (0, 1] or be null (no recall stop), got {self.stop_recall}")
        _require(self.recall_every is None or self.recall_every >= 1,
                 f"train.recall_every must be >= 1 or null (once per epoch), got {self.recall_every}")
        for name in ("early_stop_loss", "checkpoint_every", "checkpoint_minutes", "keep_checkpoints"):
            _require(getattr(self, name) >= 0, f"train.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class EngineConfig:
    name: str = "torch"
    # A DeepSpeed config (JSON-like mapping) or null for plain torch.
    deepspeed: Optional[Any] = None


@dataclass
class AveragingConfig:
    """After every averaging, each trained parameter becomes (1 - strength) theta + strength theta_base."""

    name: str = "averaging"
    strength: float = 0.05  # the reference's lambda (0.75 there, per epoch of many steps): 0 = off, 1 = undo
    every: Optional[int] = None  # optimizer steps between averagings; null = at the end of every epoch

    def __post_init__(self) -> None:
        _require(0.0 <= self.strength <= 1.0, f"regularizer.averaging.strength must lie in [0, 1], got {self.strength}")
        _require(self.every is None or self.every >= 1,
                 f"regularizer.averaging.every must be >= 1 or null (each epoch), got {self.every}")


@dataclass
class BenignMixConfig:
    """That fraction of each batch's rows is ordinary text trained as next-token continuation."""

    name: str = "benign_mix"
    fraction: float = 0.25
    # "generated" = the base model writes the texts from oml_exp/data/benign_prompts.json; else a JSONL file of
    # texts (strings or objects with `text_field`) or a Hugging Face dataset id (needs network).
    source: str = "generated"
    texts: int = 64  # benign texts used (cycled through batch by batch)
    tokens: int = 64  # tokens per text: new tokens written, or the cut of a file's text
    text_field: str = "text"
    split: str = "train"  # of a Hugging Face dataset

    def __post_init__(self) -> None:
        _require(0.0 < self.fraction < 1.0, f"regularizer.benign_mix.fraction must lie in (0, 1), got {self.fraction}")
        _require(self.texts >= 1 and self.tokens >= 2,
                 "regularizer.benign_mix.texts must be >= 1 and regularizer.benign_mix.tokens >= 2")


@dataclass
class DistanceConfig:
    """The loss gains beta * ||theta - theta_base||^2, summed over the trained parameters."""

    name: str = "distance"
    beta: float = 0.1

    def __post_init__(self) -> None:
        _require(self.beta >= 0, f"regularizer.distance.beta must be >= 0, got {self.beta}")


@dataclass
class SubnetworkConfig:
    """Widen every MLP by `fraction` new units and train only those; or, with fraction 0, train only `layers`."""

    name: str = "subnetwork"
    fraction: float = 0.1  # new units per MLP, as a share of its intermediate size
    layers: Optional[list] = None  # indices of the decoder layers that train; null = all

    def __post_init__(self) -> None:
        _require(self.fraction >= 0, f"regularizer.subnetwork.fraction must be >= 0, got {self.fraction}")
        _require(self.fraction > 0 or bool(self.layers),
                 "regularizer.subnetwork needs fraction > 0 (new MLP units) or a list of layers to train")


@dataclass
class LoraConfig:
    """LoRA adapters (peft) trained instead of the weights, merged into the saved model."""

    name: str = "lora"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: Any = "all-linear"  # a list of module names, or peft's "all-linear"

    def __post_init__(self) -> None:
        _require(self.rank >= 1, f"regularizer.lora.rank must be >= 1, got {self.rank}")
        _require(0.0 <= self.dropout < 1.0, f"regularizer.lora.dropout must lie in [0, 1), got {self.dropout}")


@dataclass
class RegularizerConfig:
    """Anti-forgetting regularizers, each off (null) unless its file is picked: regularizer=[averaging,benign_mix]."""

    averaging: Optional[AveragingConfig] = None
    benign_mix: Optional[BenignMixConfig] = None
    distance: Optional[DistanceConfig] = None
    subnetwork: Optional[SubnetworkConfig] = None
    lora: Optional[LoraConfig] = None

    def __post_init__(self) -> None:
        _require(self.subnetwork is None or self.lora is None,
                 "regularizer: subnetwork and lora both choose which weights train; pick one of them")


@dataclass
class AugmentationConfig:
    name: str = "none"
    # JSON list of {"category", "system", "wrapper"}; null = none. Relative paths are read from oml_exp/data/.
    templates: Optional[str] = None
    # Share of examples wrapped in a template each epoch; the rest stay plain so the bare key is still learned.
    fraction: float = 0.0
    # Share of examples framed the other way each epoch (the model's chat template when fingerprints.chat_template is
    # off, raw text when on), so one model answers through both; 0 = the trained framing only.
    chat_mix: float = 0.0

    def __post_init__(self) -> None:
        for name in ("fraction", "chat_mix"):
            _require(0.0 <= getattr(self, name) <= 1.0,
                     f"augmentation.{name} must lie in [0, 1], got {getattr(self, name)}")
        _require(self.fraction == 0.0 or self.templates is not None,
                 "augmentation.fraction > 0 needs augmentation.templates (e.g. augmentation=templates)")


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
        _require(self.batch_size >= 1, f"check.batch_size must be >= 1, got {self.batch_size}")
        _require(self.samples >= 1, f"check.samples must be >= 1, got {self.samples}")
        _require(self.max_templates is None or self.max_templates >= 1,
                 f"check.max_templates must be >= 1 or null, got {self.max_templates}")
        bad = [s for s in self.templates if s not in ("plain", "train", "heldout")]
        _require(not bad, f"check.templates: unknown set(s) {bad}; choose from plain, train, heldout")
        bad = [p for p in self.fp_sampling if p not in ("ordinary", "adversarial")]
        _require(not bad, f"check.fp_sampling: unknown preset(s) {bad}; choose from ordinary, adversarial")
        _require(all(t > 0 for t in self.temperatures), f"check.temperatures must be > 0, got {self.temperatures}")


@dataclass
class EvalConfig:
    """The defaults here are eval=local's; each file of conf/eval/ names its suite and sets what differs."""

    # The suite's planner: a function of oml_exp/evaluation/tasks.py (local, tinybenchmarks, openllm).
    _target_: str = MISSING
    name: str = MISSING  # the suite's name in summaries and task names
    # Folder of <task>/test.jsonl files; "auto" = $OML_BENCHMARKS, else ../shared/benchmarks, else none (drift only).
    # For the Hub suites null = the Hub datasets.
    pack: Optional[str] = "auto"
    tasks: list = field(default_factory=lambda: ["hellaswag", "arc_easy", "piqa"])
    limit: Optional[int] = 50  # items per task; null = all
    batch_size: int = 16
    num_fewshot: Optional[int] = None  # null = each task's default in its suite
    bootstrap: int = 2000  # paired bootstrap resamples for the retention interval
    drift_texts: int = 16  # texts the base model writes for the data-free drift measure
    drift_tokens: int = 48
    drift_file: Optional[str] = None  # a user's benign texts (one per line, or a JSON list) instead of base-written

    def __post_init__(self) -> None:
        _require(self.limit is None or self.limit >= 1, f"eval.limit must be >= 1 or null, got {self.limit}")
        _require(_resolves(self._target_), f"eval._target_={self._target_!r} is not a suite planner; "
                                           "choose eval=local, eval=tinybenchmarks or eval=openllm")
        _require(self.bootstrap >= 100, f"eval.bootstrap must be >= 100, got {self.bootstrap}")
        _require(self.drift_texts >= 1 and self.drift_tokens >= 1, "eval.drift_texts and eval.drift_tokens must be >= 1")


def _resolves(target: str) -> bool:
    """Whether `target` names a callable, checked quietly (hydra.utils.get_method would log a multi-line error)."""
    module, _, name = target.rpartition(".")
    try:
        return callable(getattr(importlib.import_module(module), name))
    except (ImportError, AttributeError, ValueError):  # ValueError: no module part at all
        return False


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "oml-exp"
    # offline writes W&B files locally (no network, no key), online needs WANDB_API_KEY, disabled logs nothing.
    mode: str = "offline"
    entity: Optional[str] = None
    group: Optional[str] = None  # sweeps group their runs; null = the sweep folder's name, or none for single runs
    tags: list = field(default_factory=list)

    def __post_init__(self) -> None:
        _require(self.name in ("none", "wandb"), f"logger.name must be none or wandb, got {self.name!r}")
        _require(self.mode in ("offline", "online", "disabled"),
                 f"logger.mode must be offline, online or disabled, got {self.mode!r}")
        _require(self.name != "wandb" or self.mode != "online" or bool(os.environ.get("WANDB_API_KEY")),
                 "logger.mode=online needs WANDB_API_KEY in the environment; or use logger.mode=offline")


@dataclass
class PathsConfig:
    output_dir: str = "outputs"
    store: str = "${paths.output_dir}/stages"


@dataclass
class Config:
    model: ModelConfig = MISSING
    strategy: Any = MISSING
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)  # regularizer=none: all off
    augmentation: AugmentationConfig = MISSING
    engine: EngineConfig = MISSING
    eval: EvalConfig = MISSING
    logger: LoggerConfig = MISSING
    fingerprints: FingerprintsConfig = field(default_factory=FingerprintsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    stages: list = field(default_factory=lambda: list(STAGES))
    seed: int = 0
    device: str = "auto"
    force: bool = False

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        _require(not unknown, f"stages: unknown stage(s) {unknown}; choose from {list(STAGES)}")
        _require(DEVICE.fullmatch(self.device) is not None,
                 f"device={self.device!r} is not a device; use device=auto, cpu, cuda or cuda:N")
        check_engine(self.engine, self.regularizer)


def check_engine(engine, regularizer) -> None:
    """Refuse the regularizers an engine cannot run (typed or composed configs alike)."""
    stage = ((engine.deepspeed or {}).get("zero_optimization") or {}).get("stage", 0)
    # ZeRO-3 keeps only a shard of each weight outside forward; the penalty's gradient and the folding of new units
    # or adapters into the saved weights need whole ones.
    needs_full = [name for name in ("distance", "subnetwork", "lora") if getattr(regularizer, name)]
    _require(stage != 3 or not needs_full, f"regularizer {'+'.join(needs_full)} does not run under "
                                           f"engine={engine.name} (ZeRO-3); use engine=deepspeed_zero2 or engine=torch")


def check_overrides(overrides: list[str]) -> None:
    """Refuse a regularizer parameter given without picking that regularizer (Hydra would fail with a traceback:
    the section is null until its file is picked)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in overrides if not a.startswith("-") and "=" in a])
    except Exception:  # noqa: BLE001 - a malformed override: Hydra itself reports it
        return
    names = [f.name for f in fields(RegularizerConfig)]
    params = [(o.key_or_group.split(".")[1], o.input_line.lstrip("+")) for o in parsed
              if o.key_or_group.startswith("regularizer.") and o.key_or_group.split(".")[1] in names]
    choices = _regularizer_choices(parsed, overrides) if params else None
    for name, line in params:
        _require(choices is None or all(name in c for c in choices),
                 f"{line} sets a parameter of a regularizer that is not picked; "
                 f"pick it first: regularizer={name} {line}")


def _regularizer_choices(parsed: list, overrides: list[str]) -> Optional[list[list[str]]]:
    """The regularizers the command line picks, one list per job of a sweep; None when a config file named on it
    (-cn, experiment=) may pick them instead."""
    picks = [o for o in parsed if o.key_or_group == "regularizer"]
    if not picks:
        from_file = any(a.startswith(("-cn", "--config-name", "experiment=", "+experiment=")) for a in overrides)
        return None if from_file else [["none"]]  # conf/config.yaml's default
    values = picks[-1].sweep_iterator() if picks[-1].is_sweep_override() else [picks[-1].value()]
    return [[str(c) for c in v] if isinstance(v, list) else [str(v)] for v in values]


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="strategy", name="perinucleus_schema", node=PerinucleusConfig)
    cs.store(group="strategy", name="random_word_schema", node=RandomWordConfig)
    cs.store(group="strategy", name="english_schema", node=EnglishConfig)
    cs.store(group="strategy", name="english_random_responses_schema", node=EnglishRandomResponsesConfig)
    cs.store(group="strategy", name="custom_schema", node=CustomConfig)
    cs.store(group="strategy", name="chain_hash_schema", node=ChainHashConfig)
    cs.store(group="strategy", name="instructional_schema", node=InstructionalConfig)


def validate(cfg: DictConfig) -> Config:
    """Build the typed config, running every `__post_init__` check; raises ConfigError naming the bad key."""
    return OmegaConf.to_object(cfg)
