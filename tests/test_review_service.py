"""The review workflow shared by GUI and CLI: provenance and what is kept when things break."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from safeguard_desktop.core.content import from_text
from safeguard_desktop.core.policy import resolve_policy
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.services.history_service import HistoryService
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings
from safeguard_desktop.store.history import History
from tests.fake_ollama import FakeOllama, Scenario


def review(fake: FakeOllama, history: History, text: str, **kwargs: object):
    settings = Settings(history.path.parent / "settings.json")  # the registry's defaults
    settings.set("moderator", "ana")
    session = Session.create(settings, Endpoint(fake.url), HistoryService(history))

    async def go():
        try:
            reviewer = session.reviewer(session.review_options(source="cli"))
            return await reviewer.review(resolve_policy("harassment"), from_text(text), **kwargs)  # type: ignore[arg-type]
        finally:
            await session.aclose_client()

    return asyncio.run(go())


def test_provenance_is_recorded(tmp_path: Path) -> None:
    with FakeOllama(token_rate=20000) as fake, History.open(tmp_path / "h.db") as history:
        result = review(fake, history, "you idiot")
        stored = history.get(result.review_id)
        assert stored is not None
        policy_text = history.policy_text(stored.policy_sha256)
    assert stored is not None and stored.status == "done"
    assert stored.model_digest and len(stored.model_digest) == 64  # /api/tags: bare hex
    assert stored.ollama_version == "0.12.10" and stored.moderator == "ana"
    assert stored.num_ctx >= 8192 and stored.seed == 42 and stored.effort == "medium"
    assert stored.policy_sha256 == resolve_policy("harassment").sha256
    assert policy_text == resolve_policy("harassment").text
    assert stored.verdict_label == "violation" and stored.stats and stored.stats["eval_count"]


def test_a_bug_in_a_callback_still_records_the_review(tmp_path: Path) -> None:
    def explode(kind: str, text: str) -> None:
        raise RuntimeError("display went away")

    with FakeOllama(token_rate=20000) as fake, History.open(tmp_path / "h.db") as history:
        with pytest.raises(RuntimeError, match="display went away"):
            review(fake, history, "hello", on_delta=explode)
        rows = history.list()
        stored = history.get(rows[0].id)
    assert len(rows) == 1 and rows[0].status == "failed"
    assert stored is not None and stored.error and "internal error" in stored.error


def test_server_error_keeps_partial_reasoning(tmp_path: Path) -> None:
    with FakeOllama(token_rate=20000) as fake, History.open(tmp_path / "h.db") as history:
        fake.script(Scenario(thinking="alpha beta gamma delta epsilon", error_after=4))
        result = review(fake, history, "hello")
        stored = history.get(result.review_id)
    assert result.status == "failed" and result.reasoning
    assert stored is not None and stored.status == "failed"
    assert stored.reasoning == result.reasoning and "error" in (stored.error or "")
