"""`safeguard-desktop eval ...` as a policy writer uses it: import each shape of labelled set,
run a policy on it against the fake server, read the figures as JSON, compare two policy
versions (McNemar, flips), write the report, survive kill -9 and Ctrl+C."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import markdown
import pytest

from tests.cli_helpers import cli, cli_json, reset_data_dir  # noqa: F401 (fixture)
from tests.fake_ollama import FakeOllama, Scenario

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SPAM_GOLDEN = SHARED / "spam-golden" / "golden_dataset.csv"
SPAM_POLICY = SHARED / "spam-golden" / "policy.txt"
MODERATION = SHARED / "openai-moderation-1680" / "samples-1680.jsonl.gz"
METRIC_KEYS = ("run", "n", "tp", "fp", "tn", "fn", "unparsed", "precision", "recall", "f1",
               "accuracy", "fpr", "kappa")  # fmt: skip
POLICY = """---
id: sales
title: Sales pitches
version: "{version}"
---
# Sales pitches

## Violates (1)
- SA2 A message that sells something.{extra}

## Allowed (0)
- SA0 Anything else.

Answer 1 if the content violates this policy, 0 if it does not.
"""


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


def policy_file(tmp_path: Path, version: str = "1", extra: str = "") -> Path:
    path = tmp_path / f"sales-v{version}.md"
    path.write_text(POLICY.format(version=version, extra=extra), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def answers(fake: FakeOllama, *labels: str) -> None:
    """Script one answer per item, in order (run with --parallel 1): 1, 0, a word the parser
    cannot read ("?"), a cut-off answer ("cut") or a server error ("500")."""
    for label in labels:
        if label == "cut":
            fake.script(Scenario(thinking="Thinking.", content="", done_reason="length"))
        elif label == "500":
            fake.script(Scenario(status=500, error_message="model runner crashed"))
        elif label == "?":
            fake.script(Scenario(thinking="Hard to say.", content="perhaps"))
        else:
            fake.script(Scenario(thinking=f"Reasoning for {label}.", content=label))


def history_file(data: Path) -> Path:
    return data / "history.sqlite3"


def done_links(data: Path) -> list[tuple[int, int, int]]:
    """(run, item, number of finished reviews) for every item with one."""
    conn = sqlite3.connect(history_file(data))
    try:
        return conn.execute(
            "SELECT run_id, item_id, count(*) FROM eval_run_reviews WHERE outcome = 'done' "
            "GROUP BY run_id, item_id"
        ).fetchall()
    finally:
        conn.close()


# --- metrics on hand-checkable verdicts --------------------------------------------------------


def test_run_prints_the_figures_as_one_json_object(capsys, tmp_path: Path) -> None:
    """Ten items, each answer scripted: the counts can be checked by hand."""
    data = tmp_path / "d"
    truths = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    labels = write_jsonl(
        tmp_path / "set.jsonl",
        [{"text": f"message {i}", "label": t} for i, t in enumerate(truths, start=1)],
    )
    policy = policy_file(tmp_path)
    # items 1-5 are violations: caught, caught, missed, unparsed, cut off (incomplete)
    # items 6-10 are safe: false alarm, right, right, right, server error (failed)
    with FakeOllama(token_rate=50_000) as fake:
        answers(fake, "1", "1", "0", "?", "cut", "1", "0", "0", "0", "500")
        code, out, err = cli(capsys, data, "eval", "run", "--policy", str(policy),
                             "--labels", str(labels), "--parallel", "1", "--host", fake.url,
                             "--json")  # fmt: skip
        assert code == 0, err
        assert len(fake.requests_to("/api/chat")) == 10
    result = json.loads(out)
    assert list(result)[: len(METRIC_KEYS)] == list(METRIC_KEYS)
    assert (result["run"], result["n"]) == (1, 10)
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (2, 1, 3, 1)
    assert result["unparsed"] == 3  # never counted as safe
    assert result["unparsed_by"] == {"unparsed": 1, "incomplete": 1, "failed": 1}
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["accuracy"] == pytest.approx(5 / 7)
    assert result["fpr"] == pytest.approx(1 / 4)
    # po = 5/7, pe = (3*3 + 4*4) / 49 = 25/49, kappa = (35/49 - 25/49) / (24/49) = 10/24
    assert result["kappa"] == pytest.approx(10 / 24)
    assert result["precision_ci"][0] < 2 / 3 < result["precision_ci"][1]
    assert (result["total"], result["done"], result["failed"], result["pending"]) == (10, 9, 1, 0)
    assert result["policy"] == "sales" and len(result["policy_sha256"]) == 64
    assert "1 item failed" in err and "[##" in err  # the note and the progress bar, on stderr

    shown = cli_json(capsys, data, "eval", "show", "1")
    assert [i["predicted"] for i in shown["items"]] == [
        "violation", "violation", "safe", "unparsed", "incomplete",
        "violation", "safe", "safe", "safe", "failed",
    ]  # fmt: skip
    assert [i["correct"] for i in shown["items"]][:5] == [True, True, False, False, False]
    assert {k: shown[k] for k in METRIC_KEYS} == {k: result[k] for k in METRIC_KEYS}
    review = cli_json(capsys, data, "history", "show", str(shown["items"][0]["review_id"]))
    assert review["source"] == "eval" and review["reasoning"] == "Reasoning for 1."

    # Run again: the failed item is tried again; nothing else is sent.
    with FakeOllama(token_rate=50_000) as fake:
        answers(fake, "0")
        code, out, err = cli(capsys, data, "eval", "run", "--policy", str(policy),
                             "--labels", str(labels), "--host", fake.url, "--json")  # fmt: skip
        assert code == 0, err
        assert len(fake.requests_to("/api/chat")) == 1
    again = json.loads(out)
    assert (again["run"], again["tn"], again["unparsed"], again["failed"]) == (1, 4, 2, 0)
    assert "continued run 1" in err
    listed = cli_json(capsys, data, "eval", "list")
    assert [(r["run"], r["done"], r["total"]) for r in listed] == [(1, 10, 10)]
    assert listed[0]["f1"] == pytest.approx(2 / 3)


def test_label_errors_list_the_values_and_name_positive(capsys, tmp_path: Path) -> None:
    data = tmp_path / "d"
    labels = tmp_path / "set.csv"
    labels.write_text("message,verdict\nbuy now,spam\nhello,ham\nwin cash,scam\n", "utf-8")
    code, _, err = cli(capsys, data, "eval", "run", "--policy", "spam-scams",
                       "--labels", str(labels), "--text-column", "message",
                       "--label-column", "verdict")  # fmt: skip
    assert code == 2 and one_line(err)
    assert "'spam', 'ham', 'scam'" in err and "--positive" in err
    code, _, err = cli(capsys, data, "eval", "run", "--policy", "spam-scams",
                       "--labels", str(labels), "--text-column", "body")  # fmt: skip
    assert code == 2 and one_line(err) and "columns: message, verdict" in err
    for bad in (("--labels", str(tmp_path / "gone.csv")), ("--policy", "no-such-policy")):
        args = {"--policy": "spam-scams", "--labels": str(labels), **dict([bad])}
        code, _, err = cli(capsys, data, "eval", "run", *[x for kv in args.items() for x in kv])
        assert code == 2 and one_line(err)
    for args in (("show", "7"), ("compare", "1", "2"), ("report", "3", "--out", "r.md")):
        code, _, err = cli(capsys, data, "eval", *args)
        assert code == 2 and one_line(err) and "eval list" in err


# --- the shapes of labelled sets ---------------------------------------------------------------


def test_each_import_shape_through_the_cli(capsys, tmp_path: Path) -> None:
    data = tmp_path / "d"
    # JSON Lines with one label column per category, a missing one meaning unknown.
    moderation = write_jsonl(
        tmp_path / "moderation.jsonl",
        [{"prompt": "you idiot", "S": 0, "H": 1}, {"prompt": "hello there", "S": 0, "H": 0},
         {"prompt": "kill them all", "H": 1}, {"prompt": "nice day", "S": 0}],
    )  # fmt: skip
    got = cli_json(capsys, data, "eval", "import", str(moderation), "--label-column", "H")
    assert (got["shape"], got["items"], got["violations"], got["left_out"]) == ("jsonl", 3, 2, 1)
    again = cli_json(capsys, data, "eval", "import", str(moderation), "--label-column", "H")
    assert again["reused"] is True and again["set"] == got["set"]
    # CSV with a column mapping and --positive.
    table = tmp_path / "reports.csv"
    table.write_text("id;message;verdict\n1;buy now;spam\n2;hello;ham\n3;win cash;scam\n", "utf-8")
    got = cli_json(capsys, data, "eval", "import", str(table), "--text-column", "message",
                   "--label-column", "verdict", "--positive", "spam,scam",
                   "--name", "mail")  # fmt: skip
    assert (got["name"], got["shape"], got["items"], got["violations"]) == ("mail", "csv", 3, 2)
    assert got["positive"] == ["spam", "scam"]
    # A CSV with section rows (as OpenAI's spam golden set).
    sections = tmp_path / "golden.csv"
    sections.write_text(
        ",,,model says\nSP0,,,\n1,hello friend,,SP0\nSP2,,,\n1,buy now,,SP0\n2,cheap pills,,SP2\n"
        ",,Accuracy,0.5\n",
        encoding="utf-8",
    )
    got = cli_json(capsys, data, "eval", "import", str(sections))
    assert (got["shape"], got["items"], got["violations"], got["ignored"]) == ("sections", 3, 2, 4)
    assert cli_json(capsys, data, "eval", "import", str(sections), "--name", "x")["reused"]
    code, _, err = cli(capsys, data, "eval", "import", str(moderation), "--label-column", "S",
                       "--name", "mail")  # fmt: skip
    assert code == 2 and one_line(err) and "already exists" in err
    names = [s["name"] for s in cli_json(capsys, data, "eval", "sets")]
    assert names == ["golden.csv", "mail", "moderation.jsonl"]


def test_a_queue_export_and_the_history_as_labelled_sets(capsys, tmp_path: Path) -> None:
    """Moderators' decisions are the truth: an override gives the label, an agree confirms
    the model's verdict; skipped and undecided items are left out."""
    data = tmp_path / "d"
    items = write_jsonl(
        tmp_path / "reports.jsonl",
        [{"text": t} for t in ("buy now, limited offer", "see you at lunch", "you idiot",
                               "nice photo", "click here to win")],
    )  # fmt: skip
    assert cli(capsys, data, "queue", "create", "q", "--from", str(items),
               "--policy", "spam-scams")[0] == 0  # fmt: skip
    with FakeOllama(token_rate=50_000) as fake:
        assert cli(capsys, data, "queue", "run", "q", "--host", fake.url)[0] == 0
    for number, how in ((1, ["--agree"]), (2, ["--agree"]),
                        (3, ["--override", "violation", "--note", "insult, and a sale"]),
                        (4, ["--skip", "--note", "unclear"])):  # fmt: skip
        assert cli(capsys, data, "queue", "decide", "q", str(number), *how)[0] == 0
    export = tmp_path / "decided.jsonl"
    assert cli(capsys, data, "queue", "export", "q", "--out", str(export))[0] == 0

    got = cli_json(capsys, data, "eval", "import", str(export))
    assert (got["shape"], got["items"], got["violations"], got["left_out"]) == (
        "queue-export", 3, 2, 2)  # fmt: skip
    with FakeOllama(token_rate=50_000) as fake:
        result = cli_json(capsys, data, "eval", "run", "--policy", "spam-scams",
                          "--labels", str(export), "--host", fake.url)  # fmt: skip
    assert (result["n"], result["set"], result["set_id"]) == (3, "decided.jsonl", got["set"])
    shown = cli_json(capsys, data, "eval", "show", str(result["run"]))
    assert [(i["text"], i["truth"]) for i in shown["items"]] == [
        ("buy now, limited offer", "violation"), ("see you at lunch", "safe"),
        ("you idiot", "violation"),
    ]  # fmt: skip
    code, _, err = cli(capsys, data, "eval", "import", str(export), "--positive", "x")
    assert code == 2 and one_line(err) and "queue export" in err

    # The same decisions read from the history (the eval reviews carry no decision).
    got = cli_json(capsys, data, "eval", "import", "--from-history", "--name", "decided")
    assert (got["shape"], got["items"], got["violations"]) == ("history", 3, 2)
    narrow = cli_json(capsys, data, "eval", "import", "--from-history", "lunch")
    assert (narrow["name"], narrow["items"], narrow["violations"]) == ("history lunch", 1, 0)
    code, _, err = cli(capsys, data, "eval", "import", "--from-history", "zebra")
    assert code == 2 and one_line(err) and "no review with an agree or override" in err


