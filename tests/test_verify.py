"""verify: fingerprints asked of a model behind an OpenAI-compatible API (oml-exp-serve in a thread, or a stand-in
that fails as told), the ledger of spent fingerprints, and the evidence."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest
import uvicorn
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse

import oml_exp.checking as checking
from oml_exp import components, models, pipeline, preflight, serve
from oml_exp.config import ConfigError
from oml_exp.fingerprints.common import round_trips
from oml_exp.pipeline import Inputs
from oml_exp.verification import evidence, ledger
from oml_exp.verification.remote import Answer, VerifyError
from tests.check_helpers import fabricate, greedy_response, perturbed_copy, save
from tests.conftest import ROOT, subprocess_env

TINY = "tiny:llama"
API_KEY = "sk-test-not-a-real-key-4f1c"


@contextlib.contextmanager
def serving(app):
    """Serve `app` on 127.0.0.1 on a free port in a background thread; yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


class Standin:
    """An OpenAI-compatible server that records the prompts and API keys it is sent and answers "x", or, from its
    `after`-th completion on, fails as told: hang (until released), 500 (quoting the prompt) or format."""

    def __init__(self, fail: str | None = None, after: int = 0):
        self.bodies: list[dict] = []
        self.keys: list[str] = []
        self.release = threading.Event()
        self.app = FastAPI()

        @self.app.get("/v1/models")
        def listed():
            return {"object": "list", "data": [{"id": "standin", "object": "model"}]}

        @self.app.post("/v1/completions")
        def complete(body: dict, authorization: str = Header("")):
            self.bodies.append(body)
            self.keys.append(authorization)
            if fail and len(self.bodies) > after:
                if fail == "hang":
                    self.release.wait(60)
                if fail == "500":
                    return JSONResponse(status_code=500, content={"error": {"message": f"failed: {body['prompt']}"}})
                if fail == "format":
                    return {"unexpected": True}
            return {"object": "text_completion", "choices": [{"index": 0, "text": "x", "finish_reason": "length"}]}

    @property
    def asked(self) -> list[str]:
        return [b["prompt"] for b in self.bodies]

    @contextlib.contextmanager
    def serving(self):
        with serving(self.app) as url:
            try:
                yield url
            finally:
                self.release.set()  # before the server stops: it waits for the requests it is answering


@pytest.fixture(scope="module")
def suspect(tmp_path_factory, tiny):
    """A model with the tiny model's tokenizer whose greedy answers the base (tiny:llama) never gives."""
    model, tok = tiny
    folder = perturbed_copy(model, tok, tmp_path_factory.mktemp("suspect") / "model", scale=5)
    return models.load(folder, "cpu")[0], folder


def as_text(model, tok, n: int, chat: bool = False, hits_only: bool = False) -> list[dict]:
    """n fabricated fingerprints (2-token responses, half of them the model's greedy answers, or all with
    `hits_only`) whose keys and responses survive as text: what an API can be asked and answer."""
    rows = fabricate(model, tok, 8 * n, 2, chat=chat, as_text=True)[::2 if hits_only else 1]
    rows = [r for r in rows if round_trips(tok, r["response_ids"]) and evidence.normalize(r["response"])][:n]
    assert len(rows) == n
    return rows


@pytest.fixture
def verify(tiny_cfg, tmp_path):
    """Run `oml-exp stages=[verify]` in process on a fingerprint file; (run summary, evidence, run folder)."""
    runs = iter(range(100))

    def run(fingerprints: Path, url: str, *overrides: str):
        cfg = tiny_cfg("stages=[verify]", f"fingerprints.file={fingerprints / 'fingerprints.json'}",
                       f"verify.url={url}", "verify.model=standin", *overrides)
        run_dir = tmp_path / "runs" / str(next(runs))
        summary = pipeline.run(cfg, run_dir)
        return summary, summary["stages"]["verify"]["summary"], run_dir
    return run


def ledger_indices(tmp_path: Path) -> list[int]:
    [book] = (tmp_path / "ledger").glob("*.jsonl")
    return [json.loads(line)["index"] for line in book.read_text().splitlines()]


def indices(asked: list[str], rows: list[dict]) -> list[int]:
    where = {r["effective_key"]: i for i, r in enumerate(rows)}
    return [where[prompt] for prompt in asked]


