"""Routing, auth, discovery and health of the fake (chat completions: chat.py)."""

from __future__ import annotations

import json
from typing import Any

from .handler import Handler, now
from .server import RecordedRequest

PUBLIC_LLAMA = frozenset({"/health", "/v1/health", "/models", "/v1/models"})


def route(h: Handler) -> None:
    """Record the request, check the token, then answer it."""
    from .chat import handle_chat

    fake = h.fake
    path, method = h.path_only, h.command
    raw = h.read_body()
    parsed: Any = None
    if raw.strip():
        try:
            parsed = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            parsed = None
    headers = {k.lower(): v for k, v in h.headers.items()}
    fake.record(RecordedRequest(method, path, parsed, headers))

    if not authorized(h, path, headers):
        if fake.flavor == "vllm":
            h.send_json(401, {"error": "Unauthorized"})  # vLLM's --api-key middleware
        else:
            h.send_error_object(401, "Invalid API Key", type="authentication_error")
        return
    if method in ("GET", "HEAD") and path in ("/health", "/v1/health"):
        health(h)
    elif method in ("GET", "HEAD") and path == "/version" and fake.version is not None:
        h.send_json(200, {"version": fake.version})
    elif method in ("GET", "HEAD") and (
        path == "/v1/models" or (path == "/models" and fake.flavor == "llama.cpp")
    ):
        h.send_json(200, {"object": "list", "data": [model_entry(h, m) for m in fake.models]})
    elif method == "POST" and path == "/v1/chat/completions":
        if not isinstance(parsed, dict):
            h.send_error_object(400, "Expecting value: the body is not a JSON object")
            return
        handle_chat(h, parsed)
    else:
        unknown_route(h)


def authorized(h: Handler, path: str, headers: dict[str, str]) -> bool:
    token = h.fake.require_token
    if token is None:
        return True
    # llama-server leaves health and the model list open; vLLM checks the key on /v1 only
    llama = h.fake.flavor == "llama.cpp"
    protected = path not in PUBLIC_LLAMA if llama else path.startswith("/v1")
    return not protected or headers.get("authorization", "") == f"Bearer {token}"


def unknown_route(h: Handler) -> None:
    flavor = h.fake.flavor
    if flavor == "vllm":
        h.send_json(404, {"detail": "Not Found"})  # FastAPI
    elif flavor == "llama.cpp":
        h.send_error_object(404, "File Not Found", type="not_found_error")
    else:  # LM Studio answers an unknown route with 200 and an error string
        h.send_json(200, {"error": f"Unexpected endpoint or method. ({h.command} {h.path_only})"})


def health(h: Handler) -> None:
    fake = h.fake
    if fake.flavor == "bare":
        unknown_route(h)
    elif fake.loading:
        h.send_error_object(503, "Loading model", type="unavailable_error")
    elif fake.flavor == "llama.cpp":
        h.send_json(200, {"status": "ok"})
    else:
        h.send_bytes(200, b"", None, None)  # vLLM: 200, empty body


def model_entry(h: Handler, name: str) -> dict[str, Any]:
    fake = h.fake
    entry: dict[str, Any] = {"id": name, "object": "model", "created": now()}
    if fake.flavor == "vllm":
        entry.update(owned_by="vllm", root=name, parent=None, max_model_len=fake.max_model_len)
        entry["permission"] = []
    elif fake.flavor == "llama.cpp":
        entry.update(
            owned_by="llamacpp",
            meta={"vocab_type": 2, "n_vocab": 201088, "n_ctx_train": fake.max_model_len},
        )
    else:
        entry["owned_by"] = "organization_owner"
    return entry
