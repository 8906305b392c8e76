"""Policies: load a Markdown or plain-text file (+ optional YAML front matter) into a value.

A policy version is identified by the sha256 of the file's exact bytes, so history
and exports can say which text a verdict was made against. Text analysis (rule ids,
sections, labels, output format) and the lint checks live in ``policy_lint``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from safeguard_desktop.core.policy_lint import (
    LintIssue,
    RuleDef,
    detect_labels,
    estimate_tokens,
    lint_policy,
    mentions_output_format,
    scan_rules,
    scan_sections,
    strip_title,
)
from safeguard_desktop.core.vocabulary import EFFORTS

__all__ = [
    "MAX_POLICY_BYTES",
    "LintIssue",
    "OutputKind",
    "Policy",
    "PolicyError",
    "Rule",
    "Section",
    "builtin_policies",
    "estimate_tokens",
    "find_policies",
    "find_policies_with_errors",
    "lint",
    "load_policy",
    "parse_policy",
    "resolve_policy",
]

MAX_POLICY_BYTES = 256 * 1024
OutputKind = Literal["binary", "json", "json-rationale"]
OUTPUT_KINDS: tuple[OutputKind, ...] = ("binary", "json", "json-rationale")
POLICY_SUFFIXES = (".md", ".txt")
_TITLE_MAX = 80


class PolicyError(ValueError):
    """Policy file cannot be read/parsed; str() is a one-line user message."""

    def __init__(self, message: str, *, path: Path | None = None, line: int | None = None):
        super().__init__(" ".join(message.split()))
        self.path = path
        self.line = line


@dataclass(frozen=True)
class Section:
    """A heading of the policy, so the UI can jump from a rule id to its section."""

    title: str
    line: int  # 1-based line in Policy.text
    level: int  # 1 for top-level


@dataclass(frozen=True)
class Rule:
    """Where a rule id is defined, so reasoning that cites it can link back."""

    id: str
    line: int  # 1-based line in Policy.text
    section: str  # title of the enclosing section ("" before the first heading)
    text: str


@dataclass(frozen=True)
class Policy:
    """A parsed policy file; `body` is what the model sees, `sha256` is its version."""

    text: str
    body: str
    body_offset_lines: int
    sha256: str
    id: str
    title: str
    version: str | None
    output: OutputKind | None
    labels: tuple[str, str] | None
    escalate: tuple[str, ...]
    effort: str | None
    rules: tuple[Rule, ...]
    sections: tuple[Section, ...]
    source: Path | None
    builtin: bool = False

    def rule(self, rule_id: str) -> Rule | None:
        """Exact id first, then case-insensitive (moderators type `sp2.a`)."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        wanted = rule_id.casefold()
        for rule in self.rules:
            if rule.id.casefold() == wanted:
                return rule
        return None

    def states_output_format(self) -> bool:
        """True when the body already tells the model how to answer."""
        return mentions_output_format(self.body, self.labels)

    @property
    def short_sha(self) -> str:
        return self.sha256[:12]


def lint(policy: Policy) -> list[LintIssue]:
    """Check a policy against the model's usage guide; clean = no error and no warning."""
    return lint_policy(policy)


# --- parsing -------------------------------------------------------------------------


def _name(source: Path | None) -> str:
    return f"Policy file '{source.name}'" if source is not None else "The policy"


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.casefold()).strip("-")


def _decode(data: bytes, source: Path | None) -> str:
    name = _name(source)
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(
            f"{name} is {len(data) // 1024} KiB; the limit is 256 KiB. "
            "Shorten it (400-600 tokens work best).",
            path=source,
        )
    if not data.strip():
        raise PolicyError(f"{name} is empty; write the policy text into it.", path=source)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise PolicyError(f"{name} is UTF-16 text; save it as UTF-8.", path=source)
    if b"\x00" in data:
        raise PolicyError(
            f"{name} looks binary (it contains NUL bytes); use a Markdown or plain-text file.",
            path=source,
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"{name} is not valid UTF-8 (bad byte at offset {exc.start}); save it as UTF-8 text.",
            path=source,
        ) from exc
    # Old Mac files end lines with a bare CR: read them as lines (CRLF stays as it is).
    return re.sub(r"\r(?!\n)", "\n", text)


def _split_front_matter(text: str, source: Path | None) -> tuple[dict[str, Any], int, int]:
    """Return (front matter mapping, body start char offset, body offset in lines)."""
    lines = text.split("\n")
    if lines[0].rstrip() != "---":
        return {}, 0, 0
    close = next(
        (i for i in range(1, len(lines)) if lines[i].rstrip() in ("---", "...")),
        None,
    )
    name = _name(source)
    if close is None:
        raise PolicyError(
            f"{name} opens YAML front matter on line 1 but has no closing '---' line; "
            "add one or remove the front matter.",
            path=source,
            line=1,
        )
    raw = "\n".join(lines[1:close])
    try:
        meta = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 2
        problem = getattr(exc, "problem", None) or "syntax error"
        raise PolicyError(
            f"{name} has invalid YAML front matter on line {line} ({problem}); "
            "fix that line or remove the front matter.",
            path=source,
            line=line,
        ) from exc
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise PolicyError(
            f"{name} front matter must be 'key: value' lines (found {type(meta).__name__}); "
            "see the built-in policies for an example.",
            path=source,
            line=2,
        )
    # Body starts after the closing line; leading blank lines are skipped but counted.
    start = close + 1
    while start < len(lines) - 1 and not lines[start].strip():
        start += 1
    char_offset = sum(len(line) + 1 for line in lines[:start])
    return cast(dict[str, Any], meta), min(char_offset, len(text)), start


