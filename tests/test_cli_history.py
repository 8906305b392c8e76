"""History through the CLI: find, decide, export, purge, backup; a killed review survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main
from safeguard_desktop.services.escalation import render_html
from tests.fake_ollama import FakeOllama, Scenario

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(token_rate=20000) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_paths() -> Iterator[None]:
    yield
    paths.set_data_dir(None)


def cli(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(data), *args])
    out, err = capsys.readouterr()
    return code, out, err


def classify(capsys, data: Path, fake: FakeOllama, text: str) -> int:
    code, out, err = cli(
        capsys,
        data,
        "classify",
        "--policy",
        "harassment",
        "--text",
        text,
        "--host",
        fake.url,
        "--json",
    )
    assert code == 0, err
    return int(json.loads(out)["review_id"])


def test_find_decide_show(fake, capsys, tmp_path) -> None:
    data = tmp_path / "d"
    first = classify(capsys, data, fake, "the weather in lisbon is lovely")
    second = classify(capsys, data, fake, "you are a worthless idiot")
    code, out, _ = cli(capsys, data, "history", "search", "lisbon", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["id"] for r in rows] == [first]
    assert rows[0]["verdict"]["label"] == "safe" and rows[0]["status"] == "done"
    assert {"id", "created_at", "status", "verdict"} <= set(rows[0])
    code, out, _ = cli(capsys, data, "history", "list", "--json")
    assert [r["id"] for r in json.loads(out)] == [second, first]

    code, _, err = cli(capsys, data, "history", "decide", str(second), "--override", "safe")
    assert code == 2 and "reason" in err
    code, _, _ = cli(
        capsys,
        data,
        "history",
        "decide",
        str(second),
        "--override",
        "safe",
        "--note",
        "quoting a film line",
    )
    assert code == 0
    cli(capsys, data, "history", "decide", str(second), "--escalate", "--note", "second look")
    code, out, _ = cli(capsys, data, "history", "show", str(second), "--json")
    shown = json.loads(out)
    assert shown["content"] == "you are a worthless idiot" and shown["reasoning"]
    assert shown["policy"]["id"] == "harassment" and len(shown["policy"]["sha256"]) == 64
    assert [d["action"] for d in shown["decisions"]] == ["override", "escalate"]
    assert shown["decisions"][0]["label"] == "safe"
    assert shown["decisions"][0]["note"] == "quoting a film line"
    code, out, _ = cli(capsys, data, "history", "search", "film", "--json")
    assert [r["id"] for r in json.loads(out)] == [second]  # notes are searchable
    code, _, err = cli(capsys, data, "history", "show", "999")
    assert code == 2 and "no review #999" in err


def test_export_is_safe_markdown(fake, capsys, tmp_path) -> None:
    data = tmp_path / "d"
    hostile = "# Forged heading\n[x](javascript:alert(1)) <script>x</script>\n```\nidiot"
    rid = classify(capsys, data, fake, hostile)
    out_file = tmp_path / "note.md"
    code, _, _ = cli(capsys, data, "export", str(rid), "--out", str(out_file))
    assert code == 0 and out_file.exists()
    note = out_file.read_text(encoding="utf-8")
    html = render_html(note)
    assert "Forged heading</h1>" not in html and "# Forged heading" in html  # text, not a heading
    assert "<script" not in html and 'href="javascript' not in html
    fence_line = next(line for line in note.splitlines() if line.startswith("````"))
    assert len(fence_line.removesuffix("text")) >= 4  # longer than the ``` in the content
    assert "`harassment`" in note and "sha256" in note
    code, out, _ = cli(capsys, data, "export", str(rid), "--redact")
    assert code == 0 and out.startswith("# Escalation note")


def test_purge_backup_restore(fake, capsys, tmp_path) -> None:
    data = tmp_path / "d"
    rid = classify(capsys, data, fake, "hello there")
    backup = tmp_path / "backup.sqlite3"
    assert cli(capsys, data, "history", "backup", str(backup))[0] == 0
    code, _, err = cli(capsys, data, "history", "delete", str(rid))
    assert code == 2 and "--yes" in err  # no terminal to confirm on
    assert cli(capsys, data, "history", "delete", str(rid), "--yes")[0] == 0
    code, out, _ = cli(capsys, data, "history", "list", "--json")
    assert json.loads(out) == []
    code, _, err = cli(capsys, data, "history", "restore", str(backup))
    assert code == 2 and "--yes" in err  # no terminal to confirm on
    assert cli(capsys, data, "history", "restore", str(backup), "--yes")[0] == 0
    code, out, _ = cli(capsys, data, "history", "list", "--json")
    assert [r["id"] for r in json.loads(out)] == [rid]
    not_db = tmp_path / "junk.sqlite3"
    not_db.write_bytes(os.urandom(4096))
    code, _, err = cli(capsys, data, "history", "restore", str(not_db), "--yes")
    assert code == 2 and err.count("\n") == 1 and "Choose another file" in err
    code, out, _ = cli(capsys, data, "history", "list", "--json")
    assert [r["id"] for r in json.loads(out)] == [rid]  # untouched


def test_killed_classify_keeps_partial_review(tmp_path, capsys) -> None:
    data = tmp_path / "d"
    with FakeOllama(token_rate=60) as slow:
        slow.script(Scenario(thinking="step " * 400, content="1"))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "safeguard_desktop", "--data-dir", str(data), "classify",
             "--policy", "harassment", "--text", "you idiot", "--host", slow.url, "--json"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60  # a hang bound: it breaks as soon as saved
            db = data / "history.sqlite3"
            while time.monotonic() < deadline:  # wait until some progress was saved
                time.sleep(0.3)
                if db.exists() and _partial_saved(db):
                    break
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
    _, out, _ = cli(capsys, data, "history", "list", "--json")
    rows = json.loads(out)
    assert len(rows) == 1 and rows[0]["status"] == "interrupted"
    code, out, _ = cli(capsys, data, "history", "show", str(rows[0]["id"]), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["status"] == "interrupted"
    # However much was streamed before the kill is kept (one token on a busy machine).
    assert shown["content"] == "you idiot" and shown["reasoning"].startswith("step")


def _partial_saved(db: Path) -> bool:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT length(reasoning) FROM reviews").fetchone()
            return bool(row and row[0])
    except sqlite3.Error:
        return False


def test_bad_date_filter_is_a_usage_error(capsys, tmp_path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(capsys, tmp_path / "d", "history", "list", "--since", "garbage")
    assert exit_info.value.code == 2 and "2026-11-28" in capsys.readouterr().err


def test_damaged_history_says_how_out_and_recover_keeps_a_copy(capsys, tmp_path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "history.sqlite3").write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    code, _, err = cli(capsys, data, "history", "list")
    assert code == 1 and "history recover" in err and err.count("\n") == 1
    code, out, _ = cli(capsys, data, "history", "recover", "--yes")
    assert code == 0 and "kept at" in out
    kept = [p for p in data.iterdir() if "corrupt" in p.name]
    assert len(kept) == 1 and kept[0].stat().st_size > 8000
    code, out, _ = cli(capsys, data, "history", "list", "--json")
    assert code == 0 and json.loads(out) == []
