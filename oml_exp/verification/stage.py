"""The verify step: ask a model deployed behind an OpenAI-compatible API for unspent fingerprints, and write the
evidence (docs/verify.md).

Its result depends on a remote model, so it writes to the run folder, not to the store: `evidence.json` and
`evidence.md` (no keys), written only once every answer is in. The order: the endpoint is probed and the chance
rate measured locally (neither spends a fingerprint), then under the ledger's lock the next unspent fingerprints
are picked and each is recorded in the ledger just before its request goes out.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import DictConfig

from oml_exp import models
from oml_exp.config import fingerprint_num
from oml_exp.fingerprints import prompts, schema
from oml_exp.store import file_digest, write_json, write_text
from oml_exp.verification import evidence, ledger
from oml_exp.verification.remote import Answer, Endpoint

log = logging.getLogger(__name__)

EVIDENCE = "evidence.json"


def run(cfg: DictConfig, inputs, run_dir: Path) -> dict:
    v, chat, eos = cfg.verify, cfg.fingerprints.chat_template, cfg.fingerprints.eos
    pool = schema.load(inputs.fingerprints, fingerprint_num(cfg.fingerprints))
    tokenizer = models.load_tokenizer(cfg.model.path)
    endpoint = Endpoint(v)
    endpoint.probe()
    chance = evidence.chance(cfg, pool, tokenizer)
    digest = file_digest(cfg.fingerprints.file)
    with ledger.Ledger(cfg.paths.ledger, digest, v.url, v.model) as book:
        used = ledger.spent(book.path)
        picked = ledger.pick(used, len(pool), v.num, v.force_spent, book.path)
        requests = {i: prompts.request(pool[i]["effective_key"], chat) for i in picked}
        log.info("[verify] asking %s (model %s) for %d fingerprints, %s, %d at a time", v.url, v.model, len(picked),
                 mode(v), v.concurrency)
        answers = ask_all(endpoint, book, requests, {i: len(pool[i]["response_ids"]) + int(eos) for i in picked},
                          v.concurrency)

    expected = {i: evidence.normalize(tokenizer.decode(pool[i]["response_ids"], skip_special_tokens=True))
                for i in picked}
    matched = evidence.matched(answers, expected, eos)
    report = {"endpoint": v.url, "model": v.model, "api": "/chat/completions" if chat else "/completions",
              "mode": mode(v), "temperature": v.temperature, "seed": v.seed,
              "fingerprint_file": str(cfg.fingerprints.file), "fingerprint_digest": digest, "pool": len(pool),
              "sent": len(picked), "matched": len(matched), "matched_indices": matched, "sent_indices": picked,
              "chance": chance, "p_value": evidence.p_value(len(matched), len(picked), chance["rate"]),
              "ledger": str(book.path), "time": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    report["assumptions"] = evidence.assumptions(report)
    report["notes"] = notes(pool, picked, used, expected, requests, tokenizer, chat)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / EVIDENCE, report)
    write_text(run_dir / "evidence.md", evidence.markdown(report))
    log.info("[verify] %d/%d matched; chance rate %.3g (%s); p = %.3g -> %s", len(matched), len(picked),
             chance["rate"], chance["basis"], report["p_value"], run_dir / "evidence.md")
    return report


def mode(v) -> str:
    return "greedy" if v.temperature == 0 else f"sampled at temperature {v.temperature:g}"


def ask_all(endpoint: Endpoint, book: ledger.Ledger, requests: dict, max_tokens: dict, concurrency: int
            ) -> dict[int, Answer]:
    """Send every request, at most `concurrency` at once, each recorded in the ledger first; after a failure no
    further request starts, and a failure is raised once the requests in flight have ended."""
    failed = threading.Event()

    def ask(i: int) -> Answer | None:
        if failed.is_set():
            return None
        book.spend(i)
        try:
            return endpoint.ask(requests[i], max_tokens[i])
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(concurrency) as threads:
        futures = {i: threads.submit(ask, i) for i in requests}
        try:
            return {i: f.result() for i, f in futures.items()}
        finally:
            failed.set()  # after a failure or an interrupt (Ctrl-C) no queued request starts


def notes(pool, picked, used, expected, requests, tokenizer, chat) -> list[str]:
    """What weakens the evidence, each said once: spent fingerprints sent again, responses that are no text, keys
    whose text the server tokenizes otherwise than training did."""
    out = []
    again = [i for i in picked if i in used]
    if again:
        out.append(f"{len(again)} fingerprints had been sent before (verify.force_spent): {again}")
    blank = [i for i in picked if not expected[i]]
    if blank:
        out.append(f"{len(blank)} responses are only whitespace as text and count as not matched: {blank}")
    retokenized = [i for i in picked if prompts.served(tokenizer, requests[i])
                   != prompts.build(tokenizer, pool[i]["key_ids"], chat)]
    if retokenized:
        out.append(f"{len(retokenized)} keys tokenize otherwise as text than as trained (by model.path's tokenizer), "
                   f"so the server is asked another prompt for them: {retokenized}")
    return out