@pytest.mark.skipif(
    not (SPAM_GOLDEN.is_file() and SPAM_POLICY.is_file()),
    reason=f"shared spam golden set and policy not found in {SHARED / 'spam-golden'}",
)
def test_the_spam_golden_set_with_its_policy(capsys, tmp_path: Path) -> None:
    """The README's walk-through: the shared spam policy on its golden CSV, then a second
    version of the policy, compared. The fake says INVALID only for its trigger phrases."""
    data = tmp_path / "d"
    with FakeOllama(token_rate=50_000, parallel=4) as fake:
        first = cli_json(capsys, data, "eval", "run", "--policy", str(SPAM_POLICY),
                         "--labels", str(SPAM_GOLDEN), "--parallel", "4",
                         "--host", fake.url)  # fmt: skip
        assert len(fake.requests_to("/api/chat")) == 40
        # 22 violations (SP2, SP3, SP4), 18 safe (SP0); only SP4#7 says "Click here".
        assert (first["n"], first["tp"], first["fp"], first["tn"], first["fn"]) == (
            40, 1, 0, 18, 21)  # fmt: skip
        assert first["precision"] == 1.0 and first["unparsed"] == 0
        assert set(first["categories"]) == {"SP2", "SP3", "SP4"}
        assert first["categories"]["SP4"]["caught"] == 1
        assert first["effort"] == "medium" and first["set"] == "golden_dataset.csv"

        again = cli_json(capsys, data, "eval", "run", "--policy", str(SPAM_POLICY),
                         "--labels", str(SPAM_GOLDEN), "--host", fake.url)  # fmt: skip
        assert again["run"] == first["run"] and len(fake.requests_to("/api/chat")) == 40

        v2 = tmp_path / "spam-v2.txt"
        v2.write_text(
            SPAM_POLICY.read_text(encoding="utf-8") + "\nSP4.z Anything asking to sign up.\n",
            encoding="utf-8",
        )
        second = cli_json(capsys, data, "eval", "run", "--policy", str(v2),
                          "--labels", str(SPAM_GOLDEN), "--parallel", "4",
                          "--host", fake.url)  # fmt: skip
    assert second["run"] == 2 and second["set_id"] == first["set_id"]
    compared = cli_json(capsys, data, "eval", "compare", "1", "2")
    assert compared["flips"] == [] and compared["mcnemar_p"] == 1.0
    assert "+SP4.z Anything asking to sign up." in compared["policy_diff"]
    report = tmp_path / "spam.md"
    code, out, err = cli(capsys, data, "eval", "report", "2", "--out", str(report),
                         "--against", "1")  # fmt: skip
    assert code == 0 and "compared with run 1" in out, err
    text = report.read_text(encoding="utf-8")
    assert f"`{first['set_checksum']}`" in text and f"`{second['policy_sha256']}`" in text
    assert "Ollama version:** `0.12.10`" in text and "| `SP4` | 7 | 1 | 6 | 0 |" in text


