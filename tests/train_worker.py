"""One rank of a multi-process finetune, for the distributed tests: `<launcher> tests/train_worker.py OUT GEN [override ...]`.

Every rank trains into the same OUT, as under the pipeline; the fingerprints are read from GEN, never from argv.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline")

from oml_exp import distributed  # noqa: E402
from tests.train_helpers import make_config, train  # noqa: E402

if __name__ == "__main__":
    out, gen, *overrides = sys.argv[1:]
    print(json.dumps(train(make_config(*overrides), Path(gen), Path(out))), flush=True)
    distributed.leave()  # as the CLI does after its runs
    # Then out without interpreter teardown: in about one run in 15 a third-party thread (gloo or DeepSpeed, C++)
    # is still joinable when static destructors run, and std::terminate ends an already finished rank with -6,
    # which these tests, about the weights, must not read as a failed run (docs/training.md, Several processes).
    sys.stderr.flush()
    os._exit(0)
