"""`safeguard-desktop queue ...` as a moderator uses it: create, run (killed, interrupted, run
again), status, items, decide, export, delete; the JSON keys scripts rely on; one-line errors."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.cli_helpers import cli, cli_json, reset_data_dir  # noqa: F401 (fixture)
from tests.fake_ollama import FakeOllama, Scenario

REPO = Path(__file__).resolve().parents[1]
STATUS_KEYS = {"name", "items", "pending", "classifying", "classified", "decided", "failed",
               "interrupted", "policies"}  # fmt: skip
DECISION_KEYS = {"action", "label", "rule", "note", "moderator", "at"}


def jsonl(path: Path, count: int) -> Path:
    texts = ["buy now, limited offer", "see you at lunch", "you idiot", "nice photo"]
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": f"{texts[i % 4]} #{i}"}) + "\n"
                for i in range(1, count + 1)),
        encoding="utf-8",
    )  # fmt: skip
    return path


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


# --- create and its import errors --------------------------------------------------------------


def test_a_bad_line_refuses_the_whole_import(capsys, tmp_path: Path) -> None:
    data = tmp_path / "d"
    bad = tmp_path / "reports.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "fine too"}\nnot json at all\n', encoding="utf-8")
    code, _, err = cli(capsys, data, "queue", "create", "q", "--from", str(bad),
                       "--policy", "harassment")  # fmt: skip
    assert code == 2 and one_line(err)
    assert "reports.jsonl line 3" in err and "No queue was created" in err
    assert cli_json(capsys, data, "queue", "list") == []


def test_unknown_names_are_one_line_usage_errors(capsys, tmp_path: Path) -> None:
    data = tmp_path / "d"
    items = jsonl(tmp_path / "i.jsonl", 2)
    code, _, err = cli(capsys, data, "queue", "create", "q", "--from", str(items),
                       "--policy", "no-such-policy")  # fmt: skip
    assert code == 2 and one_line(err) and "policies list" in err
    code, _, err = cli(capsys, data, "queue", "create", "q", "--from", str(tmp_path / "gone.jsonl"),
                       "--policy", "harassment")  # fmt: skip
    assert code == 2 and one_line(err) and "File not found" in err
    for args in (("status", "nope", "--json"), ("run", "nope"), ("items", "nope")):
        code, _, err = cli(capsys, data, "queue", *args)
        assert code == 2 and one_line(err) and "queue list" in err


# --- the commands end to end, in-process -------------------------------------------------------


def test_queue_commands_and_their_json(capsys, tmp_path: Path) -> None:
    data = tmp_path / "d"
    items = jsonl(tmp_path / "reports.jsonl", 6)
    policies = ["--policy", "harassment", "--policy", "spam-scams"]
    created = cli_json(capsys, data, "queue", "create", "monday", "--from", str(items),
                       *policies, "--effort", "low")  # fmt: skip
    assert set(created) == STATUS_KEYS and created["pending"] == 6
    assert created["policies"] == ["harassment", "spam-scams"]
    listed = cli_json(capsys, data, "queue", "list")
    assert [q["name"] for q in listed] == ["monday"] and set(listed[0]) >= STATUS_KEYS
    code, _, err = cli(capsys, data, "queue", "decide", "monday", "1", "--agree")
    assert code == 2 and one_line(err) and "queue run monday" in err  # not classified yet

    with FakeOllama(token_rate=50_000, parallel=2) as fake:
        code, out, err = cli(capsys, data, "queue", "run", "monday", "--host", fake.url,
                             "--parallel", "2")  # fmt: skip
        assert code == 0, err
        assert "6/6 items" in err and "6 of 6 items classified" in out
        assert all(r.json["think"] == "low" for r in fake.requests_to("/api/chat"))
        code, out, _ = cli(capsys, data, "queue", "run", "monday", "--host", fake.url)
        assert code == 0 and len(fake.requests_to("/api/chat")) == 12  # nothing left to do

    status = cli_json(capsys, data, "queue", "status", "monday")
    assert set(status) == STATUS_KEYS
    assert (status["items"], status["classified"], status["pending"]) == (6, 6, 0)
    rows = cli_json(capsys, data, "queue", "items", "monday")
    assert [r["item"] for r in rows] == [1, 2, 3, 4, 5, 6]
    first = rows[0]
    assert {"item", "state", "verdicts", "decision"} <= set(first) and first["decision"] is None
    assert [set(v) for v in first["verdicts"]] == [{"policy", "label", "review_id", "host"}] * 2
    assert [v["policy"] for v in first["verdicts"]] == ["harassment", "spam-scams"]
    assert {v["label"] for r in rows for v in r["verdicts"]} <= {"violation", "safe"}

    code, _, err = cli(capsys, data, "queue", "decide", "monday", "2", "--skip")
    assert code == 2 and one_line(err) and "--note" in err
    assert cli(capsys, data, "queue", "decide", "monday", "2", "--skip", "--note", "dup")[0] == 0
    assert cli(capsys, data, "queue", "decide", "monday", "3", "--override", "safe",
               "--note", "a quote, not an insult")[0] == 0  # fmt: skip
    assert cli(capsys, data, "queue", "decide", "monday", "4", "--escalate")[0] == 0
    code, _, err = cli(capsys, data, "queue", "decide", "monday", "9", "--agree")
    assert code == 2 and one_line(err) and "items 1 to 6" in err
    decided = cli_json(capsys, data, "queue", "items", "monday", "--state", "decided")
    assert [(r["item"], r["decision"]["action"], r["decision"]["label"], r["decision"]["note"])
            for r in decided] == [(2, "skip", None, "dup"),
                                  (3, "override", "safe", "a quote, not an insult"),
                                  (4, "escalate", None, None)]  # fmt: skip
    assert set(decided[0]["decision"]) == DECISION_KEYS
    # The decisions are in the one audit trail, on the linked reviews.
    review_id = decided[1]["verdicts"][0]["review_id"]
    shown = cli_json(capsys, data, "history", "show", str(review_id))
    assert [d["action"] for d in shown["decisions"]] == ["override"]
    assert cli(capsys, data, "history", "verify")[0] == 0

    out_jsonl, out_csv = tmp_path / "labels.jsonl", tmp_path / "labels.csv"
    assert cli(capsys, data, "queue", "export", "monday", "--out", str(out_jsonl))[0] == 0
    lines = [json.loads(x) for x in out_jsonl.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 6 and lines[2]["decision"]["label"] == "safe"
    assert lines[0]["content"]["text"] == "see you at lunch #1" and len(lines[0]["verdicts"]) == 2
    assert cli(capsys, data, "queue", "export", "monday", "--out", str(out_csv))[0] == 0
    with out_csv.open(encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 6 and table[2]["decision"] == "override"
    assert table[2]["harassment_label"] in ("violation", "safe")
    # The moderator's outcome beside the model's, and the host that judged (issues 15, 14).
    assert table[2]["outcome"] == "safe" and lines[2]["outcome"] == "safe"
    assert table[2]["hosts"] == fake.url and table[2]["decision_rule"] == ""
    code, _, err = cli(capsys, data, "queue", "export", "monday", "--out", str(tmp_path / "x.md"))
    assert code == 2 and one_line(err)

    reviews = len(cli_json(capsys, data, "history", "list", "--limit", "100"))
    code, _, err = cli(capsys, data, "queue", "delete", "monday")
    assert code == 2 and "--yes" in err  # no terminal to ask on
    assert cli(capsys, data, "queue", "delete", "monday", "--yes")[0] == 0
    assert cli_json(capsys, data, "queue", "list") == []
    assert len(cli_json(capsys, data, "history", "list", "--limit", "100")) == reviews == 12


def test_no_server_is_an_engine_error_and_the_items_stay_to_do(capsys, tmp_path: Path) -> None:
    data = tmp_path / "d"
    items = jsonl(tmp_path / "i.jsonl", 3)
    assert cli(capsys, data, "queue", "create", "q", "--from", str(items),
               "--policy", "harassment")[0] == 0  # fmt: skip
    code, _, err = cli(capsys, data, "queue", "run", "q", "--host", "http://127.0.0.1:9")
    assert code == 1 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("safeguard-desktop: ") and "stay to do" in err
    assert cli_json(capsys, data, "queue", "status", "q")["pending"] == 3


# --- killed and interrupted runs, in a child process ---------------------------------------------


class HangAfter:
    """Script the fake: `normal` quick answers, then `slots` requests that hang until the
    fake stops; `hung` is set once every slot hangs (the run can go no further)."""

    def __init__(self, fake: FakeOllama, normal: int, slots: int) -> None:
        fake.script(*(Scenario(thinking="An ordinary message.", content="0")
                      for _ in range(normal)))  # fmt: skip
        fake.script(*(Scenario(hang=True) for _ in range(slots)))
        self.hung = threading.Event()
        self._left = slots
        self._lock = threading.Lock()
        original = fake.next_scenario

        def counting(model: str) -> Scenario | None:
            scenario = original(model)
            if scenario is not None and scenario.hang:
                with self._lock:
                    self._left -= 1
                    if self._left == 0:
                        self.hung.set()
            return scenario

        fake.next_scenario = counting  # type: ignore[method-assign]


def start_run(data: Path, url: str, parallel: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "safeguard_desktop", "--data-dir", str(data), "queue", "run", "q",
         "--host", url, "--parallel", str(parallel)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As from a terminal: a suite run from a background job has SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def wait_for_items(proc: subprocess.Popen[str], at_least: int) -> list[str]:
    """Read the run's progress lines until one reports `at_least` items done."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        match = re.search(r"(\d+)/(\d+) items", line)
        if match and int(match.group(1)) >= at_least:
            return seen
    raise AssertionError(f"the run ended before {at_least} items: {''.join(seen)}")


