"""Which process this is, read from the environment that torchrun and `deepspeed --no_local_rank` set."""

from __future__ import annotations

import os
import socket
import sys


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def single_process_env() -> None:
    """Give a launcher-less process the rendezvous variables DeepSpeed wants (else it tries MPI discovery)."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def leave() -> None:
    """Destroy the process group the HF Trainer made (under a launcher, or for DeepSpeed in one process), if any,
    joining its backend's threads. Call it once the process's runs have finished and before it exits: left to the
    interpreter's teardown, gloo's threads can still hold tensors while Python is gone ("terminate called without an
    active exception", exit -6, on a loaded machine), and NCCL warns that destroy_process_group() was not called.
    Not after a failure: other ranks may still be inside a collective, and leaving could hang. Not between runs: the
    next job of a multirun in this process reuses the group, which the Trainer sets up only once."""
    dist = sys.modules.get("torch.distributed")  # never imported: no group to leave
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
