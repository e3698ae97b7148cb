import os
import threading

import pytest

from oml_exp.store import atomic_dir, digest, write_json


def test_digest_ignores_key_order_and_sees_values():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})


def test_atomic_dir_builds_once_and_skips_when_complete(tmp_path):
    out = tmp_path / "stage" / "abc"
    with atomic_dir(out) as tmp:
        (tmp / "x.txt").write_text("1")
        assert not out.exists()  # nothing visible until complete
    assert (out / "x.txt").read_text() == "1"
    with atomic_dir(out) as tmp:
        assert tmp is None


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "stage" / "abc"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("killed")
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_atomic_dir_force_replaces_only_when_new_is_complete(tmp_path):
    out = tmp_path / "abc"
    with atomic_dir(out) as tmp:
        (tmp / "v").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out, force=True) as tmp:
            raise RuntimeError("killed")
    assert (out / "v").read_text() == "old"
    with atomic_dir(out, force=True) as tmp:
        (tmp / "v").write_text("new")
    assert (out / "v").read_text() == "new"


def test_concurrent_builders_build_once(tmp_path):
    out = tmp_path / "abc"
    built = []

    def worker():
        with atomic_dir(out) as tmp:
            if tmp is not None:
                built.append(1)
                (tmp / "v").write_text("x")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and (out / "v").exists()


def test_secret_files_are_0600_and_public_files_not(tmp_path):
    write_json(tmp_path / "s.json", ["key"], secret=True)
    write_json(tmp_path / "p.json", {"n": 1})
    assert os.stat(tmp_path / "s.json").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "p.json").st_mode & 0o777 == 0o644


def test_resumable_build_keeps_its_partial_folder_after_a_kill(tmp_path):
    out = tmp_path / "abc"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out, resumable=True) as tmp:
            (tmp / "checkpoint").write_text("step 3")
            raise KeyboardInterrupt
    assert not out.exists()
    with atomic_dir(out, resumable=True) as tmp:
        assert (tmp / "checkpoint").read_text() == "step 3"
    assert (out / "checkpoint").exists()
