"""The content-addressed stage store and the file rules every stage follows.

A stage's output lives in `<store>/<stage>/<hash>/`, where the hash covers exactly the config and inputs that affect
it. A folder is built under a temporary name and renamed into place under a lock, so a folder that exists is
complete: a killed stage leaves only a temporary folder, and two sweep jobs sharing a stage wait for each other
instead of colliding. Anything that holds fingerprint keys is written with mode 0600.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock


def cache_root() -> Path:
    """Where converted and generated models live: outside the repo, shared by every checkout on the machine."""
    return Path(os.environ.get("OML_EXP_CACHE", Path.home() / ".cache" / "oml_exp")).expanduser()


def digest(obj: Any, length: int = 16) -> str:
    """A stable hash of a JSON-able object (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_digest(path: str | Path, length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool = False, resumable: bool = False) -> Iterator[Path | None]:
    """Yield a temporary folder to fill, renamed to `out` on success; yield None when `out` is already complete.

    With `force`, a complete `out` is rebuilt and replaced only once the new one is complete. A `resumable` build
    keeps its temporary folder when it fails or is killed, so the next attempt finds its checkpoints there.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f".{out.name}.lock")):
        if out.exists() and not force:
            yield None
            return
        tmp = partial_dir(out)
        if not resumable:
            shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(exist_ok=True)
        try:
            yield tmp
        except BaseException:
            if not resumable:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if out.exists():
            old = out.parent / f".old-{out.name}-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)


def partial_dir(out: Path) -> Path:
    """The one temporary folder of `out`: a fixed name, so a killed build is found again (only under the lock)."""
    return Path(out).parent / f".partial-{Path(out).name}"


def write_json(path: Path, obj: Any, secret: bool = False) -> None:
    """Write JSON via a temporary file and a rename; `secret` files (they hold keys) get mode 0600 from birth."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n", secret)


def write_jsonl(path: Path, rows: list[dict], secret: bool = False) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), secret)


def write_text(path: Path, text: str, secret: bool = False) -> None:
    """Write via a temporary file and a rename; a failed write leaves neither file and raises WriteError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write_file(tmp, text, 0o600 if secret else 0o644)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise WriteError.of(path, err) from None


def _write_file(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)  # umask may have narrowed the public mode


class WriteError(OSError):
    """A file that could not be written (read-only folder, full disk); the message names the path, cause and fix."""

    # errno values that can only mean a failed write, wherever they come from (model and checkpoint saves too).
    ONLY_WRITES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)

    @classmethod
    def of(cls, path, err: OSError) -> "WriteError":
        full, locked = (errno.ENOSPC, errno.EDQUOT), (errno.EROFS, errno.EACCES, errno.EPERM)
        fix = ("free disk space, or set paths.output_dir to a disk with room" if err.errno in full else
               "make it writable, or set paths.output_dir to a writable folder" if err.errno in locked else
               "check that its folder exists and can be written")
        cause = err.strerror or (os.strerror(err.errno) if err.errno else str(err))
        return cls(f"cannot write {path}: {cause}; {fix}")


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)
