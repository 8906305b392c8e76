"""A faithful fake Ollama server (and `ollama` CLI) for the test suite; stdlib only."""

from __future__ import annotations

from .responder import TRIGGERS, default_reply, tokenize
from .server import FakeOllama, LoadedModel, RecordedRequest, Scenario
from .standalone import parse_ollama_host

__all__ = [
    "TRIGGERS",
    "FakeOllama",
    "LoadedModel",
    "RecordedRequest",
    "Scenario",
    "default_reply",
    "parse_ollama_host",
    "tokenize",
]
