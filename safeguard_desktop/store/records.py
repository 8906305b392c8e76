"""Plain records the history hands out, and the SQL for its list filters."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import cast

from safeguard_desktop.core.vocabulary import REVIEW_STATUSES, VERDICT_LABELS, human_label

from .db import format_utc

SOURCES = ("gui", "cli", "queue", "eval")
DECISION_ACTIONS = ("agree", "override", "escalate", "note")
# Trail entries the app writes itself: a review deleted, a purge, a restore (no review), a
# repair of the trail's protection (no review).
AUDIT_ACTIONS = ("delete", "purge", "restore", "repair")
MAX_ID = 2**63 - 1  # SQLite's largest integer: no id or limit can be beyond it

JsonDict = dict[str, object]


@dataclass(frozen=True)
class Decision:
    """One append-only audit row; review_id is None for a purge, restore or repair."""

    id: int
    review_id: int | None
    action: str
    label: str | None
    note: str | None
    moderator: str
    at: str
    rule: str | None = None  # the rule or category an override names (e.g. "H2.f")


@dataclass(frozen=True)
class Filters:
    """List/search filters; None means "any". since/until are ISO dates or timestamps (UTC
    unless an offset is given); a date-only `until` includes that whole day.
    verdict and decision also accept "none" (no verdict / no decision yet)."""

    policy_id: str | None = None
    verdict: str | None = None
    decision: str | None = None
    status: str | None = None
    escalated: bool | None = None
    since: str | None = None
    until: str | None = None


@dataclass(frozen=True)
class ReviewSummary:
    """One row of the History list: cheap to load 200 at a time."""

    id: int
    created_at: str
    status: str
    verdict: JsonDict | None
    verdict_label: str | None
    category: str | None
    policy_id: str
    policy_version: str | None
    model: str
    preview: str
    escalated: bool
    last_decision: str | None
    override_label: str | None = None  # a standing override's label (the human outcome)
    ref: str | None = None  # the item's own id, kept from an imported file


@dataclass(frozen=True)
class Review:
    """A full review with its decisions (oldest first)."""

    id: int
    created_at: str
    finished_at: str | None
    heartbeat_at: str
    status: str
    content: JsonDict
    content_text: str
    content_kind: str
    source: str
    policy_sha256: str
    policy_id: str
    policy_version: str | None
    policy_title: str
    model: str
    model_digest: str | None
    ollama_version: str | None
    host: str
    effort: str
    num_ctx: int
    seed: int | None
    temperature: float | None
    moderator: str
    reasoning: str
    answer: str
    verdict: JsonDict | None
    verdict_label: str | None
    category: str | None
    rule_ids: tuple[str, ...]
    confidence: str | float | None
    rationale: str | None
    stats: JsonDict | None
    error: str | None
    escalated: bool
    last_decision: str | None
    notes: str
    decisions: tuple[Decision, ...]
    backend: str | None = None  # "ollama" | "openai"; None before migration 7 (Ollama)
    served_model: str | None = None  # the model id the server named in its answer

    @property
    def server_line(self) -> str:
        """Which server judged: address, kind and the model id it answered with."""
        kind = {"openai": "OpenAI-compatible", "ollama": "Ollama"}.get(self.backend or "", "")
        served = self.served_model if self.served_model and self.served_model != self.model else ""
        return " · ".join(
            part for part in (self.host, kind, served and f"served as {served}") if part
        )

    @property
    def ref(self) -> str | None:
        """The item's own id, kept from the imported file (None when typed or pasted)."""
        value = self.content.get("ref") if isinstance(self.content, dict) else None
        return None if value is None else str(value)

    @property
    def override_label(self) -> str | None:
        """The label of a standing override: the moderator's outcome, if any."""
        return human_label([(d.action, d.label) for d in self.decisions])

    @property
    def override_rule(self) -> str | None:
        """The rule or category the standing override names, if any."""
        if self.override_label is None:
            return None
        return next((d.rule for d in reversed(self.decisions) if d.action == "override"), None)


@dataclass(frozen=True)
class Restored:
    """What `restore` did: from which file (and its sha256), where the replaced history went
    (None when there was none) and how many decisions the restored trail holds."""

    source: Path
    sha256: str
    kept: Path | None
    decisions: int


def check_page(limit: int, offset: int) -> None:
    """A page of rows: at least one, from a position SQLite can hold."""
    if not 1 <= limit <= MAX_ID:
        raise ValueError(f"The limit must be a whole number from 1 to {MAX_ID}.")
    if not 0 <= offset <= MAX_ID:
        raise ValueError(f"The offset must be a whole number from 0 to {MAX_ID}.")


