"""A faithful fake OpenAI-compatible server (vLLM, llama-server flavors) for the tests."""

from __future__ import annotations

from .server import FakeOpenAI, RecordedRequest, Scenario

__all__ = ["FakeOpenAI", "RecordedRequest", "Scenario"]