def test_killed_half_way_then_run_again_classifies_each_item_once_per_policy(
    capsys, tmp_path: Path
) -> None:
    """The README's walk-through: 200 items, two policies, kill -9 half-way, run again."""
    data = tmp_path / "d"
    items = jsonl(tmp_path / "reports.jsonl", 200)
    assert cli(capsys, data, "queue", "create", "q", "--from", str(items),
               "--policy", "harassment", "--policy", "spam-scams")[0] == 0  # fmt: skip
    with FakeOllama(token_rate=50_000, parallel=4) as fake:
        script = HangAfter(fake, normal=200, slots=4)  # 200 reviews, then the run stalls
        proc = start_run(data, fake.url, 4)
        try:
            progress = wait_for_items(proc, 80)
            assert script.hung.wait(60)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert progress and "items/min" in progress[-1]
        after_kill = cli_json(capsys, data, "queue", "status", "q")
        assert after_kill["classifying"] == 0 and after_kill["interrupted"] >= 1
        assert 80 <= after_kill["classified"] <= 100
        assert after_kill["pending"] + after_kill["interrupted"] + after_kill["classified"] == 200
        # A unit whose answer came but whose record had not been written yet frees its slot
        # (the server never waits for the database), and the runner lets as many again as it
        # has slots wait for the database, so up to two answers per slot can be lost with
        # the killed process; they are asked again below, never recorded twice.
        recorded = len(cli_json(capsys, data, "history", "list", "--limit", "1000"))
        assert 200 - 2 * 4 <= recorded <= 200

        code, out, err = cli(capsys, data, "queue", "run", "q", "--host", fake.url,
                             "--parallel", "4")  # fmt: skip
        assert code == 0, err
        assert "200 of 200 items classified" in out
        requests = len(fake.requests_to("/api/chat"))
    # Each review once, plus the 4 hung with the killed process and any answer it had not
    # recorded yet.
    assert requests == 400 + 4 + (200 - recorded)
    rows = cli_json(capsys, data, "queue", "items", "q")
    assert len(rows) == 200 and {r["state"] for r in rows} == {"classified"}
    review_ids = [v["review_id"] for r in rows for v in r["verdicts"]]
    assert len(review_ids) == 400 and len(set(review_ids)) == 400 and None not in review_ids
    assert all([v["policy"] for v in r["verdicts"]] == ["harassment", "spam-scams"] for r in rows)
    history = cli_json(capsys, data, "history", "list", "--limit", "1000")
    assert len(history) == 400 and {h["status"] for h in history} == {"done"}

    # Ten decisions from the command line; `queue items --json` shows them.
    for n in range(1, 11):
        how = {1: ["--escalate"], 2: ["--override", "violation", "--note", "coded threat",
                                       "--rule", "H2.f"],
               3: ["--skip", "--note", "duplicate"]}.get(n, ["--agree"])  # fmt: skip
        assert cli(capsys, data, "queue", "decide", "q", str(n), *how)[0] == 0
    rows = cli_json(capsys, data, "queue", "items", "q")
    decided = [r for r in rows if r["decision"] is not None]
    assert [r["item"] for r in decided] == list(range(1, 11))
    assert [r["decision"]["action"] for r in decided[:4]] == ["escalate", "override", "skip",
                                                              "agree"]  # fmt: skip
    assert decided[1]["decision"]["label"] == "violation"
    assert decided[1]["decision"]["rule"] == "H2.f" and decided[0]["decision"]["rule"] is None
    assert {r["state"] for r in decided} == {"decided"}
    assert cli_json(capsys, data, "queue", "status", "q")["decided"] == 10
    assert cli(capsys, data, "history", "verify")[0] == 0


