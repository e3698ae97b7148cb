"""The ledger: which fingerprints of a file were ever shown to a deployed model, so that none is shown twice.

A fingerprint sent to an API is spent: whoever runs the endpoint has seen its key and could teach a model to
answer it differently, or to answer it when it never learned it. The ledger is one JSONL file per fingerprint file,
`<paths.ledger>/<file digest>.jsonl` (mode 0600), one line per fingerprint shown: its index in the file, the file's
digest, the time, the endpoint and the model name; never the key. A line is appended, flushed and fsynced before
its request goes out, so a run killed at any point has recorded every key it may have shown. A run holds an
exclusive lock (fcntl.flock) on the file from picking its fingerprints to its last request, so two runs never pick
the same ones.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path

from oml_exp.config import ConfigError


def path(folder: str | Path, file_digest: str) -> Path:
    return Path(folder) / f"{file_digest}.jsonl"


def spent(ledger: Path) -> set[int]:
    """Indices recorded in the ledger; a line torn by a crash during its write was never followed by a request."""
    try:
        lines = Path(ledger).read_text().splitlines()
    except FileNotFoundError:
        return set()
    out = set()
    for line in lines:
        try:
            out.add(int(json.loads(line)["index"]))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def pick(used: set[int], pool: int, num: int, force: bool, ledger: Path) -> list[int]:
    """The next `num` unspent indices of a pool of `pool` fingerprints; with `force`, spent ones after those."""
    unspent = [i for i in range(pool) if i not in used]
    order = unspent + ([i for i in range(pool) if i in used] if force else [])
    if len(order) < num:
        fix = ("lower verify.num, or use another fingerprint file" if force else
               "lower verify.num, use another fingerprint file, or add verify.force_spent=true to send spent ones")
        raise ConfigError(f"verify.num={num} but only {len(order)} of the {pool} fingerprints are "
                          f"{'in the file' if force else 'unspent'} (ledger {ledger}); {fix}")
    return order[:num]


class Ledger:
    """The open, locked ledger of one fingerprint file: `spend(index)` records a fingerprint before it is sent."""

    def __init__(self, folder: str | Path, file_digest: str, endpoint: str, model: str):
        self.path = path(folder, file_digest)
        self.record = {"fingerprints": file_digest, "endpoint": endpoint, "model": model}
        self.lock = threading.Lock()  # the request threads of this run
        self.fd = -1

    def __enter__(self) -> "Ledger":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        os.chmod(self.path, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # other runs on this file wait here
        size = os.fstat(self.fd).st_size
        if size and os.pread(self.fd, 1, size - 1) != b"\n":
            self._append(b"\n")  # end a line torn by a crash, so the next one stays readable
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # releases the lock

    def spend(self, index: int) -> None:
        line = json.dumps({"index": index, **self.record, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n"
        with self.lock:
            self._append(line.encode())

    def _append(self, data: bytes) -> None:
        os.write(self.fd, data)
        os.fsync(self.fd)
