"""POST /api/pull: paced, resumable progress for the models in FakeOllama.pullable.

Like real Ollama, bytes already fetched for a layer survive a cancelled pull, so a retry
starts where the previous attempt stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from .handler import Handler
from .registry import Layer, layers_for, make_entry, normalize
from .routes import model_name

MANIFEST_ERROR = "pull model manifest: file does not exist"
Emit = Callable[[dict[str, Any]], None]


class _Clock:
    """Deadline schedule for a byte rate: sleep only when ahead of it."""

    def __init__(self, h: Handler, rate: float) -> None:
        self.h = h
        self.rate = max(rate, 1.0)
        self.start = time.monotonic()
        self.sent = 0

    def advance(self, n: int) -> None:
        self.sent += n
        ahead = self.start + self.sent / self.rate - time.monotonic()
        if ahead > 0 and self.h.fake.stopping.wait(ahead):
            self.h.drop()
        if self.h.fake.stopping.is_set():
            self.h.drop()


def handle_pull(h: Handler, body: dict[str, Any]) -> None:
    fake = h.fake
    requested = model_name(body)
    if not requested:
        h.send_error_json(400, "model is required")
        return
    name = normalize(requested)
    stream = body.get("stream") is not False
    sizes = {normalize(k): int(v) for k, v in fake.pullable.items()}

    def emit(obj: dict[str, Any]) -> None:
        if stream:
            h.write_lines([obj])

    if stream:
        h.start_stream()
    emit({"status": "pulling manifest"})
    if name not in sizes:
        if stream:
            h.write_lines([{"error": MANIFEST_ERROR}])
            h.end_stream()
        else:
            h.send_error_json(500, MANIFEST_ERROR)
        return
    clock = _Clock(h, fake.pull_rate)
    for layer in layers_for(name, sizes[name]):
        _pull_layer(h, layer, emit, clock)
    emit({"status": "verifying sha256 digest"})
    emit({"status": "writing manifest"})
    fake.registry.add(make_entry(name, size=sizes[name]))
    fake.registry.touch(name)
    if stream:
        emit({"status": "success"})
        h.end_stream()
    else:
        h.send_json(200, {"status": "success"})


def _pull_layer(h: Handler, layer: Layer, emit: Emit, clock: _Clock) -> None:
    registry = h.fake.registry
    total = layer.size
    done = min(registry.completed(layer.digest), total)
    line: dict[str, Any] = {
        "status": f"pulling {layer.digest[7:19]}",
        "digest": layer.digest,
        "total": total,
    }
    if done:
        line["completed"] = done
    emit(line)
    step = max(1, math.ceil(total / max(1, h.fake.pull_steps)))
    step = max(1, min(step, int(clock.rate * 0.05)))
    fake = h.fake
    while done < total:
        n = min(step, total - done)
        clock.advance(n)
        done += n
        registry.progress(layer.digest, done)
        emit({**line, "completed": done})
        hold = fake.pull_hold_at
        if hold is not None and done < total and done >= hold * total:
            while not fake.pull_released.wait(0.1):
                if fake.stopping.is_set():
                    h.drop()
                h.write_lines([{**line, "completed": done}])  # raises ClientGone once it left
            clock.start = time.monotonic() - clock.sent / clock.rate  # no catch-up burst
    registry.add_blob(layer.digest, total)
