"""POST /api/chat and /api/generate: load/unload, scripted or default replies, paced streams."""

from __future__ import annotations

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


def created_at() -> str:
    """UTC timestamp in the shape Ollama streams use."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def handle_chat(h: Handler, body: dict[str, Any]) -> None:
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        h.send_error_json(400, "messages must be a list")
        return
    _handle(h, body, "chat", [m for m in messages if isinstance(m, dict)])


def handle_generate(h: Handler, body: dict[str, Any]) -> None:
    prompt = body.get("prompt") or ""
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": str(body["system"])})
    if prompt:
        messages.append({"role": "user", "content": str(prompt)})
    _handle(h, body, "generate", messages if prompt else [])


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
    load_start = time.monotonic()
    fresh = fake.load(entry, body.get("keep_alive"), (options or {}).get("num_ctx"))
    if fresh and fake.load_seconds > 0 and fake.stopping.wait(fake.load_seconds):
        h.drop()
    load_ns = int((time.monotonic() - load_start) * 1e9)
    delay = scenario.first_token_delay if scenario is not None else 0.0
    if delay > 0 and fake.stopping.wait(delay):
        h.drop()

    if scenario is not None:
        reply = Reply(thinking=scenario.thinking, content=scenario.content)
    else:
        reply = default_reply(
            messages, reasoning_tokens=fake.reasoning_tokens, as_json=bool(body.get("format"))
        )
    think = body.get("think")
    with_thinking = think is None or bool(think) or isinstance(think, str)
    tokens = [("thinking", t) for t in tokenize(reply.thinking)] if with_thinking else []
    tokens += [("content", t) for t in tokenize(reply.content)]
    error_after = scenario.error_after if scenario is not None else None
    drop_after = scenario.drop_after if scenario is not None else None
    failure: str | None = None
    cut = len(tokens)
    if drop_after is not None and (error_after is None or drop_after <= error_after):
        failure, cut = "drop", drop_after
    elif error_after is not None:
        failure, cut = "error", error_after
    limit = min(len(tokens), max(0, cut))
    rate = max(float(fake.token_rate), 1e-3)
    prompt_count = sum(count_tokens(str(m.get("content") or "")) for m in messages)

    stream = body.get("stream") is not False
    if stream:
        h.start_stream()
        _paced(h, kind, name, tokens[:limit], rate)
    elif limit and fake.stopping.wait(limit / rate):
        h.drop()
    if failure == "drop":
        h.drop()
    if failure == "error" and scenario is not None:
        if stream:
            h.write_lines([{"error": scenario.error_message}])
            h.end_stream()
        else:
            h.send_error_json(500, scenario.error_message)
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
