"""`oml-exp-serve MODEL_SPEC [--host --port --name]`: a model behind a small OpenAI-compatible API, for tests and
demos of `verify` (docs/verify.md).

Any spec oml_exp.models loads (tiny:llama, embedded:smollm2-135m-instruct, a folder) answers /v1/models,
/v1/completions (prompt text, tokenized with the tokenizer's special tokens) and /v1/chat/completions (messages,
rendered by the tokenizer's chat template), one prompt per request and one request at a time: greedy at
temperature 0, else sampled (temperature, top_p, seed). Answers stop at EOS (finish_reason "stop") or after
max_tokens (default 16, finish_reason "length") and are decoded without special tokens, as vLLM does.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Optional

import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from transformers import GenerationConfig

from oml_exp import models
from oml_exp.checking.sampling import Setting
from oml_exp.fingerprints import prompts


class Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields this server does not use

    model: str
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: Optional[int] = None

    @property
    def new_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 16


class CompletionRequest(Sampling):
    prompt: str


class ChatRequest(Sampling):
    messages: list[dict]


class Server:
    """One loaded model and what it answers; generation is serialized so that a seed fixes a sampled answer."""

    def __init__(self, spec: str, device: str = "auto"):
        self.model, self.tokenizer = models.load(spec, device)
        eos = self.model.generation_config.eos_token_id
        self.eos = {self.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        self.lock = threading.Lock()

    @torch.inference_mode()
    def complete(self, framed: str | list[dict], request: Sampling) -> tuple[str, str, int, int]:
        """(text, finish_reason, prompt tokens, answer tokens) for the prompt text or chat messages `framed`."""
        ids = prompts.served(self.tokenizer, framed)
        pad = self.tokenizer.pad_token_id
        config = (Setting(request.temperature, request.top_p).generation_config(request.new_tokens, 1, pad)
                  if request.temperature > 0 else
                  GenerationConfig(do_sample=False, repetition_penalty=1.0, max_new_tokens=request.new_tokens,
                                   pad_token_id=pad))
        prompt = torch.tensor([ids], device=self.model.device)
        with self.lock:
            if request.seed is not None:
                torch.manual_seed(request.seed)
            out = self.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                      generation_config=config)
        new = out[0, len(ids):].tolist()
        stop = next((j for j, t in enumerate(new) if t in self.eos), None)
        answer = new if stop is None else new[:stop]
        text = self.tokenizer.decode(answer, skip_special_tokens=True)
        return text, "length" if stop is None else "stop", len(ids), len(new)


def create_app(spec: str, name: Optional[str] = None, device: str = "auto") -> FastAPI:
    server = Server(spec, device)
    name = name or spec
    app = FastAPI(title=f"oml-exp-serve {name}")

    def reply(kind: str, choice: dict, prompt_tokens: int, answer_tokens: int) -> dict:
        return {"id": f"{kind}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": name,
                "choices": [{"index": 0, **choice}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": answer_tokens,
                          "total_tokens": prompt_tokens + answer_tokens}}

    def unknown(request: Sampling) -> Optional[JSONResponse]:
        if request.model == name:
            return None
        return JSONResponse(status_code=404, content={"error": {
            "message": f"model {request.model!r} is not served here; this server serves {name!r}",
            "type": "invalid_request_error", "code": "model_not_found"}})

    @app.get("/v1/models")
    def list_models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "oml-exp"}]}

    @app.post("/v1/completions")
    def completions(request: CompletionRequest):
        if (error := unknown(request)) is not None:
            return error
        text, finish, used, new = server.complete(request.prompt, request)
        return reply("text_completion", {"text": text, "finish_reason": finish, "logprobs": None}, used, new)

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatRequest):
        if (error := unknown(request)) is not None:
            return error
        text, finish, used, new = server.complete(request.messages, request)
        choice = {"message": {"role": "assistant", "content": text}, "finish_reason": finish}
        return reply("chat.completion", choice, used, new)

    return app


def main(argv: Optional[list[str]] = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="oml-exp-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", metavar="MODEL_SPEC", help="tiny:llama, embedded:smollm2-135m-instruct, a folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--name", help="the model name clients ask for (default: MODEL_SPEC)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    try:
        app = create_app(args.model, args.name, args.device)
    except models.ModelError as err:
        parser.exit(1, f"oml-exp-serve: error: {err}\n")
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
