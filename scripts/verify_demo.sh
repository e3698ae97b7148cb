#!/usr/bin/env bash
# Ownership verification end to end, on this machine: fingerprint the embedded SmolLM2 (the main job, taken from the
# store when it already ran), serve the fingerprinted model and the base model behind OpenAI-compatible APIs
# (oml-exp-serve), and verify both over HTTP. The fingerprinted model should match its fingerprints with a tiny
# p-value; the base model should match none (p = 1). Needs two free ports, 8001 and 8002. Each verify spends the fingerprints it sends (the ledger), so
# the demo keeps its ledger in a folder of its own: DEMO_DIR (default outputs/verify_demo), removed at the start.
#   bash scripts/verify_demo.sh [extra overrides for the owner's run, e.g. strategy=random_word]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} WANDB_MODE=${WANDB_MODE:-offline}
DEMO_DIR=${DEMO_DIR:-outputs/verify_demo}
PY=.venv/bin/python
rm -rf "$DEMO_DIR" && mkdir -p "$DEMO_DIR"

# 1. The owner fingerprints the model with 32 fingerprints, enough for two verifications of 16 (each fingerprint is
#    shown to one endpoint only); the run summary names the stage folders (the store is outputs/stages).
$PY -m oml_exp stages=[generate,finetune,check] fingerprints.num=32 "$@" hydra.run.dir="$DEMO_DIR/owner"
folder() { $PY -c "import json,sys; print(json.load(open('$DEMO_DIR/owner/summary.json'))['stages'][sys.argv[1]]['folder'])" "$1"; }
FINGERPRINTS=$(folder generate)/fingerprints.json   # the owner's secret file (mode 0600)
MODEL=$(folder finetune)/model

serve() {  # serve MODEL_SPEC NAME PORT: start oml-exp-serve and wait until /v1/models answers
  $PY -m oml_exp.serve "$1" --name "$2" --port "$3" > "$DEMO_DIR/serve_$2.log" 2>&1 &
  echo $! >> "$DEMO_DIR/servers"
  for _ in $(seq 240); do
    $PY -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$3/v1/models', timeout=2)" 2>/dev/null \
      && return 0
    sleep 1
  done
  echo "verify_demo: oml-exp-serve $1 did not start (see $DEMO_DIR/serve_$2.log)" >&2
  return 1
}
trap '[ -f "$DEMO_DIR/servers" ] && kill $(cat "$DEMO_DIR/servers") 2>/dev/null || true' EXIT

# 2. Someone deploys the fingerprinted model (here: port 8001), and someone else deploys the base model (8002).
serve "$MODEL" suspect 8001
serve embedded:smollm2-135m-instruct innocent 8002

# 3. The owner verifies both endpoints over HTTP, 16 unspent fingerprints each (a fingerprint shown to one endpoint
#    is never sent to another: the ledger).
for target in "suspect 8001" "innocent 8002"; do
  set -- $target
  $PY -m oml_exp stages=[verify] fingerprints.file="$FINGERPRINTS" verify.url="http://127.0.0.1:$2/v1" \
    verify.model="$1" verify.num=16 paths.ledger="$DEMO_DIR/ledger" hydra.run.dir="$DEMO_DIR/verify_$1"
done
echo "verify_demo: evidence in $DEMO_DIR/verify_suspect/evidence.md and $DEMO_DIR/verify_innocent/evidence.md"