def to_json(value: Mapping[str, object] | None) -> str | None:
    return None if value is None else json.dumps(dict(value), ensure_ascii=False, default=str)


def from_json(text: str | None) -> JsonDict | None:
    return None if text is None else cast(JsonDict, json.loads(text))


# --- verdict columns -----------------------------------------------------------------


@dataclass(frozen=True)
class VerdictColumns:
    label: str | None
    category: str | None
    rule_ids: str
    confidence: str | float | None
    rationale: str | None


def verdict_columns(verdict: Mapping[str, object] | None) -> VerdictColumns:
    """Read the indexed columns out of a verdict dict as core or the model spells it:
    `label` (or `violation` 0/1), `category` (or `policy_category`), `rule_ids`,
    `confidence`, `rationale`."""
    if verdict is None:
        return VerdictColumns(None, None, "", None, None)
    category = verdict.get("category", verdict.get("policy_category"))
    rules = verdict.get("rule_ids")
    if isinstance(rules, str):
        rule_text = " ".join(re.split(r"[\s,;]+", rules)).strip()
    elif isinstance(rules, list | tuple):
        rule_text = " ".join(str(r).strip() for r in rules if str(r).strip())
    else:
        rule_text = ""
    confidence = verdict.get("confidence")
    if confidence is not None and not isinstance(confidence, str | int | float):
        confidence = str(confidence)
    rationale = verdict.get("rationale")
    return VerdictColumns(
        label=_verdict_label(verdict),
        category=None if category in (None, "") else str(category),
        rule_ids=rule_text,
        confidence=cast("str | float | None", confidence),
        rationale=None if rationale is None else str(rationale),
    )


def _verdict_label(verdict: Mapping[str, object]) -> str:
    label = verdict.get("label")
    if isinstance(label, str) and label.strip().lower() in VERDICT_LABELS:
        return label.strip().lower()
    flag = verdict.get("violation")
    if isinstance(flag, str):
        flag = {"1": 1, "true": 1, "yes": 1, "0": 0, "false": 0, "no": 0}.get(flag.strip().lower())
    if isinstance(flag, bool | int | float):
        return "violation" if flag else "safe"
    return "unparsed"


# --- row mapping -------------------------------------------------------------------------

SUMMARY_COLUMNS = (
    "r.id, r.created_at, r.status, r.verdict_json, r.verdict_label, r.category, r.policy_id, "
    "r.policy_version, r.model, substr(r.content_text, 1, 200), r.escalated, r.last_decision, "
    # The label of a standing override (last_decision is derived from the same trail).
    "CASE WHEN r.last_decision = 'override' THEN (SELECT d.label FROM decisions d "
    "WHERE d.review_id = r.id AND d.action = 'override' ORDER BY d.id DESC LIMIT 1) END, "
    "json_extract(r.content_json, '$.ref')"  # the item's own id from an import
)

_PREVIEW_CHARS = 100


def summary_from_row(row: sqlite3.Row | tuple[object, ...]) -> ReviewSummary:
    text = " ".join(str(row[9]).split())
    preview = text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 1] + "…"
    return ReviewSummary(
        id=cast(int, row[0]),
        created_at=cast(str, row[1]),
        status=cast(str, row[2]),
        verdict=from_json(cast("str | None", row[3])),
        verdict_label=cast("str | None", row[4]),
        category=cast("str | None", row[5]),
        policy_id=cast(str, row[6]),
        policy_version=cast("str | None", row[7]),
        model=cast(str, row[8]),
        preview=preview,
        escalated=bool(row[10]),
        last_decision=cast("str | None", row[11]),
        override_label=cast("str | None", row[12]) if len(row) > 12 else None,
        ref=str(row[13]) if len(row) > 13 and row[13] is not None else None,
    )


def decision_from_row(row: sqlite3.Row) -> Decision:
    return Decision(
        id=row["id"],
        review_id=row["review_id"],
        action=row["action"],
        label=row["label"],
        note=row["note"],
        moderator=row["moderator"],
        at=row["at"],
        rule=row["rule"] if "rule" in row.keys() else None,  # noqa: SIM118 (a Row's keys)
    )


_JSON_FIELDS = {"content": "content_json", "verdict": "verdict_json", "stats": "stats_json"}


