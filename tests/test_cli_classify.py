"""`safeguard-desktop classify` against the fake Ollama, as a user runs it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main
from tests.fake_ollama import FakeOllama, Scenario

SPAM_LIKE = """Promo Policy (#PR)
GOAL: Classify each EXAMPLE as VALID (no promotion) or INVALID (promotion) using this policy.

DEFINITIONS
Promotion: unsolicited advertising.

ALLOWED (PR0)
PR0.a Questions about an order.
Output: VALID

VIOLATING (PR2)
PR2.a Cold promotion of a product.
Output: INVALID

EXAMPLES
"Buy my course" -> INVALID
"""


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(token_rate=20000) as server:
        yield server


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"
    paths.set_data_dir(None)


def run(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(tmp_path / "data"), "classify", *args])
    out, err = capsys.readouterr()
    return code, out, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_json_violation_with_provenance(fake: FakeOllama, capsys, tmp_path) -> None:
    code, out, err = run(
        capsys,
        tmp_path,
        "--policy",
        "harassment",
        "--text",
        "you are worthless",
        "--host",
        fake.url,
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["verdict"]["label"] == "violation" and data["verdict"]["violation"] is True
    assert data["verdict"]["rule_ids"] and data["verdict"]["rationale"]
    assert data["policy"]["id"] == "harassment" and len(data["policy"]["sha256"]) == 64
    assert data["model"] == "gpt-oss-safeguard:20b" and data["effort"] == "medium"
    assert "worthless" in data["reasoning"]
    assert data["stats"]["eval_count"] > 0 and isinstance(data["review_id"], int)
    assert set(data) >= {"verdict", "reasoning", "answer", "policy", "model", "effort", "stats"}


def test_request_follows_the_usage_guide(fake: FakeOllama, capsys, tmp_path) -> None:
    code, _, _ = run(
        capsys,
        tmp_path,
        "--policy",
        "self-harm",
        "--text",
        "hello",
        "--host",
        fake.url,
        "--json",
        "--effort",
        "low",
    )
    assert code == 0
    chat = next(r for r in fake.requests if r.path == "/api/chat")
    assert chat.json["think"] == "low"
    assert chat.json["options"]["num_ctx"] >= 8192
    assert "seed" in chat.json["options"] and "temperature" in chat.json["options"]
    system, user = chat.json["messages"]
    assert system["role"] == "system" and not system["content"].startswith("---")
    assert user == {"role": "user", "content": "hello"}


def test_safe_verdict_and_label_word_policy(fake: FakeOllama, capsys, tmp_path) -> None:
    policy = tmp_path / "promo.txt"
    policy.write_text(SPAM_LIKE, encoding="utf-8")
    code, out, _ = run(
        capsys,
        tmp_path,
        "--policy",
        str(policy),
        "--text",
        "Where is my parcel?",
        "--host",
        fake.url,
        "--json",
    )
    assert code == 0
    assert json.loads(out)["verdict"]["label"] == "safe"
    fake.script(Scenario(thinking="PR2.a applies.", content="INVALID (PR2.a)"))
    code, out, _ = run(
        capsys,
        tmp_path,
        "--policy",
        str(policy),
        "--text",
        "Buy my course",
        "--host",
        fake.url,
        "--json",
    )
    verdict = json.loads(out)["verdict"]
    assert code == 0 and verdict["label"] == "violation" and "PR2.a" in verdict["rule_ids"]


@pytest.mark.parametrize(
    ("scenario", "label"),
    [
        (Scenario(thinking="hmm", content="I am not sure what to say."), "unparsed"),
        (
            Scenario(thinking="long " * 50, content='{"violation": 1, "rule', done_reason="length"),
            "incomplete",
        ),
        (Scenario(thinking="done", content=""), "unparsed"),
    ],
)
def test_unreadable_answers_exit_3_and_keep_raw(fake, capsys, tmp_path, scenario, label) -> None:
    fake.script(scenario)
    code, out, err = run(
        capsys, tmp_path, "--policy", "harassment", "--text", "x y z", "--host", fake.url, "--json"
    )
    data = json.loads(out)
    assert code == 3
    assert data["verdict"]["label"] == label and data["verdict"]["violation"] is None
    assert data["answer"] == scenario.content
    assert err.strip() and "Traceback" not in err


@pytest.mark.parametrize(
    ("scenario", "needle"),
    [
        (
            Scenario(
                thinking="a b c d e f g h", error_after=3, error_message="CUDA error: out of memory"
            ),
            "out of memory",
        ),
        (Scenario(thinking="a b c d e f g h", drop_after=3), "connection to Ollama was lost"),
        (Scenario(status=503, error_message="server busy, please try again."), "busy"),
    ],
)
def test_server_failures_exit_1_with_one_line(fake, capsys, tmp_path, scenario, needle) -> None:
    fake.script(scenario)
    code, _, err = run(
        capsys, tmp_path, "--policy", "harassment", "--text", "hello", "--host", fake.url
    )
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_server_not_running(capsys, tmp_path) -> None:
    code, _, err = run(
        capsys,
        tmp_path,
        "--policy",
        "harassment",
        "--text",
        "hello",
        "--host",
        f"127.0.0.1:{free_port()}",
        "--json",
    )
    assert code == 1 and "Ollama is not running" in err


def test_model_missing_says_how_to_get_it(fake, capsys, tmp_path) -> None:
    code, _, err = run(
        capsys,
        tmp_path,
        "--policy",
        "harassment",
        "--text",
        "hello",
        "--host",
        fake.url,
        "--model",
        "gpt-oss-safeguard:120b",
    )
    assert code == 1 and "models pull gpt-oss-safeguard:120b" in err and "import" in err


def test_timeout_when_server_hangs(fake, capsys, tmp_path) -> None:
    settings = tmp_path / "data" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"request_timeout": 5.0}), encoding="utf-8")
    fake.script(Scenario(hang=True))
    code, _, err = run(
        capsys, tmp_path, "--policy", "harassment", "--text", "hi", "--host", fake.url
    )
    assert code == 1 and "sent nothing for 5 s" in err


def test_host_from_environment(fake, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", fake.url.removeprefix("http://"))
    code, out, _ = run(capsys, tmp_path, "--policy", "harassment", "--text", "hi", "--json")
    assert code == 0 and json.loads(out)["verdict"]["label"] == "safe"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--policy", "no-such-policy", "--text", "hi"], "Unknown policy"),
        (["--policy", "harassment", "--text", "   "], "empty"),
    ],
)
def test_usage_errors_exit_2(fake, capsys, tmp_path, args, needle) -> None:
    code, out, err = run(capsys, tmp_path, *args, "--host", fake.url)
    assert code == 2 and needle.lower() in err.lower() and out == ""
    assert not [r for r in fake.requests if r.path == "/api/chat"]


def test_binary_file_refused(fake, capsys, tmp_path) -> None:
    blob = tmp_path / "photo.png"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    code, _, err = run(
        capsys, tmp_path, "--policy", "harassment", "--file", str(blob), "--host", fake.url
    )
    assert code == 2 and "binary" in err.lower()


def test_file_with_many_items_needs_item(fake, capsys, tmp_path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text('{"text": "hello"}\n{"text": "you idiot"}\n', encoding="utf-8")
    code, _, err = run(
        capsys, tmp_path, "--policy", "harassment", "--file", str(f), "--host", fake.url
    )
    assert code == 2 and "--item" in err
    code, out, _ = run(
        capsys,
        tmp_path,
        "--policy",
        "harassment",
        "--file",
        str(f),
        "--item",
        "2",
        "--host",
        fake.url,
        "--json",
    )
    assert code == 0 and json.loads(out)["verdict"]["label"] == "violation"


def test_readable_summary_escapes_terminal_codes(fake, capsys, tmp_path) -> None:
    fake.script(Scenario(thinking="The text has \x1b[2J in it.", content="0"))
    code, out, _ = run(
        capsys, tmp_path, "--policy", "harassment", "--text", "hi \x1b[31m", "--host", fake.url
    )
    assert code == 0 and "SAFE" in out and "\x1b[2J" not in out and "\\x1b[2J" in out


def test_no_history_opt_out(fake, capsys, tmp_path) -> None:
    code, out, _ = run(
        capsys,
        tmp_path,
        "--policy",
        "harassment",
        "--text",
        "hi",
        "--host",
        fake.url,
        "--json",
        "--no-history",
    )
    assert code == 0 and "review_id" not in json.loads(out)


def test_global_host_option_reaches_the_subcommand(fake, capsys, tmp_path) -> None:
    code = main(
        [
            "--data-dir",
            str(tmp_path / "data"),
            "--host",
            fake.url,
            "classify",
            "--policy",
            "harassment",
            "--text",
            "hi",
            "--json",
        ]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["verdict"]["label"] == "safe"


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_input_is_refused_not_read_forever(fake, capsys, tmp_path) -> None:
    code, _, err = run(
        capsys, tmp_path, "--policy", "harassment", "--file", "/dev/zero", "--host", fake.url
    )
    assert code == 2 and "not a regular file" in err
    code, _, err = run(
        capsys, tmp_path, "--policy", "/dev/zero", "--text", "hi", "--host", fake.url
    )
    assert code == 2 and "not a regular file" in err


def test_bad_option_values_are_usage_errors(fake, capsys, tmp_path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, tmp_path, "--policy", "harassment", "--text", "hi", "--num-ctx", "5")
    assert exit_info.value.code == 2
    assert "2048" in capsys.readouterr().err


def test_server_text_cannot_drive_the_terminal(capsys, tmp_path) -> None:
    with FakeOllama(version="\x1b]0;pwned\x070.12.10") as evil:
        evil.script(Scenario(status=500, error_message="boom \x1b[2J\x9b31m"))
        code, out, err = run(
            capsys, tmp_path, "--policy", "harassment", "--text", "hi", "--host", evil.url
        )
    assert code == 1 and "\\x1b[2J" in err
    assert not any(ch in out + err for ch in "\x1b\x07\x9b")


def test_unusable_data_folder_is_one_line(capsys, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    code = main(["--data-dir", str(blocker / "sub"), "policies", "list"])
    err = capsys.readouterr().err
    assert code == 2 and "--data-dir" in err and "Traceback" not in err


def test_a_web_server_that_is_not_ollama_gives_one_line(capsys, tmp_path) -> None:
    import threading
    from http.server import HTTPServer, SimpleHTTPRequestHandler

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        code, _, err = run(
            capsys,
            tmp_path,
            "--policy",
            "harassment",
            "--text",
            "hi",
            "--host",
            f"127.0.0.1:{server.server_address[1]}",
        )
    finally:
        server.shutdown()
        server.server_close()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "HTTP 501" in lines[0] and "server log" in lines[0]