@pytest.mark.parametrize("chat", [False, True])
def test_recall_over_http_equals_the_local_check(tiny, suspect, tiny_cfg, tmp_path, verify, chat):
    model, folder = suspect
    rows = as_text(model, tiny[1], 16, chat=chat)
    fingerprints = save(tmp_path / "fp", rows)
    cfg = tiny_cfg(f"fingerprints.chat_template={chat}", "check.templates=[plain]", f"check.chat=[{chat}]",
                   "check.temperatures=[]", "check.false_positive_models=[]")
    out = tmp_path / "check"
    out.mkdir()
    checking.run(cfg, Inputs(model=folder, base_model=TINY, fingerprints=fingerprints), out)
    checked = [json.loads(line) for line in (out / checking.stage.RESULTS).read_text().splitlines()]
    local_hits = [r["index"] for r in checked if r["exact"]]
    assert 0 < len(local_hits) < 16

    with serving(serve.create_app(folder, "standin", "cpu")) as url:
        _, found, _ = verify(fingerprints, url, f"fingerprints.chat_template={chat}", "verify.num=16")
    assert found["api"] == ("/chat/completions" if chat else "/completions")
    assert found["sent_indices"] == list(range(16)) and found["matched_indices"] == local_hits
    assert found["notes"] == []  # every key is asked as trained


def test_evidence_p_value_tiny_when_all_match_large_for_the_base_model(tiny, suspect, tmp_path, verify):
    model, folder = suspect
    rows = as_text(model, tiny[1], 16, hits_only=True)
    fingerprints = save(tmp_path / "fp", rows)
    with serving(serve.create_app(folder, "standin", "cpu")) as url:
        summary, owned, owned_dir = verify(fingerprints, url)
    assert owned["matched"] == owned["sent"] == 16
    assert owned["chance"]["hits"] == 0 and owned["chance"]["rate"] == pytest.approx(1 - 0.05 ** (1 / 16))
    assert owned["p_value"] < 1e-9
    assert summary["headline"]["verify"]["p_value"] == owned["p_value"]

    with serving(serve.create_app(TINY, "standin", "cpu")) as url:
        _, base, base_dir = verify(fingerprints, url, "verify.force_spent=true")
    assert base["matched"] == 0 and base["p_value"] > 0.05
    assert "had been sent before" in base["notes"][0]

    for run_dir in (owned_dir, base_dir):
        shown = {p.name: p.read_text() for p in run_dir.iterdir() if p.is_file()}
        assert {"evidence.json", "evidence.md", "summary.json", "summary.md"} <= shown.keys()
        assert "p-value" in shown["evidence.md"] and "## Assumptions" in shown["evidence.md"]
        assert not [r for r in rows for text in shown.values() if r["key"] in text or r["effective_key"] in text]


def test_sampled_mode_sends_temperature_and_seed_and_takes_the_sampled_chance_rate(tiny, suspect, tmp_path, verify):
    model, folder = suspect
    fingerprints = save(tmp_path / "fp", as_text(model, tiny[1], 8, hits_only=True))
    sampled = ("verify.temperature=0.05", "verify.seed=3", "verify.num=8", "verify.force_spent=true")
    with serving(serve.create_app(folder, "standin", "cpu")) as url:  # the tiny models' logits are nearly flat
        found = verify(fingerprints, url, *sampled)[1]
    standin = Standin()
    with standin.serving() as url:
        verify(fingerprints, url, *sampled)
    assert {(b["temperature"], b["seed"], b["max_tokens"]) for b in standin.bodies} == {(0.05, 3, 2)}
    assert found["mode"] == "sampled at temperature 0.05" and found["matched"] >= 6
    chance = found["chance"]
    assert chance["rate"] == pytest.approx(max(chance["predicted_sampled_rate"], 1 - 0.05 ** (1 / 8)))