def review_columns() -> str:
    """SELECT list for review_from_row over `reviews r JOIN policy_versions p`."""
    names = [f.name for f in fields(Review) if f.name != "decisions"]
    cols = [
        "p.title AS policy_title" if n == "policy_title" else f"r.{_JSON_FIELDS.get(n, n)}"
        for n in names
    ]
    return ", ".join(cols)


def review_from_row(row: sqlite3.Row, decisions: tuple[Decision, ...]) -> Review:
    values: dict[str, object] = {}
    for f in fields(Review):
        if f.name == "decisions":
            values[f.name] = decisions
        elif f.name in _JSON_FIELDS:
            values[f.name] = from_json(row[_JSON_FIELDS[f.name]])
        else:
            values[f.name] = row[f.name]
    values["content"] = values["content"] or {}
    values["rule_ids"] = tuple(str(values["rule_ids"]).split())
    values["escalated"] = bool(values["escalated"])
    values["policy_title"] = values["policy_title"] or ""
    return Review(**values)  # type: ignore[arg-type]


# --- filters -----------------------------------------------------------------------------


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"Unknown {what} {value!r}: use one of {', '.join(allowed)}.")
    return value


def _moment(text: str, *, end_of_day: bool) -> tuple[str, bool]:
    """Normalise an ISO date/timestamp to our UTC text; True when it is an exclusive bound."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if end_of_day and day == date.max:
                return format_utc(datetime.max.replace(tzinfo=UTC)), False
            day += timedelta(days=1 if end_of_day else 0)
            return format_utc(datetime(day.year, day.month, day.day, tzinfo=UTC)), end_of_day
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return format_utc(moment), False
    except (ValueError, OverflowError):
        raise ValueError(
            f"Unreadable date {text!r}: use YYYY-MM-DD, or YYYY-MM-DDTHH:MM with an optional "
            "offset such as +02:00."
        ) from None


def check_moment(text: str) -> str:
    """`text` if it is a date or timestamp the filters read; ValueError saying what to use."""
    _moment(text, end_of_day=True)
    _moment(text, end_of_day=False)
    return text


def filter_sql(filters: Filters | None) -> tuple[str, list[object]]:
    """WHERE fragment (starting with ' AND' or empty) over alias r, and its parameters."""
    if filters is None:
        return "", []
    parts: list[str] = []
    params: list[object] = []
    if filters.policy_id is not None:
        parts.append("r.policy_id = ?")
        params.append(filters.policy_id)
    if filters.verdict is not None:
        if _choice(filters.verdict, (*VERDICT_LABELS, "none"), "verdict") == "none":
            parts.append("r.verdict_label IS NULL")
        else:
            parts.append("r.verdict_label = ?")
            params.append(filters.verdict)
    if filters.decision is not None:
        choices = ("agree", "override", "escalate", "none")
        if _choice(filters.decision, choices, "decision") == "none":
            parts.append("r.last_decision IS NULL")
        else:
            parts.append("r.last_decision = ?")
            params.append(filters.decision)
    if filters.status is not None:
        parts.append("r.status = ?")
        params.append(_choice(filters.status, REVIEW_STATUSES, "status"))
    if filters.escalated is not None:
        parts.append("r.escalated = ?")
        params.append(1 if filters.escalated else 0)
    if filters.since is not None:
        parts.append("r.created_at >= ?")
        params.append(_moment(filters.since, end_of_day=False)[0])
    if filters.until is not None:
        bound, exclusive = _moment(filters.until, end_of_day=True)
        parts.append("r.created_at < ?" if exclusive else "r.created_at <= ?")
        params.append(bound)
    return "".join(f" AND {p}" for p in parts), params


# The last word of a search is a prefix from this many letters on; shorter, it is a word.
# One letter has no prefix index (schema.FTS_PREFIXES): FTS5 would merge the postings of
# every word starting with it (0.1-0.3 s at 1M reviews, holding the history's lock), to
# find nearly every review anyway.
MIN_PREFIX = 2


def fts_query(text: str, *, min_prefix: int = MIN_PREFIX) -> str | None:
    """Quote every word so no input is FTS syntax; the last word matches as a prefix when it
    has `min_prefix` letters or digits.

    Words with no letter or digit are dropped (they hold no token); None = nothing to find.
    """
    words = [w for w in text.split() if any(ch.isalnum() for ch in w)]
    if not words:
        return None
    quoted = ['"' + w.replace('"', '""') + '"' for w in words]
    if sum(map(str.isalnum, words[-1])) >= min_prefix:
        quoted[-1] += "*"
    return " ".join(quoted)
