"""The run folder's name, `<date>/<time>-<pid>`: its own folder for every run, one folder for the ranks of a launch.

`hydra.run.dir` (conf/hydra/default.yaml) ends in `${oml_exp.run_id:}`. A plain run is named by its own start time
and process id: two runs started in the same second are two processes, alive at the same time, so their ids differ.
Under a launcher (torchrun, `deepspeed --no_local_rank`: LOCAL_RANK is set) the ranks of a node are children of one
launcher process, so they are named by that parent's start time and id and all write to one folder. Multirun
sweeps keep Hydra's fixed `sweep.dir/subdir` folders.
"""

from __future__ import annotations

import functools
import os
import time

import psutil
from omegaconf import OmegaConf

RESOLVER = "oml_exp.run_id"


@functools.lru_cache(maxsize=None)
def run_id() -> str:
    """The name for this process's run folder, fixed at the first call (Hydra may resolve the run dir again)."""
    if "LOCAL_RANK" in os.environ:
        parent = psutil.Process(os.getppid())
        return name(parent.create_time(), parent.pid)
    return name(time.time(), os.getpid())


def name(started: float, pid: int) -> str:
    return f"{time.strftime('%Y-%m-%d/%H-%M-%S', time.localtime(started))}-{pid}"


def register() -> None:
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, run_id)
