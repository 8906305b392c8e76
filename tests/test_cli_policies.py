"""`safeguard-desktop policies list | show | lint`, run in-process as a user runs them.

Every expectation below is worked out from core/policy.py and core/policy_lint.py by
hand (line numbers, token estimates = UTF-8 bytes / 4 rounded up), not copied from output.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main

BUILTIN_IDS = [
    "harassment",
    "hate-speech",
    "personal-info",
    "prompt-injection",
    "self-harm",
    "spam-scams",
    "violent-threats",
]
LIST_KEYS = {"id", "title", "version", "sha256", "builtin", "source", "rules", "lint", "shadowed"}

# File lines: 1-8 front matter, 9 "# Team rules", 11 Violates heading, 12-13 TR1.*,
# 15 Does not violate heading, 16 TR0.a, 18 Examples heading, 19 the example.
TEAM = """---
id: team-rules
title: Team rules
version: "2"
output: binary
escalate: [TR1]
effort: high
---
# Team rules

## Violates (1)
- TR1.a Insults aimed at a member.
- TR1.b Threats against a member.

## Does not violate (0)
- TR0.a Criticism of ideas.

## Examples
Content: "you are an idiot" -> 1
"""

# No headings, no rule ids, no output format; "might" is a hedge on line 2.
# 60 + 36 bytes = 96 bytes -> 24 tokens.
PROSE = (
    "Please be kind to each other and do not post anything rude.\n"
    "Moderators might delete such posts.\n"
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A stray run lands in `fallback` (never the real user folders); logging is restored."""
    monkeypatch.setenv("SAFEGUARD_DATA_DIR", str(tmp_path / "fallback"))
    logger = logging.getLogger("safeguard")
    before = list(logger.handlers)
    yield
    paths.set_data_dir(None)
    for handler in logger.handlers[:]:
        if handler not in before:
            logger.removeHandler(handler)
            handler.close()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def folder(data: Path) -> Path:
    """The default user policy folder: the data folder's policies/."""
    path = data / "policies"
    path.mkdir(parents=True)
    return path


def run(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(data), "policies", *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, Any, str]:
    code, out, err = run(capsys, data, *args, "--json")
    return code, json.loads(out), err


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def configure_folder(data: Path, policy_folder: Path | str) -> None:
    data.mkdir(parents=True, exist_ok=True)
    (data / "settings.json").write_text(
        json.dumps({"policy_folder": str(policy_folder)}), encoding="utf-8"
    )


def row_of(out: str, policy_id: str) -> list[str]:
    return [line for line in out.splitlines() if line.split()[:1] == [policy_id]]


# -- list ----------------------------------------------------------------------------


