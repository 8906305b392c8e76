"""Policy loading, rule/section detection, lint, built-ins and resolution."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import pytest

from safeguard_desktop.core.policy import (
    Policy,
    PolicyError,
    builtin_policies,
    estimate_tokens,
    find_policies,
    find_policies_with_errors,
    lint,
    load_policy,
    parse_policy,
    resolve_policy,
)

# Our own plain-text policy, shaped like real-world ones: no front matter, ALL CAPS and
# emoji-prefixed section lines, rule ids at line starts, blank-line gaps, a label table.
PLAIN = """\
Rudeness Policy (#RC)
GOAL: Find rude comments. Classify each COMMENT as VALID (not rude) or INVALID (rude).

DEFINITIONS
Rude: a comment that insults or belittles the reader.

✅ Polite Content (RC0 – Civil or only critical)
Comments that stay civil, even when they criticise.
RC0.a Critique – “The second paragraph is unclear.”


RC0.b Thanks – “Cheers for the quick fix!”
 ✅ Output: VALID


🚫 Rude Content (RC2 – Clear rudeness)
Comments that insult the reader.
RC2.a Name-calling – “You are clueless.”
continues on a second line


RC2.b Dismissal – “Nobody asked you.”
 ❌ Output: INVALID

LABEL FORMAT
Depiction (D-RC#): presence of rudeness.
 | Example | Classification |
 |---------|----------------|
 | “You are clueless” | D-R2 |

AMBIGUITY
If unclear → RC0 and ask a colleague.
"""

GOOD_MD = """\
---
id: Tiny Test
title: Tiny test policy
version: 1.0
output: json
labels: {safe: OK, violation: FLAG}
escalate: [TT3]
effort: high
---

# Tiny test policy

## Instructions
Answer with 1 if the content violates this policy and 0 if it does not.

## Violates (1)
- TT2 Insults aimed at a person.
- TT3 Threats against a person.

## Does not violate (0)
- TT0 Criticism of ideas.

## Examples
"You fool" -> 1
"""


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _line(policy: Policy, n: int) -> str:
    return policy.text.split("\n")[n - 1]


# --- parsing -------------------------------------------------------------------------


def test_front_matter_fields_and_body(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, "tiny.md", GOOD_MD))
    assert policy.id == "tiny-test"
    assert policy.title == "Tiny test policy"
    assert policy.version == "1.0"
    assert policy.output == "json"
    assert policy.labels == ("OK", "FLAG")
    assert policy.escalate == ("TT3",)
    assert policy.effort == "high"
    assert policy.body.startswith("# Tiny test policy")
    assert "escalate:" not in policy.body
    assert policy.body_offset_lines == 10
    body_lines = policy.body.split("\n")
    assert body_lines[0] == _line(policy, 1 + policy.body_offset_lines)
    tt3 = policy.rule("TT3")
    assert tt3 is not None
    assert "TT3 Threats" in _line(policy, tt3.line)
    assert tt3.section == "Violates (1)"
    assert policy.source == tmp_path / "tiny.md"
    assert not policy.builtin


def test_plain_text_without_front_matter_is_valid(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, "Rude Comments.txt", PLAIN))
    assert policy.id == "rude-comments"
    assert policy.title == "Rudeness Policy (#RC)"
    assert policy.body == policy.text
    assert policy.body_offset_lines == 0
    assert policy.output is None and policy.version is None and policy.effort is None
    assert policy.escalate == ()


def test_plain_text_rules_lines_and_sections() -> None:
    policy = parse_policy(PLAIN.encode())
    found = [(r.id, r.line, r.section) for r in policy.rules]
    polite = "Polite Content (RC0 – Civil or only critical)"
    rude = "Rude Content (RC2 – Clear rudeness)"
    assert found == [
        ("RC0", 7, polite),
        ("RC0.a", 9, polite),
        ("RC0.b", 12, polite),
        ("RC2", 16, rude),
        ("RC2.a", 18, rude),
        ("RC2.b", 22, rude),
    ]
    # "D-RC#", "D-R2" and the mention "→ RC0" are not definitions.
    assert policy.rule("R2") is None
    rc2a = policy.rule("RC2.a")
    assert rc2a is not None
    assert rc2a.text == "RC2.a Name-calling – “You are clueless.”\ncontinues on a second line"
    titles = [(s.title, s.line) for s in policy.sections]
    assert titles == [
        ("DEFINITIONS", 4),
        (polite, 7),
        (rude, 16),
        ("LABEL FORMAT", 25),
        ("AMBIGUITY", 31),
    ]


def test_labels_detected_from_plain_text() -> None:
    assert parse_policy(PLAIN.encode()).labels == ("VALID", "INVALID")
    flipped = "Mark each post as SPAM (unwanted) or HAM (not spam).\nR1 Ads.\n"
    assert parse_policy(flipped.encode()).labels == ("HAM", "SPAM")
    assert parse_policy(b"Judge posts about cats.\nR1 Cat pictures.\n").labels is None


def test_rule_lookup_is_exact_then_case_insensitive() -> None:
    policy = parse_policy(PLAIN.encode())
    rule = policy.rule("rc2.b")
    assert rule is not None and rule.id == "RC2.b"
    assert policy.rule("RC9") is None


def test_markdown_heading_definitions_and_false_positives() -> None:
    text = """\
# Threats policy

## R1 — Direct threats
Threats to hurt a person.

## Allowed content (SP0, SP1)
- **V3.a** Jokes between friends.

I think OK is fine and HTTP2 is a protocol.
Rules R4 and R5 are mentioned mid-sentence.
R6 and R7 apply together.
UTF-8 text only; the ID-SP2 tag is internal.

```
## R9 not a heading inside a fence
R9 not a rule inside a fence
```
"""
    policy = parse_policy(text.encode())
    assert [r.id for r in policy.rules] == ["R1", "SP0", "SP1", "V3.a"]
    sections = {r.id: r.section for r in policy.rules}
    assert sections["R1"] == "R1 — Direct threats"
    assert sections["V3.a"] == "Allowed content (SP0, SP1)"
    assert [(s.title, s.level) for s in policy.sections] == [
        ("Threats policy", 1),
        ("R1 — Direct threats", 2),
        ("Allowed content (SP0, SP1)", 2),
    ]


def test_sha256_is_of_exact_bytes() -> None:
    data = PLAIN.encode()
    policy = parse_policy(data)
    assert policy.sha256 == hashlib.sha256(data).hexdigest()
    assert policy.short_sha == policy.sha256[:12]
    one_byte = parse_policy(data.replace(b"rude comments", b"rude Comments", 1))
    assert one_byte.sha256 != policy.sha256
    crlf = parse_policy(data.replace(b"\n", b"\r\n"))
    assert crlf.sha256 != policy.sha256
    # Same rules on the same lines whatever the line endings.
    assert [(r.id, r.line) for r in crlf.rules] == [(r.id, r.line) for r in policy.rules]


def test_crlf_front_matter_keeps_offsets() -> None:
    policy = parse_policy(GOOD_MD.replace("\n", "\r\n").encode())
    assert policy.output == "json"
    assert policy.body.startswith("# Tiny test policy\r\n")
    rule = policy.rule("TT0")
    assert rule is not None and "TT0 Criticism" in _line(policy, rule.line)


# --- errors --------------------------------------------------------------------------


def _error_for(tmp_path: Path, data: bytes | str, name: str = "bad.md") -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(_write(tmp_path, name, data))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "nope.md")
    with pytest.raises(PolicyError, match="is a folder"):
        load_policy(tmp_path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "is empty"),
        (b"  \n\n  ", "is empty"),
        (b"Policy\n\xff\xfebroken", "not valid UTF-8 (bad byte at offset 7)"),
        (b"Policy\x00\x01\x02", "looks binary"),
        ("Policy text".encode("utf-16"), "UTF-16"),
        (b"x" * (256 * 1024 + 1), "the limit is 256 KiB"),
        (b"---\nid: a\ntitle: [unclosed\n---\nR1 text\n", "invalid YAML front matter on line 3"),
        (b"---\nid: a\n  bad: indent\n---\nR1 text\n", "invalid YAML front matter on line 3"),
        (b"---\n- a\n- b\n---\nR1 text\n", "must be 'key: value' lines"),
        (b"---\noutput: xml\n---\nR1 text\n", "'output' must be one of binary, json"),
        (b"---\neffort: max\n---\nR1 text\n", "'effort' must be one of low, medium, high"),
        (b"---\nlabels: VALID\n---\nR1 text\n", "'labels' must look like"),
        (b"---\nid: a\nR1 text\n", "no closing '---' line"),
        (b"---\nid: a\n---\n\n\n", "no policy text"),
    ],
)
def test_error_messages(tmp_path: Path, data: bytes, expected: str) -> None:
    message = _error_for(tmp_path, data)
    assert expected in message
    assert "bad.md" in message


def test_error_carries_line_for_yaml(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(_write(tmp_path, "y.md", b"---\nid: a\ntitle: [x\n---\nR1\n"))
    assert info.value.line == 3


# --- states_output_format ------------------------------------------------------------


def test_states_output_format() -> None:
    assert parse_policy(PLAIN.encode()).states_output_format()
    assert parse_policy(GOOD_MD.encode()).states_output_format()
    json_policy = 'R1 Ads.\n\nRespond with only this JSON object:\n{"violation": 0 or 1}\n'
    assert parse_policy(json_policy.encode()).states_output_format()
    assert not parse_policy(b"# Ads\nR1 Ads for products.\nR2 Links.\n").states_output_format()


# --- lint ----------------------------------------------------------------------------

LINT_BASE = """\
## Instructions
Answer with 1 if the content violates this policy and 0 if it does not.

## Violates (1)
- AD2 Ads for products the reader did not ask for.

## Does not violate (0)
- AD0 Questions about products.

## Examples
"Buy now at shop.example" -> 1
"""


def _codes(text: str, *, severities: tuple[str, ...] = ("error", "warning")) -> list[str]:
    return [i.code for i in lint(parse_policy(text.encode())) if i.severity in severities]


def test_lint_base_only_warns_about_size() -> None:
    assert _codes(LINT_BASE) == ["size"]  # far below 250 tokens


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        (
            "## Violates (1)\n- AD2 Ads for products the reader did not ask for.\n",
            "",
            "missing-violates",
        ),
        ("## Does not violate (0)\n- AD0 Questions about products.\n", "", "missing-safe"),
        ('## Examples\n"Buy now at shop.example" -> 1\n', "", "missing-examples"),
        (
            "Answer with 1 if the content violates this policy and 0 if it does not.",
            "Read the content carefully.",
            "missing-output",
        ),
    ],
)
def test_lint_missing_parts(old: str, new: str, code: str) -> None:
    assert code not in _codes(LINT_BASE)
    assert code in _codes(LINT_BASE.replace(old, new))


def test_lint_front_matter_output_counts_as_output_instruction() -> None:
    text = LINT_BASE.replace(
        "Answer with 1 if the content violates this policy and 0 if it does not.", "Judge it."
    )
    assert "missing-output" in _codes(text)
    assert "missing-output" not in _codes("---\noutput: binary\n---\n" + text)


def test_lint_accepts_score_lines_and_label_sentences() -> None:
    text = "Label 1 = violates, 0 = does not.\nR1 Ads.\n\nExamples: none yet.\n"
    assert _codes(text) == ["size"]
    labelled = "Classify each post as VALID (no ads) or INVALID (ads).\nR1 Ads.\n"
    assert parse_policy(labelled.encode()).states_output_format()


def test_lint_duplicate_rule_names_both_lines() -> None:
    text = LINT_BASE + "- AD2 Again, by mistake.\n"
    issues = [i for i in lint(parse_policy(text.encode())) if i.code == "duplicate-rule"]
    assert len(issues) == 1
    assert issues[0].line == 12
    assert "lines 5 and 12" in issues[0].message


def test_lint_hedge_words_with_lines() -> None:
    text = LINT_BASE.replace(
        "- AD0 Questions about products.",
        "- AD0 Questions about products are usually fine.\n"
        "- AD1 Links might be ads, as appropriate.",
    )
    policy = parse_policy(("---\nid: x\n---\n" + text).encode())
    hedges = [(i.line, i.severity) for i in lint(policy) if i.code == "hedge-word"]
    assert hedges == [(11, "warning"), (12, "warning"), (12, "warning")]
    assert "usually" in _line(policy, 11)


def test_lint_ignores_hedges_inside_quoted_examples() -> None:
    text = LINT_BASE + '"You might like this deal" -> 1\n'
    assert "hedge-word" not in _codes(text)


def test_lint_no_rules_is_info() -> None:
    text = LINT_BASE.replace("AD2 ", "").replace("AD0 ", "")
    issues = {i.code: i.severity for i in lint(parse_policy(text.encode()))}
    assert issues["no-rules"] == "info"
    assert "no-rules" not in {i.code for i in lint(parse_policy(LINT_BASE.encode()))}


def _size(text: str) -> tuple[str, str]:
    issue = next(i for i in lint(parse_policy(text.encode())) if i.code == "size")
    return issue.severity, issue.message


def test_lint_size_levels() -> None:
    filler = "- AD2.x Content that repeats one sales message to many readers at once.\n"
    assert _size(LINT_BASE)[0] == "warning"
    sweet = LINT_BASE + filler * 28
    assert 400 <= estimate_tokens(sweet) <= 600
    severity, message = _size(sweet)
    assert severity == "info" and "inside" in message
    assert _size(LINT_BASE + filler * 100)[0] == "warning"
    assert _size(LINT_BASE + filler * 600)[0] == "error"


def test_estimate_tokens_is_plausible_for_english() -> None:
    text = "The moderator reads the message and decides whether it breaks the rule. " * 20
    words = len(text.split())
    assert words <= estimate_tokens(text) <= 2 * words
    assert estimate_tokens("") == 0


# --- built-ins -----------------------------------------------------------------------

BUILTIN_IDS = {
    "spam-scams",
    "harassment",
    "hate-speech",
    "self-harm",
    "violent-threats",
    "personal-info",
    "prompt-injection",
}


def test_builtin_policies_present_and_sorted() -> None:
    policies = builtin_policies()
    ids = [p.id for p in policies]
    assert ids == sorted(ids)
    assert set(ids) >= BUILTIN_IDS
    assert all(p.builtin for p in policies)


def test_a_builtin_named_by_id_is_read_from_its_own_file_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`resolve_policy` parses only `<id>.md` before the built-ins are all parsed, and
    gives what the whole list would (their ids are unique, each file named by its id)."""
    from safeguard_desktop.core import policy as module

    policies = builtin_policies()
    assert len({p.id for p in policies}) == len(policies)
    assert all(p.source is not None and p.source.name == f"{p.id}.md" for p in policies)
    monkeypatch.setattr(
        module, "_builtin_cache", functools.cache(module._builtin_cache.__wrapped__)
    )
    parsed: list[str] = []
    real = module.parse_policy

    def counted(data: bytes, **kwargs: object) -> object:
        policy = real(data, **kwargs)  # type: ignore[arg-type]
        parsed.append(policy.id)
        return policy

    monkeypatch.setattr(module, "parse_policy", counted)
    for expected in policies:
        parsed.clear()
        assert resolve_policy(expected.id) == expected
        assert parsed == [expected.id]


@pytest.mark.parametrize("policy_id", sorted(BUILTIN_IDS))
def test_builtin_policy_lints_clean(policy_id: str) -> None:
    policy = resolve_policy(policy_id)
    problems = [i for i in lint(policy) if i.severity in ("error", "warning")]
    assert problems == []
    assert len(policy.rules) >= 6
    assert any(s.title.startswith("Examples") for s in policy.sections)
    assert policy.body.count("Content:") >= 4
    assert policy.output == "json-rationale"
    assert policy.version == "1.0" and policy.effort == "medium"
    assert policy.states_output_format()
    assert '"policy_category"' in policy.body and '"rationale"' in policy.body
    assert policy.escalate and all(policy.rule(x) is not None for x in policy.escalate)
    # Both sides of the policy carry rule ids.
    assert any(r.id[-1] == "0" for r in policy.rules)
    assert any(r.id[-1] in "234" for r in policy.rules)


def test_self_harm_escalates_to_crisis_team() -> None:
    policy = resolve_policy("self-harm")
    assert policy.escalate == ("SH3",)
    assert "crisis team" in policy.body


# --- resolution ----------------------------------------------------------------------


def test_resolve_by_id_path_and_folder(tmp_path: Path) -> None:
    assert resolve_policy("harassment").id == "harassment"
    assert resolve_policy("Hate-Speech").id == "hate-speech"
    path = _write(tmp_path, "rude.txt", PLAIN)
    by_path = resolve_policy(str(path))
    assert by_path.source == path and not by_path.builtin
    folder = tmp_path / "mine"
    folder.mkdir()
    _write(folder, "house-rules.md", GOOD_MD.replace("id: Tiny Test", "id: house-rules"))
    assert resolve_policy("house-rules", folders=[folder]).title == "Tiny test policy"


def test_resolve_unknown_id() -> None:
    with pytest.raises(PolicyError) as info:
        resolve_policy("no-such-policy")
    assert str(info.value) == (
        "Unknown policy 'no-such-policy'. Run `safeguard-desktop policies list` to see the "
        "built-in ids, or pass a path to a .md/.txt file."
    )


def test_resolve_missing_path_says_not_found(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not found"):
        resolve_policy(str(tmp_path / "gone.md"))


def test_find_policies_skips_unreadable_files(tmp_path: Path) -> None:
    _write(tmp_path, "b.md", GOOD_MD)
    _write(tmp_path, "a.txt", PLAIN)
    _write(tmp_path, "broken.md", b"\x00\x01")
    _write(tmp_path, "notes.json", "{}")
    policies, errors = find_policies_with_errors(tmp_path)
    assert [p.source.name for p in policies if p.source] == ["a.txt", "b.md"]
    assert [(p.name, "binary" in msg) for p, msg in errors] == [("broken.md", True)]
    assert [p.id for p in find_policies(tmp_path)] == ["a", "tiny-test"]
    assert find_policies_with_errors(tmp_path / "missing")[0] == []