def test_ctrl_c_exits_130_with_the_items_in_flight_back_to_pending(capsys, tmp_path: Path) -> None:
    data = tmp_path / "d"
    items = jsonl(tmp_path / "reports.jsonl", 30)
    assert cli(capsys, data, "queue", "create", "q", "--from", str(items),
               "--policy", "harassment")[0] == 0  # fmt: skip
    with FakeOllama(token_rate=50_000, parallel=3) as fake:
        script = HangAfter(fake, normal=12, slots=3)
        proc = start_run(data, fake.url, 3)
        try:
            # Every quick answer recorded (the progress line at 12 of 30 says so) and every
            # slot hung: an answer still being written when Ctrl+C lands is asked again
            # later (never recorded twice), so it would not count as classified here.
            wait_for_items(proc, 12)
            assert script.hung.wait(60)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 130, err
        assert "back to pending" in err and "Traceback" not in err
        status = cli_json(capsys, data, "queue", "status", "q")
        assert (status["classified"], status["pending"]) == (12, 18)
        assert status["classifying"] == status["interrupted"] == 0
        assert len(cli_json(capsys, data, "history", "list", "--limit", "100")) == 12

        code, out, err = cli(capsys, data, "queue", "run", "q", "--host", fake.url)
        assert code == 0, err
    assert "30 of 30 items classified" in out
    history = cli_json(capsys, data, "history", "list", "--limit", "100")
    assert len(history) == 30 and {h["status"] for h in history} == {"done"}


