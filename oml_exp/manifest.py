"""A store entry's manifest: written when the entry is complete, checked whenever it is reused.

`manifest.json` lists every file of the entry by its path relative to the entry, with its size, and with its sha256
when it is at most HASHED_UP_TO bytes: fingerprints, results, summaries, configs, tokenizers and small models are
checked byte for byte, while model weights and optimizer states of real models are checked by size, which keeps
reuse quick and still catches a truncated or missing file. An entry that fails the check was damaged or edited by
hand after it was built; the run stops and names the entry rather than report results from it.
"""

from __future__ import annotations

from pathlib import Path

from oml_exp.store import file_digest, read_json, write_json

MANIFEST = "manifest.json"
HASHED_UP_TO = 16 << 20  # about 30k fingerprints in fingerprints.json; hashing it takes ~30 ms on every reuse


class DamagedEntryError(RuntimeError):
    """A store entry whose files no longer match its manifest; the message names the entry and the fix."""


def write(folder: Path) -> None:
    """Record the files of the complete entry `folder` (call it last: files added later fail the check)."""
    folder = Path(folder)
    write_json(folder / MANIFEST, {"files": {_rel(p, folder): _describe(p) for p in _files(folder)}})


def check(folder: Path) -> None:
    """Raise DamagedEntryError unless every file of the manifest is there with its recorded size and digest."""
    problem = _problem(Path(folder))
    if problem:
        raise DamagedEntryError(f"the store entry {folder} is damaged: {problem}; rerun with force=true (or delete "
                                "that folder) to rebuild it")


def _problem(folder: Path) -> str | None:
    try:
        recorded = read_json(folder / MANIFEST)["files"]
    except FileNotFoundError:
        return f"it has no {MANIFEST}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {MANIFEST} is unreadable"
    for rel, want in sorted(recorded.items()):
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{rel} has {size} bytes, {want['size']} when it was built"
        if "sha256" in want and file_digest(path, 64) != want["sha256"]:
            return f"{rel} was changed after it was built"
    return None


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / MANIFEST)


def _rel(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def _describe(path: Path) -> dict:
    size = path.stat().st_size
    return {"size": size, "sha256": file_digest(path, 64)} if size <= HASHED_UP_TO else {"size": size}