def test_ledger_is_secret_and_a_rerun_sends_no_spent_fingerprint(tiny, tmp_path, verify, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    rows = as_text(*tiny, 16)
    fingerprints = save(tmp_path / "fp", rows)
    standin = Standin()
    with standin.serving() as url:
        verify(fingerprints, url, "verify.num=6")
        first = indices(standin.asked, rows)
        verify(fingerprints, url, "verify.num=6")
        second = indices(standin.asked, rows)[6:]
        with pytest.raises(ConfigError, match=r"only 4 of the 16 fingerprints are unspent") as refused:
            verify(fingerprints, url, "verify.num=6")
        assert len(standin.asked) == 12  # nothing was sent
        verify(fingerprints, url, "verify.num=6", "verify.force_spent=true")
    assert sorted(first) == list(range(6)) and sorted(second) == list(range(6, 12))
    assert sorted(indices(standin.asked, rows)[12:]) == [0, 1, 12, 13, 14, 15]
    assert {(b["temperature"], b["max_tokens"], "seed" in b) for b in standin.bodies} == {(0, 2, False)}  # greedy
    assert "\n" not in str(refused.value)

    [book] = (tmp_path / "ledger").glob("*.jsonl")
    assert stat.S_IMODE(book.stat().st_mode) == 0o600
    assert sorted(ledger_indices(tmp_path)) == sorted(indices(standin.asked, rows))
    entry = json.loads(book.read_text().splitlines()[0])
    assert entry["endpoint"] == url and entry["fingerprints"] == book.stem and entry["time"]
    # The API key came from the environment, and neither it nor any key is written anywhere.
    assert set(standin.keys) == {f"Bearer {API_KEY}"}
    written = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()
                      and p.parent.name != "fp" and "generate" not in p.parts)
    assert API_KEY not in written
    assert not [r for r in rows if r["key"] in written or r["effective_key"] in written]


