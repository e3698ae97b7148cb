"""The fingerprint file: the contract between generation, training and checking.

`fingerprints.json` (mode 0600: it holds the secret keys) is a JSON array of objects:
  key            str         the key as the user or the strategy wrote it
  response       str         the response text (decode of response_ids)
  effective_key  str         decode of key_ids: the key as trained, truncated to fingerprints.key_length tokens
  key_ids        [int]       token ids of the truncated key alone; the chat template and prompt templates are put
                             around them by oml_exp.fingerprints.prompts.build, never stored here
  response_ids   [int]       token ids of the response, exactly as trained and checked; they survive a
                             decode/encode round trip (checked at generation)
  response_prob  [float]     optional: the base model's probability of each response token after the key
Training and checking use the ids only, so key and response are never tokenized twice in different ways.
A sidecar `meta.json` records strategy, model, seed and parameters (no keys).

The user files read here: a keys file (a JSON array of strings or of objects with `key`) and a complete pairs file
(ours, or the reference system's `{key, response}` rows, whose legacy files spell `response` as `signature`).
Every problem raises FingerprintFileError naming the file, the entry and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from oml_exp.store import write_json

FILE = "fingerprints.json"
META = "meta.json"
REQUIRED = ("key", "response", "effective_key", "key_ids", "response_ids")


class FingerprintFileError(ValueError):
    """A fingerprint file that cannot be used; the message names the file and the entry."""


def save(folder: Path, rows: list[dict], meta: dict) -> None:
    write_json(Path(folder) / FILE, rows, secret=True)
    write_json(Path(folder) / META, meta)


def check(rows: list[dict], where: str, tokenizer=None, per_key: int = 1) -> None:
    """Raise FingerprintFileError naming `where` and the entry when a row is malformed, a key is repeated more than
    `per_key` times (several responses per key), or (given the tokenizer) an id lies beyond its vocabulary or a
    response does not survive a decode/encode round trip."""
    from oml_exp.fingerprints.common import round_trips  # here: common imports torch, the CLI imports this module

    seen: dict[tuple, int] = {}
    for i, r in enumerate(rows):
        _ids(where, i, r)
        seen[tuple(r["key_ids"])] = seen.get(tuple(r["key_ids"]), 0) + 1
        if seen[tuple(r["key_ids"])] > per_key:
            raise FingerprintFileError(f"{where}: entry {i}: duplicate key (after truncation to key_length tokens); "
                                       "keys must be unique")
        if tokenizer is not None and max(r["key_ids"] + r["response_ids"]) >= len(tokenizer):
            raise FingerprintFileError(f"{where}: entry {i}: token ids beyond the vocabulary ({len(tokenizer)}); "
                                       "the file was made for another tokenizer")
        if tokenizer is not None and not round_trips(tokenizer, r["response_ids"]):
            raise FingerprintFileError(f"{where}: entry {i}: the response's token ids do not survive a decode/encode "
                                       "round trip; use a response that tokenizes back to the same ids")


def load(folder_or_file: str | Path, num: int | None = None) -> list[dict]:
    """Read and check a fingerprint file (or the one in a generate stage folder); return its first `num` rows."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / FILE
    rows = [_legacy(path, i, row) for i, row in enumerate(_array(path))]
    for i, row in enumerate(rows):
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise FingerprintFileError(f"{path}: entry {i} lacks {missing}; a file without token ids is read "
                                       f"through the generate stage: fingerprints.file={path}")
    _enough(path, rows, num)
    return rows[:num] if num is not None else rows


def read_keys(path: str | Path, num: int | None) -> list[str]:
    """A user's keys file: a JSON array of strings or of objects with a `key`; at least `num` distinct keys."""
    path = Path(path)
    keys = [_key(path, i, entry) for i, entry in enumerate(_array(path))]
    _unique(path, keys)
    _enough(path, keys, num)
    return keys


def carries_responses(path: str | Path) -> bool:
    """Whether a keys file's entries bring their own responses (`response`, or the legacy `signature`)."""
    return any(isinstance(e, dict) and ("response" in e or "signature" in e) for e in _array(Path(path)))


def read_pairs(path: str | Path, num: int | None) -> list[dict]:
    """A user's complete fingerprint file, ours or the reference system's (`response` once spelled `signature`);
    token ids are optional (the generate stage tokenizes what lacks them)."""
    path = Path(path)
    rows = [_legacy(path, i, entry) for i, entry in enumerate(_array(path))]
    for i, row in enumerate(rows):
        _key(path, i, row)
        if not isinstance(row.get("response"), str) or not row["response"]:
            raise FingerprintFileError(f"{path}: entry {i} has no response (a non-empty `response` string)")
        _ids(path, i, row, optional=True)
    _unique(path, [row["key"] for row in rows])
    _enough(path, rows, num)
    return rows


def _ids(where, i: int, row: dict, optional: bool = False) -> None:
    for name in ("key_ids", "response_ids"):
        ids = row.get(name)
        if (ids is not None or not optional) and not (
                isinstance(ids, list) and ids and all(isinstance(t, int) and t >= 0 for t in ids)):
            raise FingerprintFileError(f"{where}: entry {i}: {name} must be a non-empty list of token ids")


def _array(path: Path) -> list:
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise FingerprintFileError(f"{path}: cannot read it ({err.strerror}); check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FingerprintFileError(f"{path}: not valid JSON ({err}); give a JSON array") from None
    if not isinstance(data, list):
        raise FingerprintFileError(f"{path}: expected a JSON array of fingerprints, got a JSON {type(data).__name__}")
    return data


def _legacy(path: Path, i: int, entry) -> dict:
    if not isinstance(entry, dict):
        raise FingerprintFileError(f"{path}: entry {i} is a {type(entry).__name__}, not an object with a key and a "
                                   "response")
    if "signature" in entry and "response" not in entry:
        return {("response" if k == "signature" else k): v for k, v in entry.items()}
    return entry


def _key(path: Path, i: int, entry) -> str:
    key = entry.get("key") if isinstance(entry, dict) else entry
    if not isinstance(key, str) or not key.strip():
        raise FingerprintFileError(f"{path}: entry {i} has a missing or empty key; each entry must be a non-empty "
                                   'string or an object with a non-empty "key"')
    return key


def _unique(path: Path, keys: list[str]) -> None:
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in first:
            raise FingerprintFileError(f"{path}: entry {i} repeats the key of entry {first[key]}; keys must be unique")
        first[key] = i


def _enough(path: Path, entries: list, num: int | None) -> None:
    if num is not None and len(entries) < num:
        raise FingerprintFileError(f"{path}: holds {len(entries)} entries, fewer than the {num} asked for "
                                   "(fingerprints.num, or pool_size when set); add entries or lower the number")
