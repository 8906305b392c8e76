"""POST /v1/chat/completions: validation, slots, scripted or default replies, paced SSE.

The chunk shapes follow the servers:

- vLLM: the first chunk carries `{"role": "assistant", "content": ""}`, the last token's chunk
  carries the `finish_reason`, then (with `stream_options.include_usage`) a chunk with empty
  `choices` and `usage`; an error mid-stream is `data: {"error": {...}}` then `data: [DONE]`.
- llama-server: `content: null` in the first chunk, `system_fingerprint` in each, a separate
  empty-delta chunk with the `finish_reason` and `timings`, then the usage chunk; an error
  mid-stream is an `error: {...}` line.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import Any

from tests.fake_ollama.responder import Reply, count_tokens, default_reply, tokenize

from .handler import ClientGone, Handler, now
from .server import QueueFull, Scenario, Stopped

MAX_BATCH = 256
EFFORTS = ("low", "medium", "high")
TEMPLATE_TOKENS = 24  # what the harmony chat template adds around the messages
SPECIAL = re.compile(r"(<\|[a-z]+\|>)")
_ids = itertools.count(1)

Token = tuple[str, str]  # ("reasoning" | "content", text)


def handle_chat(h: Handler, body: dict[str, Any]) -> None:
    fake = h.fake
    if fake.loading:
        h.send_error_object(503, "Loading model", type="unavailable_error")
        return
    problem = invalid(h, body)
    if problem is not None:
        status, message, param = problem
        h.send_error_object(status, message, param=param)
        return
    requested = str(body["model"])
    served = fake.served_model(requested)
    if served is None:
        h.send_error_object(
            404, f"The model `{requested}` does not exist.", type="NotFoundError", param="model"
        )
        return
    scenario = fake.next_scenario()
    if scenario is not None and scenario.status is not None:
        h.send_error_object(
            scenario.status,
            scenario.error_message,
            type=scenario.error_type,
            param=scenario.error_param,
            code=scenario.error_code,
        )
        return
    if scenario is not None and scenario.hang:
        fake.stopping.wait()
        h.drop()
    try:
        fake.slots.acquire()
    except QueueFull:
        busy(h)
        return
    except Stopped:
        h.drop()
    try:
        model = scenario.model if scenario is not None and scenario.model else served
        Completion(h, body, scenario, model).run()
    finally:
        fake.slots.release()


def invalid(h: Handler, body: dict[str, Any]) -> tuple[int, str, str | None] | None:
    """(status, message, param) of a request the server refuses, else None."""
    fake = h.fake
    if not isinstance(body.get("model"), str) or not body["model"]:
        return 400, "model is required", "model"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 400, "messages must be a non-empty list", "messages"
    if any(not isinstance(m, dict) or "role" not in m for m in messages):
        return 400, "each message needs a role", "messages"
    for param in fake.refuse_params:
        if param in body:
            if fake.flavor == "llama.cpp":
                return 400, f"Unsupported param: {param}", None
            return 400, f"Unrecognized request argument supplied: {param}", param
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in EFFORTS:
        return 400, f"reasoning_effort must be one of {', '.join(EFFORTS)}", "reasoning_effort"
    fmt = body.get("response_format")
    if fmt is not None:
        if not fake.schema_support:
            return (
                400,
                "'response_format' of type 'json_schema' is not supported",
                ("response_format"),
            )
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            return (
                400,
                "response_format.type must be text, json_object or json_schema",
                ("response_format"),
            )
        schema = fmt.get("json_schema") if kind == "json_schema" else {}
        if kind == "json_schema" and not (
            isinstance(schema, dict) and isinstance(schema.get("schema"), dict)
        ):
            return 400, "response_format.json_schema.schema must be an object", ("response_format")
    options = body.get("stream_options")
    if options is not None and not body.get("stream"):
        return 400, "Stream options can only be defined when `stream=True`.", "stream_options"
    return None


def busy(h: Handler) -> None:
    status = h.fake.busy_status
    message = (
        "Too many requests: the server is at capacity"
        if status == 429
        else "The server is overloaded: no slot is available"
    )
    h.send_error_object(status, message, headers={"Retry-After": "1"})


def answer_format(body: dict[str, Any]) -> str | dict[str, Any] | None:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema":
        schema = fmt["json_schema"]["schema"]
        return schema if isinstance(schema, dict) else "json"
    return "json" if fmt.get("type") == "json_object" else None


class Completion:
    """One streamed (or whole) answer."""

    def __init__(
        self, h: Handler, body: dict[str, Any], scenario: Scenario | None, model: str
    ) -> None:
        self.h, self.body, self.scenario, self.model = h, body, scenario, model
        self.fake = h.fake
        self.id = f"chatcmpl-fake{next(_ids)}"
        self.created = now()
        self.field = (scenario.reasoning_field if scenario else None) or self.fake.reasoning_field
        self.messages = [m for m in body["messages"] if isinstance(m, dict)]
        if scenario is not None and (scenario.reasoning or scenario.content):
            self.reply = Reply(thinking=scenario.reasoning, content=scenario.content)
        else:
            self.reply = default_reply(
                self.messages,
                reasoning_tokens=self.fake.reasoning_tokens,
                answer_format=answer_format(body),
            )
        self.tokens = self._tokens()
        self.prompt_tokens = TEMPLATE_TOKENS + sum(
            count_tokens(str(m.get("content") or "")) for m in self.messages
        )
        self.first = True
        self.finish_sent = False

    def _tokens(self) -> list[Token]:
        reasoning, content = self.reply.thinking, self.reply.content
        if self.field == "harmony":
            text = (
                f"<|channel|>analysis<|message|>{reasoning}<|end|>"
                f"<|start|>assistant<|channel|>final<|message|>{content}<|return|>"
            )
            # A special token is one token; the text between them is tokenized as usual.
            return [
                ("content", t)
                for part in SPECIAL.split(text)
                for t in ([part] if SPECIAL.fullmatch(part) else tokenize(part))
            ]
        if self.field == "bare-harmony":
            text = f"analysis{reasoning}assistantfinal{content}"
            return [("content", t) for t in tokenize(text)]
        tokens = [] if self.field == "none" else [("reasoning", t) for t in tokenize(reasoning)]
        return tokens + [("content", t) for t in tokenize(content)]

    # -- chunks -------------------------------------------------------------------------------
    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta}
        if self.fake.flavor == "llama.cpp":
            choice = {"finish_reason": finish, "index": 0, "delta": delta}
            return {
                "choices": [choice],
                "created": self.created,
                "id": self.id,
                "model": self.model,
                "system_fingerprint": "b6500-fake",
                "object": "chat.completion.chunk",
            }
        choice.update(logprobs=None, finish_reason=finish)
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }

    def delta(self, token: Token) -> dict[str, Any]:
        kind, text = token
        if kind == "content":
            delta: dict[str, Any] = {"content": text}
        elif self.field == "both":
            delta = {"reasoning": text, "reasoning_content": text}
        else:
            delta = {self.field: text}
        if self.first:
            self.first = False
            if self.fake.flavor == "llama.cpp":
                delta = {"role": "assistant", "content": None, **delta}
            else:
                delta = {"role": "assistant", **delta}
        return delta

    def usage(self) -> dict[str, Any]:
        completion = len(self.tokens)
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + completion,
            "completion_tokens": completion,
        }

    def error_event(self, message: str) -> str:
        obj = self.h.error_object(500, message)
        if self.fake.flavor == "llama.cpp":
            return "error: " + json.dumps(obj["error"])
        return "data: " + json.dumps(obj)

    # -- the answer ---------------------------------------------------------------------------
    def run(self) -> None:
        if self.body.get("stream") is not True:
            self.whole()
            return
        scenario, h = self.scenario, self.h
        delay = scenario.first_token_delay if scenario else 0.0
        h.start_stream()
        if delay > 0 and self.fake.stopping.wait(delay):
            h.drop()
        tokens = self.tokens
        cuts = (
            [
                (scenario.drop_after, "drop"),
                (scenario.error_after, "error"),
                (scenario.stall_after, "stall"),
            ]
            if scenario
            else []
        )
        cut, failure = min(
            ((n, what) for n, what in cuts if n is not None), default=(len(tokens), None)
        )
        cut = max(0, min(cut, len(tokens)))
        self.paced(tokens[:cut], last=failure is None)
        if failure == "drop":
            h.drop()
        if failure == "error":
            assert scenario is not None
            events = [self.error_event(scenario.error_message)]
            if self.fake.flavor != "llama.cpp":  # llama-server ends the body after the error
                events.append("data: [DONE]")
            h.write_events(events)
            h.end_stream()
            return
        if failure == "stall":
            assert scenario is not None
            release = scenario.release
            while not (release is not None and release.is_set()):
                if self.fake.stopping.wait(0.02):
                    h.drop()
                if h.client_gone():
                    raise ClientGone
            self.paced(tokens[cut:], last=True)
        self.finish()

    def finish(self) -> None:
        scenario, h = self.scenario, self.h
        reason = scenario.finish_reason if scenario else "stop"
        events = []
        if not self.finish_sent:
            final = self.chunk({}, reason)
            if self.fake.flavor == "llama.cpp":
                final["timings"] = {
                    "prompt_n": self.prompt_tokens,
                    "prompt_ms": 12.5,
                    "predicted_n": len(self.tokens),
                    "predicted_ms": 1000.0 * len(self.tokens) / max(self.fake.token_rate, 1e-3),
                }
            events.append("data: " + json.dumps(final))
        options = self.body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage(),
            }
            events.append("data: " + json.dumps(usage))
        if not (scenario and scenario.no_done):
            events.append("data: [DONE]")
        if events:
            h.write_events(events)
        h.end_stream()
        with self.fake.lock:
            self.fake.completions += 1

    def paced(self, tokens: list[Token], *, last: bool) -> None:
        """Token chunks on a deadline schedule: sleep only when ahead, batch when behind.

        With `last` (vLLM), the final token's chunk carries the finish reason."""
        h, stopping = self.h, self.fake.stopping
        rate = max(float(self.fake.token_rate), 1e-3)
        reason = self.scenario.finish_reason if self.scenario else "stop"
        tag_last = last and self.fake.flavor != "llama.cpp"
        start = time.monotonic()
        i = 0
        while i < len(tokens):
            if stopping.is_set():
                h.drop()
            elapsed = time.monotonic() - start
            due = int(elapsed * rate) + 1
            if due <= i:
                time.sleep(max(0.0, i / rate - elapsed))
                continue
            j = min(len(tokens), due, i + MAX_BATCH)
            events = []
            for k in range(i, j):
                finish = reason if tag_last and k == len(tokens) - 1 else None
                self.finish_sent = self.finish_sent or finish is not None
                events.append("data: " + json.dumps(self.chunk(self.delta(tokens[k]), finish)))
            h.write_events(events)
            i = j

    def whole(self) -> None:
        """`stream: false`: one chat.completion object."""
        message: dict[str, Any] = {"role": "assistant", "content": self.reply.content}
        if self.field in ("reasoning", "reasoning_content", "both"):
            key = "reasoning" if self.field == "both" else self.field
            message[key] = self.reply.thinking
        elif self.field in ("harmony", "bare-harmony"):
            message["content"] = "".join(t for _, t in self.tokens)
        reason = self.scenario.finish_reason if self.scenario else "stop"
        self.h.send_json(
            200,
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": reason}],
                "usage": self.usage(),
            },
        )
        with self.fake.lock:
            self.fake.completions += 1
