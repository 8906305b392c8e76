"""POST /api/chat and /api/generate: load/unload, scripted or default replies, paced streams."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from .handler import Handler
from .registry import ModelEntry
from .responder import Reply, count_tokens, default_reply, tokenize
from .routes import model_name
from .server import Scenario, parse_keep_alive
from .slots import MAX_QUEUE_ERROR, QueueFull, Stopped

MAX_BATCH = 256
NUM_KEEP = 4  # tokens a runner keeps at the start when it cuts a prompt (Ollama's numKeep)
THINK_LEVELS = ("high", "medium", "low")
# Models whose chat template is gpt-oss's "harmony" format (Ollama: shouldUseHarmony).
HARMONY_FAMILIES = frozenset({"gptoss"})
_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_GO_ESCAPES.update({"\v": "\\v", "\\": "\\\\", '"': '\\"'})


def go_quote(text: str) -> str:
    """Go's %q (strconv.Quote) of a string, as Ollama's error messages spell values."""
    out = []
    for ch in text:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def think_error(value: Any) -> str | None:
    """The 400 message Ollama's request binding gives for a bad `think` (api.ThinkValue).

    Ollama 0.12.10, api/types.go ThinkValue.UnmarshalJSON: booleans and "high"/"medium"/"low"
    bind; any other string or type fails ShouldBindJSON and ChatHandler/GenerateHandler answer
    400 {"error": err.Error()} before even looking the model up. null means "not set".
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        if value in THINK_LEVELS:
            return None
        return (
            f"invalid think value: {go_quote(value)} "
            '(must be "high", "medium", "low", true, or false)'
        )
    return 'think must be a boolean or string ("high", "medium", "low", true, or false)'


def parse_format(value: Any) -> tuple[str | dict[str, Any] | None, str | None]:
    """(format, error): "json", a schema object or None (unset), else Ollama's error message.

    Ollama 0.12.10, llm/server.go Completion: null and "" mean unset, "json" is JSON mode,
    anything starting with "{" is a JSON schema, the rest fails with this message (the raw
    JSON of the field, %q-quoted).
    """
    if value is None or value == "":
        return None, None
    if value == "json" or isinstance(value, dict):
        return value, None
    raw = json.dumps(value, separators=(",", ":"))
    return None, (f'invalid format: {go_quote(raw)}; expected "json" or a valid JSON Schema object')