def _meta_str(meta: dict[str, Any], key: str, source: Path | None) -> str | None:
    value = meta.get(key)
    if value is None:
        return None
    if not isinstance(value, (list, dict)):
        text = str(value).strip()
        return text or None
    raise PolicyError(
        f"{_name(source)} front matter '{key}' must be a single value, not a list or mapping.",
        path=source,
    )


def _meta_choice(
    meta: dict[str, Any], key: str, choices: Sequence[str], source: Path | None
) -> str | None:
    value = _meta_str(meta, key, source)
    if value is None:
        return None
    if value.casefold() not in choices:
        raise PolicyError(
            f"{_name(source)} front matter '{key}' must be one of {', '.join(choices)}, "
            f"not '{value}'.",
            path=source,
        )
    return value.casefold()


def _meta_labels(meta: dict[str, Any], source: Path | None) -> tuple[str, str] | None:
    value = meta.get("labels")
    if value is None:
        return None
    pair: list[Any] = []
    if isinstance(value, dict):
        pair = [value.get("safe"), value.get("violation")]
    elif isinstance(value, list) and len(value) == 2:
        pair = list(value)
    if len(pair) == 2 and all(isinstance(v, (str, int)) and str(v).strip() for v in pair):
        return str(pair[0]).strip(), str(pair[1]).strip()
    raise PolicyError(
        f"{_name(source)} front matter 'labels' must look like "
        "'labels: {safe: VALID, violation: INVALID}'.",
        path=source,
    )


def _meta_escalate(meta: dict[str, Any], source: Path | None) -> tuple[str, ...]:
    value = meta.get("escalate")
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return tuple(str(v).strip() for v in value if str(v).strip())
    raise PolicyError(
        f"{_name(source)} front matter 'escalate' must be a list such as '[SH3]'.",
        path=source,
    )


def _title_from_body(body: str) -> str:
    for line in body.split("\n"):
        title = strip_title(line)
        if title:
            return title if len(title) <= _TITLE_MAX else title[: _TITLE_MAX - 1].rstrip() + "…"
    return ""


def _make_rules(defs: Sequence[RuleDef]) -> tuple[Rule, ...]:
    seen: set[str] = set()
    rules: list[Rule] = []
    for d in defs:
        if d.id not in seen:
            seen.add(d.id)
            rules.append(Rule(id=d.id, line=d.line, section=d.section, text=d.text))
    return tuple(rules)


def parse_policy(data: bytes, *, source: Path | None = None, builtin: bool = False) -> Policy:
    """Parse file bytes; raises PolicyError with a one-line message on bad input."""
    text = _decode(data, source)
    meta, body_start, offset = _split_front_matter(text, source)
    body = text[body_start:]
    if not body.strip():
        raise PolicyError(
            f"{_name(source)} has front matter but no policy text; write the policy below it.",
            path=source,
        )
    output = cast(OutputKind | None, _meta_choice(meta, "output", OUTPUT_KINDS, source))
    effort = _meta_choice(meta, "effort", EFFORTS, source)
    title = _meta_str(meta, "title", source) or _title_from_body(body)
    policy_id = _slug(_meta_str(meta, "id", source) or "")
    if not policy_id:
        policy_id = _slug(source.stem) if source is not None else ""
    policy_id = policy_id or _slug(title) or "policy"
    sections = tuple(
        Section(title=s.title, line=s.line, level=s.level) for s in scan_sections(body, offset)
    )
    return Policy(
        text=text,
        body=body,
        body_offset_lines=offset,
        sha256=hashlib.sha256(data).hexdigest(),
        id=policy_id,
        title=title,
        version=_meta_str(meta, "version", source),
        output=output,
        labels=_meta_labels(meta, source) or detect_labels(body),
        escalate=_meta_escalate(meta, source),
        effort=effort,
        rules=_make_rules(scan_rules(body, offset)),
        sections=sections,
        source=source,
        builtin=builtin,
    )


# --- files ---------------------------------------------------------------------------