def test_list_json_has_the_builtin_policies(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    code, rows, err = run_json(capsys, data, "list")
    assert code == 0 and err == ""
    assert [r["id"] for r in rows] == BUILTIN_IDS  # the data folder's policies/ is empty
    for row in rows:
        assert set(row) == LIST_KEYS
        assert row["builtin"] is True and row["shadowed"] is False
        assert row["version"] == "1.0" and row["title"]
        assert row["rules"] > 0 and row["lint"] == "clean"
        source = Path(row["source"])
        assert source.name == f"{row['id']}.md"
        assert row["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_list_text_has_the_builtin_policies(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    code, out, err = run(capsys, data, "list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == BUILTIN_IDS
    harassment = row_of(out, "harassment")[0]
    assert harassment.split()[1:3] == ["1.0", "clean"]
    assert "Harassment and bullying" in harassment and harassment.endswith("(built-in)")


def test_list_finds_the_user_folder_policies(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path
) -> None:
    team = write(folder, "team.md", TEAM)
    prose = write(folder, "prose.txt", PROSE)
    write(folder, "notes.rtf", PROSE)  # neither .md nor .txt: not a policy
    code, rows, err = run_json(capsys, data, "list")
    assert code == 0 and err == ""
    mine = {r["id"]: r for r in rows if not r["builtin"]}
    assert set(mine) == {"team-rules", "prose"}  # front matter id, else the file name
    assert mine["team-rules"] == {
        "id": "team-rules",
        "title": "Team rules",
        "version": "2",
        "sha256": hashlib.sha256(team.read_bytes()).hexdigest(),
        "builtin": False,
        "source": str(team),
        "rules": 3,  # TR1.a, TR1.b, TR0.a
        "lint": "warnings",  # only the size: far below 250 tokens
        "shadowed": False,
    }
    assert mine["prose"]["source"] == str(prose)
    assert mine["prose"]["title"] == ("Please be kind to each other and do not post anything rude.")
    assert mine["prose"]["rules"] == 0 and mine["prose"]["version"] is None
    # Built-ins first, then the user folder sorted by id.
    assert [r["id"] for r in rows] == [*BUILTIN_IDS, "prose", "team-rules"]

    code, out, err = run(capsys, data, "list")
    assert code == 0 and err == ""
    (line,) = row_of(out, "team-rules")
    assert line.split()[1:3] == ["2", "warnings"]
    assert line.endswith(f"Team rules  ({team})")
    (line,) = row_of(out, "prose")
    assert line.split()[1:3] == ["-", "warnings"]  # no version


def test_list_names_a_broken_file_on_stderr_and_lists_the_rest(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path
) -> None:
    write(folder, "team.md", TEAM)
    (folder / "broken.md").write_bytes(b"# Broken\x00\x01binary")
    (folder / "latin.txt").write_bytes(b"caf\xe9 rules\n")
    write(folder, "open.md", "---\nid: open\n# Never closed\n")
    code, rows, err = run_json(capsys, data, "list")
    assert code == 0
    assert [r["id"] for r in rows] == [*BUILTIN_IDS, "team-rules"]
    lines = err.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("safeguard-desktop: warning: skipped ") for line in lines)
    assert f"skipped {folder / 'broken.md'}: " in err
    assert "looks binary (it contains NUL bytes)" in err
    assert f"skipped {folder / 'latin.txt'}: " in err
    assert "is not valid UTF-8 (bad byte at offset 3)" in err
    assert f"skipped {folder / 'open.md'}: " in err
    assert "has no closing '---' line" in err

    code, out, err_text = run(capsys, data, "list")
    assert code == 0 and err_text == err
    assert len(row_of(out, "team-rules")) == 1 and "broken.md" not in out


def test_list_marks_a_shadowed_id(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path
) -> None:
    mine = write(folder, "my-harassment.md", "---\nid: harassment\n---\n# My harassment\n")
    first = write(folder, "a.md", TEAM)
    second = write(folder, "b.md", TEAM.replace("title: Team rules", "title: Team rules B"))
    code, rows, err = run_json(capsys, data, "list")
    assert code == 0 and err == ""
    flags = [(r["id"], r["source"], r["shadowed"]) for r in rows if r["id"] == "harassment"]
    assert flags == [
        ("harassment", rows[0]["source"], False),  # the built-in wins
        ("harassment", str(mine), True),
    ]
    flags = [(r["source"], r["shadowed"]) for r in rows if r["id"] == "team-rules"]
    assert flags == [(str(first), False), (str(second), True)]  # same folder: by file name

    code, out, err = run(capsys, data, "list")
    assert code == 0
    builtin, user = row_of(out, "harassment")
    assert "its id is taken" not in builtin
    assert f"({mine}; its id is taken by a policy above, so refer to it by path)" in user
    a, b = row_of(out, "team-rules")
    assert "its id is taken" not in a and "its id is taken" in b


def test_list_uses_the_policy_folder_setting(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path, tmp_path: Path
) -> None:
    write(folder, "ignored.md", TEAM.replace("id: team-rules", "id: ignored"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(elsewhere, "team.md", TEAM)
    configure_folder(data, elsewhere)
    code, rows, err = run_json(capsys, data, "list")
    assert code == 0 and err == ""
    assert [r["id"] for r in rows if not r["builtin"]] == ["team-rules"]


def test_list_warns_when_the_policy_folder_setting_is_not_a_folder(
    capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-folder"
    configure_folder(data, missing)
    code, out, err = run(capsys, data, "list")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == BUILTIN_IDS
    assert err == (
        f"safeguard-desktop: warning: your policy folder {missing} (setting policy_folder) is "
        "not an existing folder; only the built-in policies are listed. Create it or change "
        "the setting.\n"
    )
    a_file = write(tmp_path, "file.md", TEAM)
    configure_folder(data, a_file)
    code, rows, err = run_json(capsys, data, "list")
    assert code == 0 and [r["id"] for r in rows] == BUILTIN_IDS
    assert f"your policy folder {a_file} (setting policy_folder) is not an existing" in err


def test_list_warns_when_the_policy_folder_cannot_be_listed(
    capsys: pytest.CaptureFixture[str],
    data: Path,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # chmod cannot lock out root (CI containers), so the refusal is simulated.
    write(folder, "team.md", TEAM)
    iterdir = Path.iterdir

    def refuse(self: Path) -> Iterator[Path]:
        if self == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(Path, "iterdir", refuse)
    code, out, err = run(capsys, data, "list")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == BUILTIN_IDS
    assert err == (
        f"safeguard-desktop: warning: Cannot list policy folder {folder} (Permission denied).\n"
    )


def test_list_keeps_control_characters_off_the_terminal(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path
) -> None:
    write(
        folder,
        "evil.md",
        '---\ntitle: "\\e]0;pwned\\a\\e[2JTitle\\nsecond line"\nversion: "\\e[31m9"\n---\n'
        "# Evil\n\x1b[2J body\n",
    )
    code, out, err = run(capsys, data, "list")
    assert code == 0 and err == ""
    assert "\x1b" not in out and "\x07" not in out
    (line,) = row_of(out, "evil")
    assert "\\x1b]0;pwned\\x07\\x1b[2JTitle second line" in line  # one line, controls shown
    assert line.split()[1] == "\\x1b[31m9"

    code, rows, _ = run_json(capsys, data, "list")
    (row,) = [r for r in rows if r["id"] == "evil"]
    assert row["title"] == "\x1b]0;pwned\x07\x1b[2JTitle\nsecond line"  # JSON keeps the value


# -- show ----------------------------------------------------------------------------


def test_show_text_has_the_policy_and_its_rule_ids_with_lines(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path
) -> None:
    write(folder, "team.md", TEAM)
    code, out, err = run(capsys, data, "show", "team-rules")
    assert code == 0 and err == ""
    text, rules = out.split("\n\nRules:\n")
    assert text + "\n" == TEAM  # the file as written, one blank line, then the rules
    assert [line.split() for line in rules.splitlines()] == [
        ["TR1.a", "line", "12", "Violates", "(1)"],
        ["TR1.b", "line", "13", "Violates", "(1)"],
        ["TR0.a", "line", "16", "Does", "not", "violate", "(0)"],
    ]


def test_show_json_fields(capsys: pytest.CaptureFixture[str], data: Path, folder: Path) -> None:
    team = write(folder, "team.md", TEAM)
    code, doc, err = run_json(capsys, data, "show", "team-rules")
    assert code == 0 and err == ""
    assert doc == {
        "id": "team-rules",
        "title": "Team rules",
        "version": "2",
        "sha256": hashlib.sha256(TEAM.encode("utf-8")).hexdigest(),
        "builtin": False,
        "source": str(team),
        "output": "binary",
        "labels": None,
        "escalate": ["TR1"],
        "effort": "high",
        "text": TEAM,
        "rules": [
            {
                "id": "TR1.a",
                "line": 12,
                "section": "Violates (1)",
                "text": "TR1.a Insults aimed at a member.",
            },
            {
                "id": "TR1.b",
                "line": 13,
                "section": "Violates (1)",
                "text": "TR1.b Threats against a member.",
            },
            {
                "id": "TR0.a",
                "line": 16,
                "section": "Does not violate (0)",
                "text": "TR0.a Criticism of ideas.",
            },
        ],
    }


def test_show_builtin_by_id(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    code, doc, err = run_json(capsys, data, "show", "harassment")
    assert code == 0 and err == ""
    assert doc["builtin"] is True and doc["title"] == "Harassment and bullying"
    assert doc["escalate"] == ["HB3"] and doc["output"] == "json-rationale"
    assert {"HB2.a", "HB3.a", "HB0.a"} <= {r["id"] for r in doc["rules"]}
    # Ids are matched like the review does: any case.
    code, again, _ = run_json(capsys, data, "show", "Harassment")
    assert code == 0 and again["sha256"] == doc["sha256"]


def test_show_by_path_even_when_the_id_is_shadowed(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path, tmp_path: Path
) -> None:
    mine = write(folder, "my-harassment.md", "---\nid: harassment\n---\n# Mine\nHB9 Mine.\n")
    code, doc, _ = run_json(capsys, data, "show", "harassment")
    assert code == 0 and doc["builtin"] is True  # the id means the built-in
    code, doc, err = run_json(capsys, data, "show", str(mine))
    assert code == 0 and err == ""
    assert doc["builtin"] is False and doc["source"] == str(mine)
    assert [(r["id"], r["line"]) for r in doc["rules"]] == [("HB9", 5)]
    # A file outside the policy folder, by path.
    other = write(tmp_path, "other.txt", PROSE)
    code, doc, _ = run_json(capsys, data, "show", str(other))
    assert code == 0 and doc["id"] == "other" and doc["text"] == PROSE


def test_show_says_when_there_are_no_rule_ids(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path
) -> None:
    write(folder, "prose.txt", PROSE)
    code, out, err = run(capsys, data, "show", "prose")
    assert code == 0 and err == ""
    assert out == PROSE + "\nRules: none (no rule ids such as HS2.a found).\n"
    code, doc, _ = run_json(capsys, data, "show", "prose")
    assert code == 0 and doc["rules"] == []


def test_show_unknown_id_lists_the_available_ids(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path
) -> None:
    write(folder, "team.md", TEAM)
    code, out, err = run(capsys, data, "show", "no-such-policy")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("safeguard-desktop: Unknown policy 'no-such-policy'.")
    assert "safeguard-desktop policies list" in err
    assert err.endswith(f"Available ids: {', '.join(BUILTIN_IDS)}, team-rules.\n")


def test_show_unknown_id_names_a_policy_folder_setting_that_is_not_a_folder(
    capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "gone"
    configure_folder(data, missing)
    code, out, err = run(capsys, data, "show", "team-rules")
    assert code == 2 and out == ""
    assert f"Your policy folder {missing} (setting policy_folder) is not an existing" in err
    assert err.endswith(f"Available ids: {', '.join(BUILTIN_IDS)}.\n")


def test_show_missing_path_exits_2(
    capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.md"
    code, out, err = run(capsys, data, "show", str(missing))
    assert code == 2 and out == ""
    assert err.startswith(f"safeguard-desktop: Policy file not found: {missing}.")


def test_show_keeps_control_characters_off_the_terminal(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path
) -> None:
    write(folder, "evil.md", "# Evil\x1b[2J part\nEV1 \x1b]52;c;aGk=\x07 clipboard\n")
    code, out, err = run(capsys, data, "show", "evil")
    assert code == 0 and err == ""
    assert "\x1b" not in out and "\x07" not in out
    assert "EV1 \\x1b]52;c;aGk=\\x07 clipboard" in out
    assert out.splitlines()[-1].split() == ["EV1", "line", "2", "Evil\\x1b[2J", "part"]


# -- lint ----------------------------------------------------------------------------


def test_lint_builtin_has_no_errors_exit_0(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    code, out, err = run(capsys, data, "lint", "harassment")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "Policy harassment (built-in)"
    # A clean policy: at most the informational size note.
    assert all(line.split()[0] == "info" for line in lines[1:])


def test_lint_prose_without_structure_gets_findings_not_a_crash(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path
) -> None:
    prose = write(folder, "prose.txt", PROSE)
    code, findings, err = run_json(capsys, data, "lint", "prose")
    assert code == 0 and err == ""  # warnings are advice
    assert [(f["code"], f["severity"], f["line"]) for f in findings] == [
        ("missing-violates", "warning", None),
        ("missing-safe", "warning", None),
        ("missing-examples", "warning", None),
        ("missing-output", "warning", None),
        ("no-rules", "info", None),
        ("hedge-word", "warning", 2),
        ("size", "warning", None),
    ]
    assert all(set(f) == {"code", "severity", "line", "message"} for f in findings)
    by_code = {f["code"]: f["message"] for f in findings}
    assert (
        by_code["hedge-word"] == "Replace the hedge 'might' with an exact condition, or delete it."
    )
    assert by_code["size"] == (
        "The policy is only about 24 tokens; add definitions, rules and examples (aim for 400-600)."
    )

    code, out, err = run(capsys, data, "lint", str(prose))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"Policy prose ({prose})"
    assert [line.split()[:2] for line in lines[1:]] == [
        ["warning", "missing-violates"],
        ["warning", "missing-safe"],
        ["warning", "missing-examples"],
        ["warning", "missing-output"],
        ["info", "no-rules"],
        ["warning", "hedge-word"],
        ["warning", "size"],
    ]
    assert "line 2: Replace the hedge 'might'" in lines[6]


def test_lint_structured_policy_warns_about_size_and_duplicates(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path
) -> None:
    write(folder, "team.md", TEAM.replace("- TR0.a", "- TR1.a"))  # TR1.a again on line 16
    code, findings, err = run_json(capsys, data, "lint", "team-rules")
    assert code == 0 and err == ""
    assert [(f["code"], f["line"]) for f in findings] == [("duplicate-rule", 16), ("size", None)]
    assert findings[0]["message"] == (
        "Rule id TR1.a is defined on lines 12 and 16; give each rule its own id."
    )


def test_lint_errors_exit_1(capsys: pytest.CaptureFixture[str], data: Path, folder: Path) -> None:
    # 8 + 45,000 bytes -> 11,252 tokens: past the ~10,000 limit, an error.
    write(folder, "huge.md", "# Huge\n\n" + "spam " * 9_000)
    code, findings, err = run_json(capsys, data, "lint", "huge")
    assert code == 1 and err == ""
    (error,) = [f for f in findings if f["severity"] == "error"]
    assert error == {
        "code": "size",
        "severity": "error",
        "line": None,
        "message": "The policy is about 11,252 tokens, past the model's ~10,000 limit; "
        "split it into several policies.",
    }
    code, out, _ = run(capsys, data, "lint", "huge")
    assert code == 1
    assert any(line.split()[:2] == ["error", "size"] for line in out.splitlines())

    code, rows, _ = run_json(capsys, data, "list")
    assert [r["lint"] for r in rows if r["id"] == "huge"] == ["errors"]


def test_lint_shadowed_id_lints_what_a_review_would_use(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path
) -> None:
    mine = write(folder, "my-harassment.md", "---\nid: harassment\n---\n" + PROSE)
    code, out, _ = run(capsys, data, "lint", "harassment")
    assert code == 0 and out.splitlines()[0] == "Policy harassment (built-in)"
    code, out, _ = run(capsys, data, "lint", str(mine))
    assert code == 0 and out.splitlines()[0] == f"Policy harassment ({mine})"
    assert "missing-violates" in out


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"# Policy\x00\x00\x01\x02", "looks binary (it contains NUL bytes)"),
        (b"caf\xe9 rules\n", "is not valid UTF-8 (bad byte at offset 3); save it as UTF-8"),
        (b"\xff\xfe#\x00 \x00", "is UTF-16 text; save it as UTF-8"),
        (b"  \n\n", "is empty"),
    ],
    ids=["binary", "latin-1", "utf-16", "empty"],
)
def test_lint_unreadable_file_exit_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], data: Path, folder: Path, content: bytes, needle: str
) -> None:
    path = folder / "bad.md"
    path.write_bytes(content)
    code, out, err = run(capsys, data, "lint", str(path))
    assert code == 2 and out == ""
    assert err.startswith("safeguard-desktop: Policy file 'bad.md' ")
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    # By id, the folder's unreadable file is named rather than "Unknown policy".
    code, out, err = run(capsys, data, "lint", "bad")
    assert code == 2 and out == ""
    assert needle in err and f"(file {path})" in err and "Unknown policy" not in err


def test_lint_missing_file_or_unknown_id_exit_2(
    capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path
) -> None:
    code, out, err = run(capsys, data, "lint", str(tmp_path / "nowhere.md"))
    assert code == 2 and out == "" and "Policy file not found" in err
    code, out, err = run(capsys, data, "lint", "nowhere")
    assert code == 2 and out == ""
    assert "Unknown policy 'nowhere'" in err and "Available ids: harassment, " in err
    code, out, err = run(capsys, data, "lint", str(tmp_path))
    assert code == 2 and out == "" and "is a folder, not a policy file" in err
