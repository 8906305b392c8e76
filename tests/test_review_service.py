"""The review workflow shared by GUI and CLI: provenance and what is kept when things break."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest

from safeguard_desktop.core.content import from_text
from safeguard_desktop.core.policy import resolve_policy
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.services.history_service import HistoryService
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings
from safeguard_desktop.store.history import History
from tests.fake_ollama import FakeOllama, Scenario, tokenize


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


def test_a_stalled_stream_is_in_the_history_to_its_last_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a kill -9 leaves: the history holds the whole stream so far, its last tokens too
    (written when the next write is due, though no token follows them)."""
    thinking = " ".join(f"Step {i} weighs the insult against HB2.a." for i in range(400))
    streamed = "".join(tokenize(thinking)[:300])
    written = threading.Event()
    real = History.save_progress

    def save_progress(self: History, review_id: int, *, reasoning: str, answer: str) -> None:
        real(self, review_id, reasoning=reasoning, answer=answer)
        if reasoning == streamed:
            written.set()

    monkeypatch.setattr(History, "save_progress", save_progress)
    path = tmp_path / "h.db"
    with FakeOllama(token_rate=20000) as fake, History.open(path) as history:
        fake.script(Scenario(thinking=thinking, content="1", stall_after=300))
        session = Session.create(
            Settings(tmp_path / "settings.json"), Endpoint(fake.url), HistoryService(history)
        )

        async def go() -> tuple[bool, object]:
            reviewer = session.reviewer(session.review_options(source="cli"))
            task = asyncio.ensure_future(
                reviewer.review(resolve_policy("harassment"), from_text("you idiot"))
            )
            try:
                landed = await asyncio.to_thread(written.wait, 30)
                with History.open(path) as other:  # as the next start reads it after a kill
                    return landed, other.get(other.list()[0].id)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await session.aclose_client()

        landed, stored = asyncio.run(go())
    assert landed
    assert stored is not None and stored.status == "running"  # type: ignore[attr-defined]
    assert stored.reasoning == streamed  # type: ignore[attr-defined]


def test_reviews_in_a_row_reuse_one_connection(tmp_path: Path) -> None:
    """The stream is read to its end before the verdict is handed out, so the next review
    goes over the same kept-alive connection (a new TCP connection per review cost a queue
    or an evaluation several percent of its throughput)."""
    settings = Settings(tmp_path / "settings.json")
    settings.set("moderator", "ana")
    with History.open(tmp_path / "h.sqlite3") as history, FakeOllama(token_rate=50_000) as fake:
        session = Session.create(settings, Endpoint(fake.url), HistoryService(history))

        async def go() -> list[str]:
            try:
                reviewer = session.reviewer(session.review_options(source="cli"))
                await reviewer.server_version()  # provenance: over the plain HTTP client
                before = fake.connections_accepted
                labels = []
                for text in ("you idiot", "nice photo", "you idiot again", "see you"):
                    result = await reviewer.review(resolve_policy("harassment"), from_text(text))
                    labels.append(result.status)
                assert fake.connections_accepted - before <= 1  # one for the chat client
                return labels
            finally:
                await session.aclose_client()

        assert asyncio.run(go()) == ["done"] * 4


def test_a_cancel_after_the_whole_answer_came_keeps_the_verdict_recorded(tmp_path: Path) -> None:
    # Escape pressed between the end of the stream and the verdict on screen: the answer is
    # whole, so it is recorded as the model gave it (not "cancelled", not left "running").
    path = tmp_path / "h.db"
    with FakeOllama(token_rate=20000) as fake, History.open(path) as history:
        fake.script(Scenario(thinking="It calls them an idiot: HB2.a applies.", content="1"))
        session = Session.create(
            Settings(tmp_path / "settings.json"), Endpoint(fake.url), HistoryService(history)
        )

        async def go() -> bool:
            reviewer = session.reviewer(session.review_options(source="cli"))
            task: asyncio.Task[object] | None = None

            def answered() -> None:
                assert task is not None
                task.cancel()

            task = asyncio.ensure_future(
                reviewer.review(
                    resolve_policy("harassment"), from_text("you idiot"), on_answered=answered
                )
            )
            try:
                await task
            except asyncio.CancelledError:
                return True
            finally:
                await session.aclose_client()
            return False

        assert asyncio.run(go())  # the caller still learns it was cancelled
        stored = history.get(history.list()[0].id)
    assert stored.status == "done"
    assert stored.verdict is not None and stored.verdict["label"] == "violation"
    assert "HB2.a" in stored.reasoning