def load_policy(path: Path | str) -> Policy:
    """Read and parse one policy file; every failure is a PolicyError."""
    path = Path(path).expanduser()
    if not path.exists():
        raise PolicyError(
            f"Policy file not found: {path}. Check the path, "
            "or run `safeguard-desktop policies list` for the built-in ids.",
            path=path,
        )
    if path.is_dir():
        raise PolicyError(
            f"'{path}' is a folder, not a policy file; pass a .md or .txt file.", path=path
        )
    if not path.is_file():
        raise PolicyError(
            f"'{path}' is not a regular file (a device, pipe or socket); pass a .md or .txt file.",
            path=path,
        )
    try:
        size = path.stat().st_size
        if size > MAX_POLICY_BYTES:
            raise PolicyError(
                f"Policy file '{path.name}' is {size // 1024} KiB; the limit is 256 KiB. "
                "Shorten it (400-600 tokens work best).",
                path=path,
            )
        with path.open("rb") as fh:
            data = fh.read(MAX_POLICY_BYTES + 1)
        if len(data) > MAX_POLICY_BYTES:
            raise PolicyError(
                f"Policy file '{path.name}' is over 256 KiB. Shorten it (400-600 tokens "
                "work best).",
                path=path,
            )
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PolicyError(
            f"Cannot read policy file '{path}' ({reason}); check that it exists "
            "and that you may read it.",
            path=path,
        ) from exc
    return parse_policy(data, source=path)


def _builtin_files(only: str | None = None) -> list[tuple[str, bytes, Path | None]]:
    """The built-in policy files (name, bytes, path when on disk); with `only`, that file
    alone, if it exists."""
    try:
        root = importlib.resources.files("safeguard_desktop.builtin_policies")
    except ModuleNotFoundError:
        # Running from a source checkout that is not installed: use the repo folder.
        root = Path(__file__).resolve().parents[2] / "policies"
    found: list[tuple[str, bytes, Path | None]] = []
    for entry in root.iterdir():
        if entry.name.endswith(".md") and only in (None, entry.name) and entry.is_file():
            source = Path(str(entry)) if isinstance(entry, Path) else None
            found.append((entry.name, entry.read_bytes(), source))
    return found


@functools.cache
def _builtin_cache() -> tuple[Policy, ...]:
    policies = []
    for name, data, source in _builtin_files():
        policy = parse_policy(data, source=source or Path(name), builtin=True)
        policies.append(policy)
    return tuple(sorted(policies, key=lambda p: p.id))


def _builtin_named(ref: str) -> Policy | None:
    """The built-in policy whose id is exactly `ref`, from its own file (`<ref>.md`) alone
    while the built-ins are not all parsed yet (a command naming one need not parse them
    all; their ids are unique); None otherwise."""
    if _builtin_cache.cache_info().currsize:
        return None
    for name, data, source in _builtin_files(only=f"{ref}.md"):
        policy = parse_policy(data, source=source or Path(name), builtin=True)
        if policy.id == ref:
            return policy
    return None


def builtin_policies() -> list[Policy]:
    """The policies shipped in the wheel, sorted by id."""
    return list(_builtin_cache())


def find_policies_with_errors(
    folder: Path,
) -> tuple[list[Policy], list[tuple[Path, str]]]:
    """Policies (*.md, *.txt) in a user folder, plus (path, message) for unreadable ones."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return [], [(folder, f"Policy folder not found: {folder}. Pick an existing folder.")]
    policies: list[Policy] = []
    errors: list[tuple[Path, str]] = []
    try:
        candidates = sorted(
            p for p in folder.iterdir() if p.suffix.lower() in POLICY_SUFFIXES and p.is_file()
        )
    except OSError as exc:
        return [], [(folder, f"Cannot list policy folder {folder} ({exc.strerror}).")]
    for path in candidates:
        try:
            policies.append(load_policy(path))
        except PolicyError as exc:
            errors.append((path, str(exc)))
    policies.sort(key=lambda p: (p.id, str(p.source)))
    return policies, errors


def find_policies(folder: Path) -> list[Policy]:
    """Policies in a user folder; files that cannot be read are skipped."""
    return find_policies_with_errors(folder)[0]


def _match_id(ref: str, policies: Sequence[Policy]) -> Policy | None:
    for policy in policies:
        if policy.id == ref:
            return policy
    wanted = _slug(ref)
    for policy in policies:
        if policy.id.casefold() == ref.casefold() or policy.id == wanted:
            return policy
    return None


def resolve_policy(ref: str, *, folders: Sequence[Path] = ()) -> Policy:
    """A built-in id, an id found in `folders`, or a path to a file (in that order)."""
    ref = ref.strip()
    looks_like_path = "/" in ref or "\\" in ref or Path(ref).suffix.lower() in POLICY_SUFFIXES
    if looks_like_path:
        return load_policy(ref)
    found = _builtin_named(ref) or _match_id(ref, builtin_policies())
    if found is not None:
        return found
    for folder in folders:
        found = _match_id(ref, find_policies(Path(folder)))
        if found is not None:
            return found
    if ref and Path(ref).is_file():
        return load_policy(ref)
    raise PolicyError(
        f"Unknown policy '{ref}'. Run `safeguard-desktop policies list` to see the built-in "
        "ids, or pass a path to a .md/.txt file."
    )