# --- undo, other sources, item order -----------------------------------------------------------


def test_retract_undoes_a_decision_by_appending_to_the_trail(capsys, tmp_path: Path) -> None:
    data = tmp_path / "d"
    items = jsonl(tmp_path / "i.jsonl", 2)
    assert cli(capsys, data, "queue", "create", "q", "--from", str(items),
               "--policy", "harassment")[0] == 0  # fmt: skip
    with FakeOllama(token_rate=50_000) as fake:
        assert cli(capsys, data, "queue", "run", "q", "--host", fake.url)[0] == 0
    code, _, err = cli(capsys, data, "queue", "decide", "q", "1", "--retract")
    assert code == 2 and one_line(err) and "no decision to undo" in err
    assert cli(capsys, data, "queue", "decide", "q", "1", "--escalate", "--note", "check")[0] == 0
    undone = cli_json(capsys, data, "queue", "decide", "q", "1", "--retract")
    listed = cli_json(capsys, data, "queue", "items", "q")
    assert undone == listed[0] and set(undone) == set(listed[1])
    assert (undone["state"], undone["decision"]) == ("classified", None)
    assert cli_json(capsys, data, "queue", "status", "q")["decided"] == 0
    review_id = undone["verdicts"][0]["review_id"]
    shown = cli_json(capsys, data, "history", "show", str(review_id))
    assert [d["action"] for d in shown["decisions"]] == ["escalate", "retracted"]
    assert shown["escalated"] is False
    assert cli_json(capsys, data, "history", "list", "--escalated") == []
    assert len(cli_json(capsys, data, "history", "list", "--decision", "none")) == 2
    code, out, _ = cli(capsys, data, "queue", "decide", "q", "1", "--agree")
    assert code == 0
    code, out, _ = cli(capsys, data, "queue", "decide", "q", "1", "--retract")
    assert code == 0 and "classified again" in out
    code, _, err = cli(capsys, data, "queue", "decide", "q", "1", "--retract")
    assert code == 2 and one_line(err) and "Item 1 of 'q' has no decision to undo." in err
    with pytest.raises(SystemExit) as exited:  # one action at a time
        cli(capsys, data, "queue", "decide", "q", "1", "--retract", "--agree")
    assert exited.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert cli(capsys, data, "history", "verify")[0] == 0


