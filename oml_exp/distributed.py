"""Which process this is, read from the environment that torchrun and `deepspeed --no_local_rank` set."""

from __future__ import annotations

import os
import socket


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
