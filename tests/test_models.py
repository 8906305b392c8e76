"""Models against the in-process fake: list, ps, show, pull (progress, cancel, resume),
delete, warm-up, unload, GGUF import, and the VRAM fit check."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.engine.errors import (
    ModelImportFailed,
    ModelMissing,
    PullFailed,
    Unauthorized,
)
from safeguard_desktop.engine.models import PullMeter
from safeguard_desktop.engine.progress import Progress, RateMeter
from safeguard_desktop.services.models_service import ModelsService
from safeguard_desktop.settings import Settings
from tests.fake_ollama import FakeOllama

pytest_plugins = ["tests.server_fixtures"]

MODEL = "gpt-oss-safeguard:20b"
T = TypeVar("T")


def run(
    settings: Settings, url: str, call: Callable[[ModelsService], Awaitable[T]], **kwargs: object
) -> T:
    async def go() -> T:
        async with ModelsService(settings, Endpoint(url), **kwargs) as service:  # type: ignore[arg-type]
            return await call(service)

    return asyncio.run(go())


def test_list_ps_and_show(settings: Settings, fake: FakeOllama) -> None:
    installed = run(settings, fake.url, lambda s: s.installed())
    assert [(m.name, m.size, m.quantization) for m in installed] == [
        (MODEL, 13_780_173_839, "MXFP4")
    ]
    assert run(settings, fake.url, lambda s: s.loaded()) == []
    details = run(settings, fake.url, lambda s: s.show(MODEL))
    assert details.has_thinking and details.warnings() == []
    assert details.context_length == 131_072


def test_show_warns_when_a_model_cannot_think(settings: Settings, fake: FakeOllama) -> None:
    fake.add_model("plain:1b", size=1000, capabilities=("completion",))
    details = run(settings, fake.url, lambda s: s.show("plain:1b"))
    assert not details.has_thinking
    assert "no 'thinking' capability" in details.warnings()[0]


def test_pull_reports_progress_to_success(settings: Settings, fake: FakeOllama) -> None:
    fake.pullable = {"tiny:1b": 40_000_000}
    fake.pull_rate = 80_000_000  # half a second
    events: list[Progress] = []

    result = run(settings, fake.url, lambda s: s.pull("tiny:1b", events.append))

    assert result.resumed_from is None and result.total >= 40_000_000
    percents = [e.percent for e in events if e.percent is not None]
    # The small layers after the model blob add a few KB to the total: no visible step back.
    assert all(b >= a - 0.1 for a, b in itertools.pairwise(percents))
    assert len(percents) > 5 and percents[-1] == 100.0
    assert events[-1].phase == "done" and events[-1].status == "success"
    assert any(e.rate for e in events)
    assert "tiny:1b" in [m.name for m in run(settings, fake.url, lambda s: s.installed())]


def test_cancelled_pull_resumes_where_it_stopped(settings: Settings, fake: FakeOllama) -> None:
    fake.pullable = {"tiny:1b": 600_000}
    fake.pull_rate = 6_000_000
    fake.pull_hold_at = 0.3  # held there until the cancel has landed

    async def cancel_midway(service: ModelsService) -> float:
        seen: list[Progress] = []
        task = asyncio.create_task(service.pull("tiny:1b", seen.append))
        while not any((e.percent or 0) > 20 for e in seen):
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return max(e.percent or 0 for e in seen)

    reached = run(settings, fake.url, cancel_midway)
    fake.release_pull()
    assert "tiny:1b" not in [m.name for m in run(settings, fake.url, lambda s: s.installed())]
    fake.pull_rate = 1e9
    events: list[Progress] = []

    result = run(settings, fake.url, lambda s: s.pull("tiny:1b", events.append))

    first = next(e for e in events if e.total)
    assert first.resumed_from is not None and first.resumed_from >= reached * 0.9 > 0
    assert result.resumed_from == first.resumed_from and events[-1].status == "success"


def test_pull_of_an_unknown_model_names_it(settings: Settings, fake: FakeOllama) -> None:
    with pytest.raises(PullFailed, match="nonexistent:7b does not exist"):
        run(settings, fake.url, lambda s: s.pull("nonexistent:7b"))


def test_delete(settings: Settings, fake: FakeOllama) -> None:
    run(settings, fake.url, lambda s: s.delete(MODEL))
    assert fake.models == []
    with pytest.raises(ModelMissing, match="not installed"):
        run(settings, fake.url, lambda s: s.delete(MODEL))


def test_warm_loads_with_keep_alive_and_unload_frees(settings: Settings, fake: FakeOllama) -> None:
    settings.set("keep_alive", "45m")
    run(settings, fake.url, lambda s: s.warm(MODEL))
    loaded = run(settings, fake.url, lambda s: s.loaded())
    assert [m.name for m in loaded] == [MODEL] and loaded[0].size_vram > 0
    body = fake.requests_to("/api/chat")[-1].json
    assert body["messages"] == [] and body["keep_alive"] == "45m"

    run(settings, fake.url, lambda s: s.unload(MODEL))

    assert run(settings, fake.url, lambda s: s.loaded()) == []
    assert fake.requests_to("/api/chat")[-1].json["keep_alive"] == 0


def test_warm_of_a_missing_model(settings: Settings, fake: FakeOllama) -> None:
    with pytest.raises(ModelMissing, match="models pull nope:1b"):
        run(settings, fake.url, lambda s: s.warm("nope:1b"))


def test_token_is_sent_and_required(settings: Settings) -> None:
    with FakeOllama(require_token="s3cret") as server:
        with pytest.raises(Unauthorized):
            run(settings, server.url, lambda s: s.installed())

        async def listed() -> list[str]:
            async with ModelsService(settings, Endpoint(server.url, token="s3cret")) as service:
                return [m.name for m in await service.installed()]

        assert asyncio.run(listed()) == [MODEL]


# -- GGUF import -------------------------------------------------------------------------------
def test_gguf_import_uploads_once_with_the_right_digest(
    settings: Settings, fake: FakeOllama, tmp_path: Path
) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 40_000)  # ~10 MB: several chunks
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    events: list[Progress] = []

    first = run(settings, fake.url, lambda s: s.import_gguf(gguf, "mine:1", events.append))

    assert (first.digest, first.uploaded, first.size) == (digest, True, gguf.stat().st_size)
    assert fake.registry.has_blob(digest)
    create = fake.requests_to("/api/create")[-1].json
    assert create["model"] == "mine:1" and create["files"] == {"model.gguf": digest}
    phases = [e.phase for e in events]
    assert phases.index("hashing") < phases.index("uploading") < phases.index("creating")
    assert phases[-1] == "done"
    assert "mine:1" in fake.models

    second = run(settings, fake.url, lambda s: s.import_gguf(gguf, "again:1"))

    assert not second.uploaded and second.digest == digest
    uploads = [r for r in fake.requests if r.method == "POST" and r.path.startswith("/api/blobs")]
    assert len(uploads) == 1
    assert "again:1" in fake.models


def test_a_non_gguf_file_is_refused_before_any_request(
    settings: Settings, fake: FakeOllama, tmp_path: Path
) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("this is not a model")
    with pytest.raises(ModelImportFailed, match="not a GGUF model file"):
        run(settings, fake.url, lambda s: s.import_gguf(text, "mine:1"))
    assert fake.requests == []
    with pytest.raises(ModelImportFailed, match="does not exist"):
        run(settings, fake.url, lambda s: s.import_gguf(tmp_path / "missing.gguf", "x"))


# -- fit check -------------------------------------------------------------------------------
def fake_nvidia_smi(tmp_path: Path, lines: str) -> str:
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    exe.chmod(0o755)
    return str(exe)


def test_fit_check_against_free_vram(settings: Settings, fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("gpt-oss-safeguard:120b")
    smi = fake_nvidia_smi(tmp_path, "16384, 1024, 15360\\n")

    small = run(settings, fake.url, lambda s: s.fit(MODEL), nvidia_smi=smi)
    big = run(settings, fake.url, lambda s: s.fit("gpt-oss-safeguard:120b"), nvidia_smi=smi)

    assert small.fits is True
    assert big.fits is False
    assert "gpt-oss-safeguard:120b (65.3 GB)" in big.message and "16.1 GB is free" in big.message


def test_fit_is_unknown_without_nvidia_smi(
    settings: Settings, fake: FakeOllama, tmp_path: Path
) -> None:
    fit = run(settings, fake.url, lambda s: s.fit(MODEL), nvidia_smi=str(tmp_path / "absent"))
    assert fit.fits is None and "(13.8 GB)" in fit.message


def test_a_loaded_model_fits(settings: Settings, fake: FakeOllama, tmp_path: Path) -> None:
    run(settings, fake.url, lambda s: s.warm(MODEL))
    smi = fake_nvidia_smi(tmp_path, "16384, 16000, 384\\n")
    fit = run(settings, fake.url, lambda s: s.fit(MODEL), nvidia_smi=smi)
    assert fit.fits is True and "already loaded" in fit.message


# -- progress arithmetic ---------------------------------------------------------------------
def test_pull_meter_detects_resume_and_sums_layers() -> None:
    meter = PullMeter()
    meter.update({"status": "pulling manifest"})
    first = meter.update(
        {"status": "pulling a", "digest": "sha256:a", "total": 1000, "completed": 250}
    )
    assert first.resumed_from == 25.0
    meter.update({"status": "pulling b", "digest": "sha256:b", "total": 1000})
    later = meter.update(
        {"status": "pulling a", "digest": "sha256:a", "total": 1000, "completed": 1000}
    )
    assert (later.completed, later.total, later.percent) == (1000, 2000, 50.0)

    fresh = PullMeter().update({"status": "pulling a", "digest": "sha256:a", "total": 10})
    assert fresh.resumed_from is None


def test_rate_meter_smooths_and_estimates() -> None:
    now = [0.0]
    meter = RateMeter(alpha=0.5, interval=1.0, clock=lambda: now[0])
    meter.update(0)
    now[0] = 1.0
    assert meter.update(100) == 100.0
    now[0] = 2.0
    assert meter.update(400) == 200.0  # half of 300 plus half of 100
    assert meter.eta(400, 1400) == 5.0
