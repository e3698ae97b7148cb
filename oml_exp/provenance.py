"""What a stage's store key covers besides its config: the code and packaged data it runs and the models it reads.

Code: the stage's module and every oml_exp module it imports, directly or through other oml_exp modules, found by
reading their `import` statements with `ast` (imports inside functions count too), plus the packages' `__init__`
files those imports execute. No stage imports `oml_exp.reporting` or the pipeline, so editing the report reruns
nothing, while editing training code reruns finetune (and, through their upstream hashes, the stages after it).
Packaged data: the files of `oml_exp/data/` whose names appear in those modules' string constants (not in comments
or docstrings), so the drift prompts belong to evaluate and the benign prompts to finetune. The package version
joins both.

Models: a folder (a local one, and the cache folders that `embedded:` and `tiny:` specs resolve to) is named by a
digest of its top-level files' contents; a Hub id by the commit it resolves to. Digests of files from 1 MiB up are
cached by path, size, mtime, ctime and inode in `<cache>/digests.json`, so a large model is read once, not on every
run; replacing or rewriting a file changes its ctime, so the cache never vouches for changed bytes.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from pathlib import Path
from typing import Iterable

from oml_exp import __version__
from oml_exp.store import cache_root, digest, file_digest, read_json, write_json

PACKAGE = Path(__file__).resolve().parent


def stage_code(module: str, root: Path | None = None) -> dict:
    """The identity of what the stage `module` runs: package version, source digest and the data files it names.
    `root` is the oml_exp package folder to read (tests point it at an edited copy)."""
    root = root or PACKAGE
    files = reachable(module, root)
    return {"version": __version__, "source": source_digest(files, root), "data": data_digests(files, root)}


def reachable(module: str, root: Path) -> list[Path]:
    """Source files of `module` and of every oml_exp module reachable from it by import statements."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _source(name, root)
        if path is None:
            continue
        seen[name] = path
        todo += _parents(name) + _imported(path, root)
    return sorted(seen.values())


def source_digest(files: Iterable[Path], root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def data_digests(files: Iterable[Path], root: Path) -> dict[str, str]:
    """Digest of each packaged data file whose name one of `files` mentions."""
    data = root / "data"
    names = sorted(p.name for p in data.iterdir() if p.is_file()) if data.is_dir() else []
    literals = [s for p in files for s in _literals(p)]
    return {n: file_sha(data / n)[:16] for n in names if any(n in s for s in literals)}


def _source(name: str, root: Path) -> Path | None:
    parts = name.split(".")
    if parts[0] != root.name:
        return None
    base = root.joinpath(*parts[1:])
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imported(path: Path, root: Path) -> list[str]:
    """Modules named by the file's imports; `from a import b` names a.b too, which counts when b is a module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return [m for m in out if m.split(".")[0] == root.name]


def _literals(path: Path) -> list[str]:
    """The string constants of a module's code: docstrings and comments may mention a data file it never reads."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def folder_digest(folder: str | Path) -> str:
    """A digest of the contents of a model folder's top-level files (what from_pretrained reads; hidden files and
    subfolders such as checkpoints or `original/` are not read)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return digest({p.name: file_sha(p) for p in files})


def file_sha(path: str | Path) -> str:
    """sha256 of a file; for a large one, from the digest cache while its size, mtime, ctime and inode are the same."""
    path = Path(path).resolve()
    st = path.stat()
    if st.st_size < CACHED_FROM:
        return file_digest(path, 64)
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    cache = _cache()
    hit = cache.get(str(path))
    if isinstance(hit, list) and hit[:4] == stamp:
        return hit[4]
    cache[str(path)] = stamp + [file_digest(path, 64)]
    _save(cache)
    return cache[str(path)][4]


CACHED_FROM = 1 << 20  # smaller files are quicker to rehash than to look up


def _cache_file() -> Path:
    return cache_root() / "digests.json"


def _cache() -> dict:
    try:
        found = read_json(_cache_file())
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(cache: dict) -> None:
    try:
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        write_json(_cache_file(), cache)
    except OSError:
        pass  # only a speed-up: a read-only cache folder means rehashing next time, never a wrong digest


def hub_commit(repo: str, revision: str = "main") -> str:
    """The commit a Hub id resolves to: asked of the Hub when online, read from the local Hub cache when offline
    (what from_pretrained would load); the revision itself when neither knows it."""
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    return _online_commit(repo, revision) or _cached_commit(repo, revision) or revision


@functools.lru_cache(maxsize=None)
def _online_commit(repo: str, revision: str) -> str | None:
    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():  # the Hub's own reading of HF_HUB_OFFLINE, as models.check_spec uses
        return None
    try:
        return HfApi().model_info(repo, revision=revision, timeout=10).sha
    except Exception:  # noqa: BLE001 - no network, an unknown or gated repo: fall back to the local cache
        return None


def _cached_commit(repo: str, revision: str) -> str | None:
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else None
