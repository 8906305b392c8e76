"""The session: one door from ui/ and cli/ to the engine and the store.

What a user would notice: the effort a review runs with, the token it sends, which server
is stopped at quit, the warnings beside a verdict, and that no view reaches past services/.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
from pathlib import Path

import httpx
import pytest

from safeguard_desktop import paths
from safeguard_desktop.core.content import from_text
from safeguard_desktop.core.policy import resolve_policy
from safeguard_desktop.services.history_service import HistoryService
from safeguard_desktop.services.session import TOKEN_ENV, Session, resolve_endpoint
from safeguard_desktop.settings import Settings
from safeguard_desktop.store.db import HistoryError
from safeguard_desktop.store.history import History
from tests.fake_ollama import FakeOllama

pytest_plugins = ["tests.server_fixtures"]
PACKAGE = Path(__file__).resolve().parents[1] / "safeguard_desktop"


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
    return found


@pytest.mark.parametrize("layer", ["ui", "cli"])
def test_presenters_reach_the_engine_and_store_only_through_services(layer: str) -> None:
    files = [*sorted((PACKAGE / layer).rglob("*.py"))]
    if layer == "ui":
        files.append(PACKAGE / "app.py")
    offenders = [
        f"{f.relative_to(PACKAGE)} imports {m}"
        for f in files
        for m in imported_modules(f)
        if m.startswith(("safeguard_desktop.engine", "safeguard_desktop.store"))
    ]
    assert offenders == []


def test_no_view_uses_the_raw_ollama_client() -> None:
    uses = [
        f"{f.relative_to(PACKAGE)}:{n}"
        for f in sorted((PACKAGE / "ui").rglob("*.py"))
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
        if "raw." in line
    ]
    assert uses == []


def test_the_token_variable_is_read_in_one_place() -> None:
    readers = [
        str(f.relative_to(PACKAGE))
        for f in sorted(PACKAGE.rglob("*.py"))
        if '"SAFEGUARD_OLLAMA_TOKEN"' in f.read_text(encoding="utf-8")
    ]
    assert readers == ["services/session.py"]


# -- review options ----------------------------------------------------------------------------
POLICY_WITH_EFFORT = """---
id: pets
effort: high
---
# Pets
## Violates (1)
- PT2.a Insults aimed at a pet.
## Does not violate (0)
- PT0.a Anything else.
"""


@pytest.fixture
def session(tmp_path: Path) -> Session:
    settings = Settings(tmp_path / "settings.json")
    settings.set("effort", "low")
    settings.set("moderator", "ana")
    return Session.create(settings, resolve_endpoint(settings, "http://127.0.0.1:9", env={}))


def test_effort_chosen_then_policy_then_setting(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "pets.md"
    path.write_text(POLICY_WITH_EFFORT, encoding="utf-8")
    with_effort = resolve_policy(str(path))
    plain = tmp_path / "plain.md"
    plain.write_text(POLICY_WITH_EFFORT.replace("effort: high\n", ""), encoding="utf-8")
    without = resolve_policy(str(plain))
    assert without.effort is None and with_effort.effort == "high"

    from_settings = session.review_options(source="gui")
    assert from_settings.effort_for(with_effort) == "high"  # front matter overrides the setting
    assert from_settings.effort_for(without) == "low"  # else the setting
    chosen = session.review_options(source="gui", effort="medium")
    assert chosen.effort_for(with_effort) == "medium"  # a choice for this review wins


def test_review_options_take_every_default_from_the_settings(session: Session) -> None:
    session.settings.set("seed", -1)
    session.settings.set("num_ctx", 8192)
    options = session.review_options(source="cli", model="  ")
    assert options.model == "gpt-oss-safeguard:20b" and options.moderator == "ana"
    assert options.seed is None and options.num_ctx == 8192 and options.source == "cli"
    assert session.review_options(source="cli", num_ctx=4096).num_ctx == 4096


def test_the_token_comes_from_the_environment_else_the_keyring(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = Settings(tmp_path / "settings.json")
    seen: list[str] = []

    def keyring(url: str) -> str:
        seen.append(url)
        return "from-keyring"

    monkeypatch.setattr("safeguard_desktop.secrets.get_token", keyring)
    url = "http://10.0.0.7:11434"
    assert resolve_endpoint(settings, url, env={TOKEN_ENV: "from-env"}).token == "from-env"
    assert resolve_endpoint(settings, url, env={}).token == "from-keyring"
    assert seen == [url]


def test_a_bad_host_falls_back_in_the_gui_and_is_refused_in_the_cli(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "settings.json")
    gui = Session.open(settings, host="ftp://nope", with_history=False, env={})
    assert gui.endpoint.url == "http://127.0.0.1:11434"
    assert any("fix the host in Settings" in w for w in gui.warnings)
    with pytest.raises(ValueError):
        Session.open(settings, host="ftp://nope", with_history=False, strict=True, env={})


def test_a_relative_policy_folder_is_inside_the_data_folder(
    tmp_path: Path, session: Session
) -> None:
    paths.set_data_dir(tmp_path / "data")
    try:
        session.settings.set("policy_folder", "mine")
        assert session.policy_folders() == [paths.data_dir() / "mine"]
        session.settings.set("policy_folder", "")
        assert session.policy_folders() == [paths.user_policies_dir()]
    finally:
        paths.set_data_dir(None)


# -- one review, one outcome -------------------------------------------------------------------
def run_review(session: Session, text: str, policy: str = "harassment"):
    async def go():
        try:
            options = session.review_options(source="cli")
            return await session.reviewer(options).review(resolve_policy(policy), from_text(text))
        finally:
            await session.aclose_client()

    return asyncio.run(go())


def test_a_review_carries_its_highlights_and_warnings(tmp_path: Path) -> None:
    with FakeOllama(token_rate=50_000, models=("qwen3:8b",)) as fake:
        settings = Settings(tmp_path / "settings.json")
        settings.set("model", "qwen3:8b")
        session = Session.create(settings, resolve_endpoint(settings, fake.url, env={}))
        result = run_review(session, "you idiot")
    assert result.status == "done" and result.verdict is not None
    assert result.highlights.reasoning, "the reasoning's decision phrases are marked"
    assert result.warnings and "qwen3:8b is not a gpt-oss-safeguard model" in result.warnings[0]
    assert result.to_json()["warnings"] == result.warnings


def test_a_history_that_fails_keeps_the_verdict_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise HistoryError("full", "The disk holding the history is full.")

    with FakeOllama(token_rate=50_000) as fake, History.open(tmp_path / "h.db") as store:
        monkeypatch.setattr(store, "finish_review", full)
        settings = Settings(tmp_path / "settings.json")
        session = Session.create(
            settings, resolve_endpoint(settings, fake.url, env={}), HistoryService(store)
        )
        result = run_review(session, "you idiot")
    assert result.verdict is not None and result.verdict.label == "violation"
    assert result.reasoning and not result.saved
    assert result.warnings[-1].startswith("This review is not saved in the history:")
    assert "full" in result.warnings[-1]


# -- the managed server ------------------------------------------------------------------------
def test_startup_starts_a_server_and_quit_stops_only_that_one(settings: Settings) -> None:
    session = Session.open(settings, with_history=False)
    lifecycle = session.lifecycle

    async def go() -> tuple[str, bool, str]:
        outcome = await lifecycle.startup()
        assert outcome.result is not None
        running = httpx.get(outcome.result.url).text
        await lifecycle.shutdown()
        return outcome.action, lifecycle.started_here(outcome.result.url), running

    action, still_ours, running = asyncio.run(go())
    assert action == "started" and running == "Ollama is running" and not still_ours
    with pytest.raises(httpx.ConnectError):
        httpx.get(session.endpoint.url)


def test_startup_attaches_to_a_running_server_and_leaves_it_at_quit(
    settings: Settings, fake: FakeOllama
) -> None:
    settings.set("host", fake.url)
    session = Session.open(settings, with_history=False)

    async def go() -> str:
        outcome = await session.lifecycle.startup()
        await session.lifecycle.shutdown()
        return outcome.action

    assert asyncio.run(go()) == "attached"
    assert httpx.get(fake.url).text == "Ollama is running"  # not ours: still running


def test_without_manage_server_startup_does_nothing(settings: Settings) -> None:
    settings.set("manage_server", False)
    session = Session.open(settings, with_history=False)
    outcome = asyncio.run(session.lifecycle.startup())
    assert dataclasses.astuple(outcome) == ("none", None, None)


def test_settings_saved_mid_review_do_not_cut_the_review(tmp_path: Path) -> None:
    """A new address applies to the next review; the running one finishes on its server."""
    with (
        FakeOllama(token_rate=400) as slow,
        FakeOllama(token_rate=50_000) as other,
        History.open(tmp_path / "h.db") as store,
    ):
        settings = Settings(tmp_path / "settings.json")
        settings.set("host", slow.url)
        session = Session.create(
            settings, resolve_endpoint(settings, env={}), HistoryService(store)
        )

        async def go():
            started = asyncio.Event()

            def on_delta(kind: str, text: str) -> None:
                started.set()

            reviewer = session.reviewer(session.review_options(source="gui"))
            task = asyncio.create_task(
                reviewer.review(
                    resolve_policy("harassment"), from_text("you idiot"), on_delta=on_delta
                )
            )
            await started.wait()
            settings.set("host", other.url)
            await session.apply_settings()
            try:
                return await task, session.endpoint.url
            finally:
                await session.aclose_client()

        result, now = asyncio.run(go())
    assert now == other.url
    assert result.status == "done" and result.verdict is not None
    assert result.request is not None and result.saved


def test_a_stored_review_shows_the_warnings_it_was_shown_with(tmp_path: Path) -> None:
    from safeguard_desktop.ui.stored_review import stored_verdict, stored_warnings

    with (
        FakeOllama(token_rate=50_000, models=("qwen3:8b",)) as fake,
        History.open(tmp_path / "h.db") as store,
    ):
        settings = Settings(tmp_path / "settings.json")
        settings.set("model", "qwen3:8b")
        session = Session.create(
            settings, resolve_endpoint(settings, fake.url, env={}), HistoryService(store)
        )
        result = run_review(session, "you idiot")
        assert result.review_id is not None
        review = store.get(result.review_id)
    assert review is not None
    verdict = stored_verdict(review)
    assert verdict is not None
    policy = resolve_policy("harassment")
    assert stored_warnings(review, policy, verdict) == result.warnings
    assert stored_warnings(review, None, verdict)[0] == result.warnings[0]  # the model's


def test_a_malformed_ollama_host_is_a_sentence_not_a_crash(tmp_path: Path) -> None:
    """The ollama library parses OLLAMA_HOST when imported; port 99999 used to crash."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OLLAMA_HOST": "127.0.0.1:99999"}
    args = [sys.executable, "-m", "safeguard_desktop", "--data-dir", str(tmp_path / "d")]
    status = subprocess.run(
        [*args, "server", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PACKAGE.parent,
    )
    assert status.returncode == 2, status.stderr
    assert status.stderr.strip() == (
        "safeguard-desktop: Host '127.0.0.1:99999' is not a valid address (expected host:port)."
    )
    listing = subprocess.run(
        [*args, "history", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PACKAGE.parent,
    )
    assert listing.returncode == 0 and "No reviews match." in listing.stdout


def test_a_host_with_undecodable_bytes_is_refused_with_a_sentence(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "settings.json")
    with pytest.raises(ValueError, match="characters an address cannot have"):
        Session.open(settings, host="127.0.0.1\udcff:11434", with_history=False, strict=True)


def test_a_pipe_is_not_read_as_a_gguf_file(tmp_path: Path) -> None:
    import os

    from safeguard_desktop.engine.errors import ModelImportFailed
    from safeguard_desktop.engine.gguf import check_gguf

    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    with pytest.raises(ModelImportFailed, match="not a regular file"):
        check_gguf(fifo)  # would block forever reading the pipe