def created_at() -> str:
    """UTC timestamp in the shape Ollama streams use."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def handle_chat(h: Handler, body: dict[str, Any]) -> None:
    bad_think = think_error(body.get("think"))
    if bad_think is not None:
        h.send_error_json(400, bad_think)
        return
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        h.send_error_json(400, "messages must be a list")
        return
    _handle(h, body, "chat", [m for m in messages if isinstance(m, dict)])


def handle_generate(h: Handler, body: dict[str, Any]) -> None:
    bad_think = think_error(body.get("think"))
    if bad_think is not None:
        h.send_error_json(400, bad_think)
        return
    prompt = body.get("prompt") or ""
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": str(body["system"])})
    if prompt:
        messages.append({"role": "user", "content": str(prompt)})
    _handle(h, body, "generate", messages if prompt else [])


def context_window(fake: Any, entry: ModelEntry, num_ctx: Any) -> int:
    """The window a request gets: its num_ctx (else the server default), at most the model's
    trained context (Ollama: "requested context size too large for model" -> capped)."""
    ctx = num_ctx if isinstance(num_ctx, int) and num_ctx > 0 else fake.context_length
    return min(ctx, entry.context_length) if entry.context_length else ctx


def cut_from_front(messages: list[dict[str, Any]], window: int) -> list[dict[str, Any]]:
    """What the model sees of a prompt longer than its window, as Ollama's runner cuts it.

    Ollama keeps every message (the system one too) in the rendered prompt, then the runner
    keeps the first NUM_KEEP tokens and the last `window - NUM_KEEP`: the start of the first
    message, the policy, is what goes. prompt_eval_count is then `window`.
    """
    counts = [count_tokens(str(m.get("content") or "")) for m in messages]
    drop = sum(counts) - window
    if drop <= 0:
        return messages
    out = []
    kept_head = False
    for message, count in zip(messages, counts, strict=True):
        text = str(message.get("content") or "")
        if drop > 0:
            head = "" if kept_head else text[: NUM_KEEP * 4]
            kept_head = True
            cut = min(count, drop)
            drop -= cut
            text = head + text[len(head) + cut * 4 :]
        out.append({**message, "content": text})
    return out


def _line(kind: str, model: str, field: str, text: str, done: bool) -> dict[str, Any]:
    if kind == "chat":
        message = {"role": "assistant", "content": "" if field == "thinking" else text}
        if field == "thinking":
            message["thinking"] = text
        return {"model": model, "created_at": created_at(), "message": message, "done": done}
    line: dict[str, Any] = {"model": model, "created_at": created_at()}
    line["response"] = "" if field == "thinking" else text
    if field == "thinking":
        line["thinking"] = text
    line["done"] = done
    return line


def _handle(h: Handler, body: dict[str, Any], kind: str, messages: list[dict[str, Any]]) -> None:
    fake = h.fake
    name = model_name(body)
    if not name:
        h.send_error_json(400, "model is required")
        return
    entry = fake.registry.get(name)
    if entry is None:
        h.send_error_json(404, f'model "{name}" not found, try pulling it first')
        return
    think = body.get("think")
    if think not in (None, False) and "thinking" not in entry.capabilities:
        # Any valid level counts as "on" (ThinkValue.Bool); checked before loading.
        h.send_error_json(400, f'"{name}" does not support thinking')
        return
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    num_ctx = options.get("num_ctx") if options else None
    keep_alive = body.get("keep_alive")
    unload_after = parse_keep_alive(keep_alive, fake.keep_alive) == 0
    if not messages:
        if unload_after:
            fake.unload(entry.name)
        else:
            fresh = fake.load(entry, keep_alive, num_ctx)
            if fresh and fake.load_seconds > 0 and fake.stopping.wait(fake.load_seconds):
                h.drop()
        final = _line(kind, name, "content", "", True)
        final["done_reason"] = "unload" if unload_after else "load"
        h.send_json(200, final)
        return
    if isinstance(think, str) and entry.family not in HARMONY_FAMILIES:
        # routes.go: levels are only for harmony (gpt-oss) models; checked after the prompt.
        h.send_error_json(400, f"think value {go_quote(think)} is not supported for this model")
        return

    scenario = fake.next_scenario(entry.name)
    if scenario is not None and scenario.status is not None:
        h.send_error_json(scenario.status, scenario.error_message)
        return
    if scenario is not None and scenario.hang:
        fake.stopping.wait()
        h.drop()
    started = time.monotonic()
    try:
        fake.slots.acquire()
    except QueueFull:
        h.send_error_json(503, MAX_QUEUE_ERROR)
        return
    except Stopped:
        h.drop()
    try:
        _run(h, body, kind, name, entry, messages, scenario, started)
    finally:
        fake.slots.release()
        if unload_after:
            fake.unload(entry.name)


def _run(
    h: Handler,
    body: dict[str, Any],
    kind: str,
    name: str,
    entry: ModelEntry,
    messages: list[dict[str, Any]],
    scenario: Scenario | None,
    started: float,
) -> None:
    fake = h.fake
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    window = context_window(fake, entry, (options or {}).get("num_ctx"))
    messages = cut_from_front(messages, window)
    load_start = time.monotonic()
    fresh = fake.load(entry, body.get("keep_alive"), window)
    if fresh and fake.load_seconds > 0 and fake.stopping.wait(fake.load_seconds):
        h.drop()
    load_ns = int((time.monotonic() - load_start) * 1e9)
    delay = scenario.first_token_delay if scenario is not None else 0.0
    if delay > 0 and fake.stopping.wait(delay):
        h.drop()

    answer_format, format_error = parse_format(body.get("format"))
    if scenario is not None:
        reply = Reply(thinking=scenario.thinking, content=scenario.content)
    else:
        reply = default_reply(
            messages, reasoning_tokens=fake.reasoning_tokens, answer_format=answer_format
        )
    think = body.get("think")
    if "thinking" not in entry.capabilities:
        with_thinking = False
    elif entry.family in HARMONY_FAMILIES:
        # gpt-oss always reasons: true/false are ignored, only the level changes ("the trace
        # cannot be fully disabled", docs/capabilities/thinking.mdx).
        with_thinking = True
    else:
        with_thinking = think is None or bool(think)
    tokens = [("thinking", t) for t in tokenize(reply.thinking)] if with_thinking else []
    tokens += [("content", t) for t in tokenize(reply.content)]
    error_after = scenario.error_after if scenario is not None else None
    drop_after = scenario.drop_after if scenario is not None else None
    failure: str | None = None
    error_message = scenario.error_message if scenario is not None else ""
    cut = len(tokens)
    if drop_after is not None and (error_after is None or drop_after <= error_after):
        failure, cut = "drop", drop_after
    elif error_after is not None:
        failure, cut = "error", error_after
    elif format_error is not None:
        # Thinking streams unconstrained; the format is applied (and fails) when the answer
        # starts, so the error follows the reasoning (routes.go structured outputs restart).
        failure, cut, error_message = "error", sum(f == "thinking" for f, _ in tokens), format_error
    limit = min(len(tokens), max(0, cut))
    rate = max(float(fake.token_rate), 1e-3)
    prompt_count = min(window, sum(count_tokens(str(m.get("content") or "")) for m in messages))

    stream = body.get("stream") is not False
    # Ollama writes the 200 status with its first line: a failure before any line is a plain
    # HTTP error (streamResponse: 500 JSON) or a connection closed without a response.
    streaming = stream and (limit > 0 or failure is None)
    stall_after = scenario.stall_after if scenario is not None else None
    if stream and stall_after is not None:
        h.start_stream()
        _paced(h, kind, name, tokens[:stall_after], rate)
        fake.stopping.wait()
        h.drop()
    if streaming:
        h.start_stream()
        _paced(h, kind, name, tokens[:limit], rate)
    elif limit and fake.stopping.wait(limit / rate):
        h.drop()
    if failure == "drop":
        h.drop()
    if failure == "error":
        if streaming:
            h.write_lines([{"error": error_message}])
            h.end_stream()
        else:
            h.send_error_json(500, error_message)
        return

    eval_ns = int(len(tokens) / rate * 1e9)
    prompt_ns = int(delay * 1e9) if delay > 0 else int(prompt_count / (rate * 10) * 1e9)
    wall_ns = int((time.monotonic() - started) * 1e9)
    final = _line(kind, name, "content", "", True)
    if not stream:
        if kind == "chat":
            final["message"]["content"] = reply.content
            if with_thinking and reply.thinking:
                final["message"]["thinking"] = reply.thinking
        else:
            final["response"] = reply.content
            if with_thinking and reply.thinking:
                final["thinking"] = reply.thinking
    final.update(
        done_reason=scenario.done_reason if scenario is not None else "stop",
        total_duration=max(wall_ns, load_ns + prompt_ns + eval_ns),
        load_duration=load_ns,
        prompt_eval_count=prompt_count,
        prompt_eval_duration=prompt_ns,
        eval_count=len(tokens),
        eval_duration=eval_ns,
    )
    if stream:
        h.write_lines([final])
        h.end_stream()
    else:
        h.send_json(200, final)


def _paced(h: Handler, kind: str, name: str, tokens: list[tuple[str, str]], rate: float) -> None:
    """Write token lines on a deadline schedule: sleep only when ahead, batch when behind."""
    stopping = h.fake.stopping
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
        h.write_lines([_line(kind, name, f, t, False) for f, t in tokens[i:j]])
        i = j