def test_create_from_stdin_or_a_history_search_in_an_order(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "d"

    def stdin(raw: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))

    stdin(b"\xef\xbb\xbfcheap pills here\r\n\r\nsee you at lunch\nmore pills\n")
    created = cli_json(capsys, data, "queue", "create", "pasted", "--from", "-",
                       "--policy", "spam-scams", "--order", "verdict")  # fmt: skip
    assert set(created) == STATUS_KEYS and created["items"] == 3
    rows = cli_json(capsys, data, "queue", "items", "pasted")
    assert [r["item"] for r in rows] == [1, 2, 3]
    code, out, _ = cli(capsys, data, "queue", "status", "pasted")
    assert code == 0 and "items in verdict order" in out
    with FakeOllama(token_rate=50_000) as fake:
        assert cli(capsys, data, "queue", "run", "pasted", "--host", fake.url)[0] == 0

    created = cli_json(capsys, data, "queue", "create", "again", "--from-history", "pills",
                       "--policy", "harassment")  # fmt: skip
    assert created["items"] == 2
    texts = [r["text"] for r in map(json.loads, _export(capsys, data, tmp_path, "again"))]
    assert sorted(texts) == ["cheap pills here", "more pills"]
    assert texts[0] == "more pills"  # newest first
    shown = cli_json(capsys, data, "queue", "order", "again", "oldest")
    assert shown["order"] == "oldest" and shown["name"] == "again"
    texts = [r["text"] for r in map(json.loads, _export(capsys, data, tmp_path, "again"))]
    assert texts == ["cheap pills here", "more pills"]  # first reviewed first

    code, _, err = cli(capsys, data, "queue", "create", "x", "--from-history", "zebra",
                       "--policy", "harassment")  # fmt: skip
    assert code == 2 and one_line(err) and "matches no review" in err
    code, _, err = cli(capsys, data, "queue", "create", "x", "--policy", "harassment")
    assert code == 2 and one_line(err) and "--from-history QUERY" in err
    stdin(b"fine\n\xff\xfe broken\n")
    code, _, err = cli(capsys, data, "queue", "create", "x", "--from", "-",
                       "--policy", "harassment")  # fmt: skip
    assert code == 2 and one_line(err) and "not valid UTF-8 (byte 5, line 2)" in err
    code, _, err = cli(capsys, data, "queue", "create", "x", "--from", "-", "--from", "-",
                       "--policy", "harassment")  # fmt: skip
    assert code == 2 and one_line(err)
    with pytest.raises(SystemExit) as exited:
        cli(capsys, data, "queue", "order", "again", "newest")
    assert exited.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert [q["name"] for q in cli_json(capsys, data, "queue", "list")] == ["again", "pasted"]


def _export(capsys, data: Path, tmp_path: Path, name: str) -> list[str]:
    out = tmp_path / f"{name}.jsonl"
    assert cli(capsys, data, "queue", "export", name, "--out", str(out))[0] == 0
    return out.read_text(encoding="utf-8").splitlines()