@pytest.mark.skipif(
    not MODERATION.is_file(), reason=f"shared moderation set not found at {MODERATION}"
)
def test_the_moderation_set_one_category_column_at_a_time(capsys, tmp_path: Path) -> None:
    data = tmp_path / "d"
    code, _, err = cli(capsys, data, "eval", "import", str(MODERATION))
    assert code == 2 and one_line(err) and "columns: prompt, S, H, V, HR, SH, S3, H2, V2" in err
    s = cli_json(capsys, data, "eval", "import", str(MODERATION), "--label-column", "S")
    # Counted in test_labelsets: 984 rows have S (237 of them 1), 696 are unknown.
    assert (s["name"], s["items"], s["violations"], s["left_out"]) == (
        "samples-1680.jsonl", 984, 237, 696)  # fmt: skip
    h2 = cli_json(capsys, data, "eval", "import", str(MODERATION), "--label-column", "H2")
    assert (h2["name"], h2["items"], h2["violations"]) == ("samples-1680.jsonl (2)", 761, 41)


# --- comparing two policy versions -------------------------------------------------------------


def test_compare_two_policy_versions_mcnemar_and_flips(capsys, tmp_path: Path) -> None:
    data = tmp_path / "d"
    truths = [1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    labels = write_jsonl(
        tmp_path / "set.jsonl",
        [{"text": f"message {i}", "label": t, "id": f"m{i}"} for i, t in enumerate(truths, 1)],
    )
    v1 = policy_file(tmp_path, "1")
    v2 = policy_file(tmp_path, "2", extra="\n- SA2.b A message that asks for money.")
    a_says = ["0", "0", "0", "1", "1", "1", "0", "0", "1", "0"]  # items 1-3, 5, 6 wrong
    b_says = ["1", "1", "1", "1", "0", "0", "0", "0", "1", "1"]  # item 10 wrong
    with FakeOllama(token_rate=50_000) as fake:
        answers(fake, *a_says)
        assert cli(capsys, data, "eval", "run", "--policy", str(v1), "--labels", str(labels),
                   "--parallel", "1", "--host", fake.url)[0] == 0  # fmt: skip
        answers(fake, *b_says)
        assert cli(capsys, data, "eval", "run", "--policy", str(v2), "--labels", str(labels),
                   "--parallel", "1", "--host", fake.url)[0] == 0  # fmt: skip
    compared = cli_json(capsys, data, "eval", "compare", "1", "2")
    assert set(compared) >= {"a", "b", "flips", "mcnemar_p"}
    assert (compared["a"]["run"], compared["b"]["run"]) == (1, 2)
    assert (compared["a"]["tp"], compared["b"]["tp"]) == (2, 5)
    assert compared["difference"]["tp"] == 3
    assert (compared["only_a_correct"], compared["only_b_correct"]) == (1, 5)
    assert compared["mcnemar_p"] == pytest.approx(14 / 64)  # 2 * (1 + 6) / 2^6
    flips = [{k: f[k] for k in ("item", "truth", "a", "b")} for f in compared["flips"]]
    assert flips == [
        {"item": 1, "truth": "violation", "a": "safe", "b": "violation"},
        {"item": 2, "truth": "violation", "a": "safe", "b": "violation"},
        {"item": 3, "truth": "violation", "a": "safe", "b": "violation"},
        {"item": 5, "truth": "safe", "a": "violation", "b": "safe"},
        {"item": 6, "truth": "safe", "a": "violation", "b": "safe"},
        {"item": 10, "truth": "safe", "a": "safe", "b": "violation"},
    ]
    first = compared["flips"][0]
    assert first["ref"] == "m1" and first["review_a"] != first["review_b"]
    for key in ("review_a", "review_b"):  # each flip opens both reasonings
        shown = cli_json(capsys, data, "history", "show", str(first[key]))
        assert shown["source"] == "eval" and shown["reasoning"].startswith("Reasoning for")
    assert "+- SA2.b A message that asks for money." in compared["policy_diff"]
    code, out, _ = cli(capsys, data, "eval", "compare", "1", "2")
    assert code == 0 and "6 flips" in out and "p = 0.2188" in out

    other = write_jsonl(tmp_path / "other.jsonl", [{"text": "x", "label": 1}])
    with FakeOllama(token_rate=50_000) as fake:
        assert cli(capsys, data, "eval", "run", "--policy", str(v1), "--labels", str(other),
                   "--host", fake.url)[0] == 0  # fmt: skip
    code, _, err = cli(capsys, data, "eval", "compare", "1", "3")
    assert code == 2 and one_line(err) and "different labelled sets" in err


# --- the report --------------------------------------------------------------------------------


def test_the_report_keeps_hostile_text_fenced(capsys, tmp_path: Path) -> None:
    data = tmp_path / "d"
    hostile = "```\n<script>alert(1)</script>\n# Forged heading\n[click](http://evil.example)"
    labels = write_jsonl(
        tmp_path / "set.jsonl",
        [{"text": hostile, "label": 1, "category": "H|1"}, {"text": "fine words", "label": 0}],
    )
    with FakeOllama(token_rate=50_000) as fake:
        fake.script(
            Scenario(thinking="It quotes ```\n<script>x</script>\n## Not mine", content="0")
        )
        fake.script(Scenario(thinking="Plain.", content="0"))
        assert cli(capsys, data, "eval", "run", "--policy", str(policy_file(tmp_path)),
                   "--labels", str(labels), "--parallel", "1",
                   "--host", fake.url)[0] == 0  # fmt: skip
    out = tmp_path / "report.md"
    code, stdout, err = cli(capsys, data, "eval", "report", "1", "--out", str(out))
    assert code == 0 and "report.md" in stdout, err
    text = out.read_text(encoding="utf-8")
    assert "````text\n```\n<script>alert(1)</script>" in text  # a longer fence holds it
    assert "````text\nIt quotes ```" in text
    html = markdown.markdown(text, extensions=["fenced_code", "tables"])  # raw HTML allowed
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "Forged heading</h1>" not in html and "Not mine</h2>" not in html
    assert 'href="http://evil.example"' not in html
    assert "| `H\\|1` |" in text  # a category cannot end its table cell
    assert "## Confusion matrix" in text and "| **violation** | 0 | 1 | 0 |" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []
    code, _, err = cli(capsys, data, "eval", "report", "1", "--out", str(tmp_path / "r.txt"))
    assert code == 2 and one_line(err) and ".md" in err


# --- killed and interrupted runs, in a child process ---------------------------------------------


class HangAfter:
    """Script the fake: `normal` quick answers, then `slots` requests that hang until the
    fake stops; `hung` is set once every slot hangs (the run can go no further)."""

    def __init__(self, fake: FakeOllama, normal: int, slots: int) -> None:
        fake.script(*(Scenario(thinking="Fine.", content="0") for _ in range(normal)))
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


def start_run(
    data: Path, url: str, policy: Path, labels: Path, parallel: int
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "safeguard_desktop", "--data-dir", str(data), "eval", "run",
         "--policy", str(policy), "--labels", str(labels), "--host", url,
         "--parallel", str(parallel)],
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


def big_set(tmp_path: Path, count: int) -> Path:
    return write_jsonl(
        tmp_path / "set.jsonl",
        [{"text": f"message number {i}", "label": i % 2} for i in range(1, count + 1)],
    )


def test_killed_half_way_then_run_again_gives_each_item_one_finished_review(
    capsys, tmp_path: Path
) -> None:
    data = tmp_path / "d"
    labels, policy = big_set(tmp_path, 40), policy_file(tmp_path)
    with FakeOllama(token_rate=50_000, parallel=4) as fake:
        script = HangAfter(fake, normal=20, slots=4)
        proc = start_run(data, fake.url, policy, labels, 4)
        try:
            progress = wait_for_items(proc, 20)
            assert script.hung.wait(60)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert "items/min" in progress[-1]
        listed = cli_json(capsys, data, "eval", "list")
        assert [(r["run"], r["done"], r["pending"], r["running"]) for r in listed] == [
            (1, 20, 20, False)]  # fmt: skip
        # Both or neither: every review the killed run wrote has its link, and no more.
        assert len(cli_json(capsys, data, "history", "list", "--limit", "100")) == 20

        code, out, err = cli(capsys, data, "eval", "run", "--policy", str(policy),
                             "--labels", str(labels), "--parallel", "4", "--host", fake.url,
                             "--json")  # fmt: skip
        assert code == 0, err
        requests = len(fake.requests_to("/api/chat"))
    assert "continued run 1" in err
    result = json.loads(out)
    assert (result["run"], result["n"], result["done"], result["pending"]) == (1, 40, 40, 0)
    assert requests == 40 + 4  # each item once, plus the 4 lost with the killed process
    links = done_links(data)
    assert len(links) == 40 and {count for _, _, count in links} == {1}
    shown = cli_json(capsys, data, "eval", "show", "1")
    review_ids = [i["review_id"] for i in shown["items"]]
    assert None not in review_ids and len(set(review_ids)) == 40
    history = cli_json(capsys, data, "history", "list", "--limit", "100")
    assert len(history) == 40 and {h["status"] for h in history} == {"done"}
    assert cli(capsys, data, "history", "verify")[0] == 0


def test_ctrl_c_exits_130_and_the_next_run_continues(capsys, tmp_path: Path) -> None:
    data = tmp_path / "d"
    labels, policy = big_set(tmp_path, 30), policy_file(tmp_path)
    with FakeOllama(token_rate=50_000, parallel=3) as fake:
        script = HangAfter(fake, normal=12, slots=3)
        proc = start_run(data, fake.url, policy, labels, 3)
        try:
            wait_for_items(proc, 12)
            assert script.hung.wait(60)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 130, err
        assert "Interrupted" in err and "Traceback" not in err and out == ""
        listed = cli_json(capsys, data, "eval", "list")
        assert [(r["done"], r["pending"], r["running"]) for r in listed] == [(12, 18, False)]

        code, out, err = cli(capsys, data, "eval", "run", "--policy", str(policy),
                             "--labels", str(labels), "--host", fake.url, "--json")  # fmt: skip
        assert code == 0, err
    result = json.loads(out)
    assert (result["run"], result["n"], result["done"]) == (1, 30, 30)
    assert len(done_links(data)) == 30
    assert len(cli_json(capsys, data, "history", "list", "--limit", "100")) == 30
