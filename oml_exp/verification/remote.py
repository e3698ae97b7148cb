"""Asking a deployed model over an OpenAI-compatible API, with the official `openai` client.

Raw fingerprints go to /completions as prompt text, chat-framed ones to /chat/completions as messages, so that the
server tokenizes and applies its own chat template as a deployment would. The client brings timeouts and retries
(with backoff) of requests that time out, cannot connect or get 408, 429 or 5xx. Every failure becomes one
VerifyError line naming the endpoint and the fix; no line ever holds a key or an answer.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import openai

log = logging.getLogger(__name__)


class VerifyError(RuntimeError):
    """The endpoint could not be asked (unreachable, timed out, an error status, a wrong answer format)."""


@dataclass
class Answer:
    text: str
    finish_reason: str | None


class Endpoint:
    def __init__(self, verify):  # the verify config section
        self.url, self.model, self.settings = verify.url, verify.model, verify
        key = os.environ.get(verify.api_key_env)
        if not key:
            log.warning("[verify] $%s is not set: sending the placeholder key 'none' (enough for a server started "
                        "without an API key)", verify.api_key_env)
        for name in ("httpx", "httpx2"):  # they log each request at INFO: a line per fingerprint in the run's log
            logging.getLogger(name).setLevel(logging.WARNING)
        self.client = openai.OpenAI(base_url=verify.url, api_key=key or "none", timeout=verify.timeout,
                                    max_retries=verify.retries)

    def probe(self) -> None:
        """Reach the endpoint and see the model listed, before any fingerprint is spent."""
        page = self._call("listing its models", self.client.models.list)
        try:
            served = [m.id for m in page]
        except (AttributeError, TypeError):
            served = [None]
        if not all(isinstance(m, str) for m in served):
            raise self._wrong_format("listing its models", "no model ids")
        if self.model not in served:
            raise VerifyError(f"verify.model={self.model!r} is not served at {self.url}, which serves {served}; "
                              "set verify.model to one of them")

    def ask(self, framed: str | list[dict], max_tokens: int) -> Answer:
        """One request: prompt text to /completions, chat messages to /chat/completions."""
        args = {"model": self.model, "max_tokens": max_tokens, "temperature": self.settings.temperature}
        if self.settings.temperature > 0 and self.settings.seed is not None:
            args["seed"] = self.settings.seed
        if isinstance(framed, str):
            response = self._call("a completion", lambda: self.client.completions.create(prompt=framed, **args))
            return self._answer(response, lambda choice: choice.text)
        response = self._call("a chat completion",
                              lambda: self.client.chat.completions.create(messages=framed, **args))
        return self._answer(response, lambda choice: choice.message.content)

    def _answer(self, response, text_of) -> Answer:
        try:
            choice = response.choices[0]
            text = text_of(choice)
        except (AttributeError, IndexError, KeyError, TypeError):
            text = None
        if not isinstance(text, str):
            raise self._wrong_format("a fingerprint request", "no text in choices[0]")
        return Answer(text, getattr(choice, "finish_reason", None))

    def _call(self, what: str, request):
        tries = f"{self.settings.retries + 1} tr{'y' if self.settings.retries == 0 else 'ies'}"
        try:
            return request()
        except openai.APITimeoutError:
            raise VerifyError(f"verify: {self.url} did not answer {what} within verify.timeout="
                              f"{self.settings.timeout:g} s ({tries}); raise verify.timeout or check the server"
                              ) from None
        except openai.APIConnectionError as err:
            cause = err.__cause__ or err
            raise VerifyError(f"verify: cannot reach {self.url} ({tries}): {type(cause).__name__}; check verify.url "
                              "and that the server is running") from None
        except openai.AuthenticationError:
            raise VerifyError(f"verify: {self.url} refused the API key (HTTP 401); set ${self.settings.api_key_env} "
                              "to a key it accepts (or name another variable with verify.api_key_env)") from None
        except openai.APIStatusError as err:
            # The body of an answer to a fingerprint request may quote the key: only its status is shown.
            raise VerifyError(f"verify: {self.url} answered {what} with HTTP {err.status_code} ({tries}); check the "
                              "server's log, verify.url and verify.model") from None
        except openai.APIError as err:  # e.g. a body that is not JSON
            raise self._wrong_format(what, type(err).__name__) from None

    def _wrong_format(self, what: str, detail: str) -> VerifyError:
        return VerifyError(f"verify: {self.url} answered {what} in an unexpected format ({detail}); is verify.url "
                           "the base URL of an OpenAI-compatible API (it usually ends in /v1)?")