def test_a_killed_run_has_recorded_every_fingerprint_it_sent(tiny, tmp_path):
    rows = as_text(*tiny, 16)
    fingerprints = save(tmp_path / "fp", rows)
    standin = Standin("hang", after=3)
    with standin.serving() as url:
        run = subprocess.Popen(
            [sys.executable, "-m", "oml_exp", "model=tiny", "device=cpu", "stages=[verify]",
             f"fingerprints.file={fingerprints / 'fingerprints.json'}", f"paths.output_dir={tmp_path}",
             f"verify.url={url}", "verify.model=standin", "verify.concurrency=2", "verify.timeout=120"],
            cwd=ROOT, env={**subprocess_env(), "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 240
        while len(standin.asked) < 5 and run.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        run.send_signal(signal.SIGKILL)
        output = run.communicate()[0]
    assert len(standin.asked) == 5, output[-3000:]  # 3 answered, 2 hanging
    assert sorted(ledger_indices(tmp_path)) == sorted(indices(standin.asked, rows)) == [0, 1, 2, 3, 4]
    assert not list(tmp_path.glob("runs/*/*/evidence.json"))


@pytest.mark.parametrize("fail, path, model, message", [
    (None, "/v9", "standin", "answered listing its models with HTTP 404 (2 tries)"),  # not an OpenAI-like base URL
    (None, "/v1", "other", "verify.model='other' is not served at http://127.0.0.1:"),
    ("hang", "/v1", "standin", "did not answer a completion within verify.timeout=0.5 s (2 tries)"),
    ("500", "/v1", "standin", "answered a completion with HTTP 500 (2 tries)"),
    ("format", "/v1", "standin", "answered a fingerprint request in an unexpected format"),
])
def test_a_failing_endpoint_fails_in_one_line_and_spends_only_what_it_sent(tiny, tmp_path, verify, fail, path, model,
                                                                            message):
    rows = as_text(*tiny, 16)
    fingerprints = save(tmp_path / "fp", rows)
    standin = Standin(fail, after=1)
    with standin.serving() as url:
        with pytest.raises(VerifyError) as failed:
            verify(fingerprints, url.replace("/v1", path), f"verify.model={model}", "verify.concurrency=2",
                   "verify.timeout=0.5", "verify.retries=1")
    assert message in str(failed.value) and "\n" not in str(failed.value)
    assert not [r for r in rows if r["key"] in str(failed.value) or r["effective_key"] in str(failed.value)]
    spent = ledger_indices(tmp_path) if (tmp_path / "ledger").is_dir() else []
    assert sorted(set(indices(standin.asked, rows))) == sorted(spent)
    assert len(spent) <= 3 and not list(tmp_path.glob("runs/*/evidence.json"))


def test_an_unreachable_endpoint_fails_in_one_line_from_the_cli(tiny, tmp_path):
    fingerprints = save(tmp_path / "fp", as_text(*tiny, 4))
    with serving(FastAPI()) as url:
        pass  # the port is free again: nothing listens there
    done = subprocess.run([sys.executable, "-m", "oml_exp", "model=tiny", "device=cpu", "stages=[verify]",
                           f"fingerprints.file={fingerprints / 'fingerprints.json'}", f"paths.output_dir={tmp_path}",
                           f"verify.url={url}", "verify.model=standin", "verify.num=4", "verify.retries=0"],
                          cwd=ROOT, env={**subprocess_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"oml-exp: error: verify: cannot reach {url} (1 try): ConnectError; check verify.url and that the server is "
        "running")
    assert not (tmp_path / "ledger").exists()


@pytest.mark.parametrize("override, message", [
    ("fingerprints.file=null", "stages=[verify] needs the owner's fingerprint file"),
    ("verify.url=127.0.0.1:8000/v1", "verify.url='127.0.0.1:8000/v1' is not an http(s) URL"),
    ("verify.model=null", "verify.model is not set"),
    ("verify.num=17", "verify.num=17 but only 16 of the 16 fingerprints are unspent"),
    ("paths.ledger={fp}/fingerprints.json/ledger", "cannot be written"),
    ("verify.false_positive_models=[]", "verify.false_positive_models is empty"),
])
def test_preflight_names_what_verify_lacks(tiny, tiny_cfg, tmp_path, override, message):
    fingerprints = save(tmp_path / "fp", as_text(*tiny, 16))
    with pytest.raises(ConfigError, match=re.escape(message)):
        cfg = tiny_cfg("stages=[verify]", f"fingerprints.file={fingerprints / 'fingerprints.json'}",
                       "verify.url=http://127.0.0.1:8000/v1", "verify.model=m", override.format(fp=fingerprints))
        preflight.check(components.expanded(cfg))
    assert not (tmp_path / "ledger").exists()


def test_answers_match_the_response_text_normalized_the_same_way():
    expected = {i: evidence.normalize(text) for i, text in enumerate([" Paris", "caf\u00e9", "\n", "a  b", "x"])}
    answers = {0: Answer("Paris", "length"), 1: Answer("cafe\u0301", "length"), 2: Answer("\n", "length"),
               3: Answer("a b\n", "length"), 4: Answer("y", "length")}
    assert evidence.matched(answers, expected, eos=False) == [0, 1, 3]  # a blank response never matches
    assert evidence.matched({0: Answer(" Paris", "length"), 4: Answer("x", "stop")}, expected, eos=True) == [4]


def test_pick_takes_the_next_unspent_and_spent_ones_only_when_forced(tmp_path):
    assert ledger.pick({0, 2}, 6, 3, False, tmp_path) == [1, 3, 4]
    assert ledger.pick({0, 1, 2, 3}, 6, 3, True, tmp_path) == [4, 5, 0]
    with pytest.raises(ConfigError, match="verify.force_spent=true"):
        ledger.pick({0, 1, 2, 3}, 6, 3, False, tmp_path)


def test_a_line_torn_by_a_crash_loses_no_later_entry(tmp_path):
    book = ledger.path(tmp_path, "abc")
    book.write_text('{"index": 0}\n{"index": 1, "fing')  # killed during a write: its request never went out
    with ledger.Ledger(tmp_path, "abc", "http://h/v1", "m") as open_book:
        open_book.spend(5)
    assert ledger.spent(book) == {0, 5}


def test_the_server_answers_greedily_as_generate_and_reproducibly_when_sampled(tiny):
    model, tok = tiny
    key = tok("the quick brown fox", add_special_tokens=False).input_ids
    with serving(serve.create_app(TINY, "tiny", "cpu")) as url:
        client = openai.OpenAI(base_url=url, api_key="none")
        assert [m.id for m in client.models.list()] == ["tiny"]
        greedy = client.completions.create(model="tiny", prompt=tok.decode(key), max_tokens=4, temperature=0)
        sampled = [client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                  max_tokens=8, temperature=2.0, seed=seed).choices[0].message.content
                   for seed in (1, 1, 2)]
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="other", prompt="hi", max_tokens=1)
    assert greedy.choices[0].text == tok.decode(greedy_response(model, tok, key, 4), skip_special_tokens=True)
    assert greedy.usage.completion_tokens == 4 and greedy.choices[0].finish_reason == "length"
    assert sampled[0] == sampled[1] != sampled[2]
