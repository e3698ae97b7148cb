"""The fingerprint file: the contract between generation, training and checking.

`fingerprints.json` (mode 0600: it holds the secret keys) is a JSON array of objects:
  key            str         the key as the user or the strategy wrote it
  response       str         the response text (decode of response_ids)
  effective_key  str         the key as trained: truncated to fingerprints.key_length tokens, chat-templated if on
  key_ids        [int]       token ids of effective_key, exactly as training and checking feed them to the model
  response_ids   [int]       token ids of the response, exactly as trained and checked
  response_prob  [float]     optional: the base model's probability of each response token after the key
Training and checking use the ids only, so key and response are never tokenized twice in different ways.
A sidecar `meta.json` records strategy, model, seed and parameters (no keys).
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


def load(folder_or_file: str | Path, num: int | None = None) -> list[dict]:
    """Read and check a fingerprint file (or the one in a generate stage folder); return its first `num` rows."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / FILE
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FingerprintFileError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(rows, list):
        raise FingerprintFileError(f"{path}: expected a JSON array of fingerprints, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        missing = [k for k in REQUIRED if not isinstance(row, dict) or k not in row]
        if missing:
            raise FingerprintFileError(f"{path}: entry {i} lacks {missing}")
    if num is not None and len(rows) < num:
        raise FingerprintFileError(f"{path}: holds {len(rows)} fingerprints, fewer than fingerprints.num={num}")
    return rows[:num] if num is not None else rows
