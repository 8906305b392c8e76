"""Escalation notes in Markdown, and their safe HTML preview.

Every untrusted value (content, reasoning, rationale, quotes, notes, even the
model's category and rule ids) goes into a code fence or code span whose
backtick run is longer than any run inside it, so hostile content cannot forge
headings, links, images or HTML. The preview renderer also drops raw HTML.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from safeguard_desktop.services.review import review_highlights
from safeguard_desktop.store.records import Review

if TYPE_CHECKING:  # `markdown` is imported by the preview only (`render_html`)
    import markdown

_BACKTICKS = re.compile(r"`+")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]]", re.IGNORECASE)
_PHONE = re.compile(r"(?<!\w)\+?\d[\d\s().-]{6,}\d(?!\w)")
_HANDLE = re.compile(r"(?<![\w@])@[A-Za-z0-9_]{2,30}\b")


_PLAIN = re.compile(r"[\t\n\r\x20-\x7e]*")


def _folded(text: str) -> tuple[str, list[int]]:
    """The text as a reader sees it, with each character's index in ``text``.

    Invisible format and control characters (zero-width spaces and joiners, U+2060,
    U+FEFF, bidi marks, NUL...) are dropped, and compatibility forms become their plain
    letters (full-width ＠ and digits, circled or styled letters): "bob\u200b＠ex.org"
    reads "bob@ex.org". Tab, newline and carriage return stay: they separate words.
    """
    chars: list[str] = []
    where: list[int] = []
    for index, char in enumerate(text):
        if char in "\t\n\r" or " " <= char <= "~":
            chars.append(char)
            where.append(index)
        elif unicodedata.category(char) not in ("Cc", "Cf"):
            for plain in unicodedata.normalize("NFKC", char):
                chars.append(plain)
                where.append(index)
    return "".join(chars), where


def _mask(pattern: re.Pattern[str], placeholder: str, text: str) -> str:
    if _PLAIN.fullmatch(text):
        return pattern.sub(placeholder, text)
    folded, where = _folded(text)
    parts: list[str] = []
    done = 0
    for match in pattern.finditer(folded):
        if match.end() > match.start():
            start, end = where[match.start()], where[match.end() - 1] + 1
            parts += [text[done:start], placeholder]
            done = end
    parts.append(text[done:])
    return "".join(parts)


def redact(text: str) -> str:
    """Mask emails, URLs, phone numbers and @handles (in that order), also when they are
    written with full-width characters or hide invisible characters inside."""
    text = _mask(_EMAIL, "[email]", text)
    text = _mask(_URL, "[url]", text)
    text = _mask(_PHONE, "[phone]", text)
    return _mask(_HANDLE, "[@handle]", text)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """Control characters (terminal escapes, bells) shown as \\xNN: `cat note.md` stays safe."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _longest_run(text: str) -> int:
    return max((len(m.group()) for m in _BACKTICKS.finditer(text)), default=0)


def fence(text: str, info: str = "text") -> str:
    """A fenced block that no line of `text` can close."""
    text = visible(text)
    bar = "`" * max(3, _longest_run(text) + 1)
    body = text if text.endswith("\n") else text + "\n"
    return f"{bar}{info}\n{body}{bar}"


def code_span(text: str | None) -> str:
    """Inline code for a short untrusted value (newlines folded)."""
    if text is None or not str(text).strip():
        return "—"
    value = visible(" ".join(str(text).split()))
    bar = "`" * (_longest_run(value) + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{bar}{pad}{value}{pad}{bar}"


@dataclass(frozen=True)
class NoteOptions:
    redact: bool = False
    include_reasoning: bool = True


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def evidence_quotes(review: Review) -> list[str]:
    """Quoted phrases of the reasoning that occur in the content, as written in the content."""
    found = review_highlights(review.reasoning, review.content_text, None, review.rule_ids)
    by_group: dict[int, str] = {}
    for span in found.content:
        by_group.setdefault(span.group, review.content_text[span.start : span.end])
    return [by_group[g] for g in sorted(by_group)]


def review_note(review: Review, options: NoteOptions = NoteOptions()) -> str:
    clean = redact if options.redact else (lambda s: s)
    verdict = review.verdict_label or ("failed" if review.status == "failed" else review.status)
    human = review.override_label
    outcome = human or verdict
    lines = [
        f"## Review #{review.id}: {outcome.upper()}",
        "",
        *(
            [
                f"- **Moderator's outcome:** {code_span(human)}"
                + (f" under rule {code_span(review.override_rule)}" if review.override_rule else "")
                + " (override of the model's verdict)"
            ]
            if human
            else []
        ),
        *([f"- **Item id:** {code_span(clean(review.ref))}"] if review.ref else []),
        f"- **Model's verdict:** {code_span(verdict)}",
        f"- **Category:** {code_span(review.category)}",
        f"- **Rule ids:** {', '.join(code_span(r) for r in review.rule_ids) or '—'}",
        f"- **Confidence:** {code_span(_text(review.confidence))}",
        f"- **Policy:** {code_span(review.policy_id)} version {code_span(review.policy_version)}, "
        f"sha256 {code_span(review.policy_sha256[:12])}",
        f"- **Model:** {code_span(review.model)}"
        + (f", digest {code_span(review.model_digest[:19])}" if review.model_digest else "")
        + (f", Ollama {code_span(review.ollama_version)}" if review.ollama_version else ""),
        f"- **Server:** {code_span(review.server_line or 'not recorded')}",
        f"- **Effort:** {code_span(review.effort)}, num_ctx {review.num_ctx}",
        f"- **Reviewed:** {code_span(review.created_at)} by {code_span(clean(review.moderator))}"
        f" ({code_span(review.status)})",
        "",
    ]
    if review.rationale:
        lines += ["### Rationale", "", fence(clean(review.rationale)), ""]
    quotes = evidence_quotes(review)
    if quotes:
        lines += ["### Evidence quotes", ""]
        lines += [f"- {code_span(clean(q))}" for q in quotes]
        lines.append("")
    if options.include_reasoning and review.reasoning:
        lines += ["### Reasoning", "", fence(clean(review.reasoning)), ""]
    if review.decisions:
        lines += ["### Decisions", ""]
        for d in review.decisions:
            label = f" → {code_span(d.label)}" if d.label else ""
            label += f" (rule {code_span(d.rule)})" if d.rule else ""
            lines.append(
                f"- {code_span(d.at)} {code_span(clean(d.moderator))}: **{d.action}**{label}"
            )
            if d.note:
                lines += ["", fence(clean(d.note)), ""]
        lines.append("")
    lines += ["### Content", "", fence(clean(review.content_text)), ""]
    return "\n".join(lines)


def escalation_note(reviews: Sequence[Review], options: NoteOptions = NoteOptions()) -> str:
    """One Markdown document for one or many reviews."""
    title = (
        "# Escalation note" if len(reviews) == 1 else f"# Escalation notes ({len(reviews)} reviews)"
    )
    parts = [title, ""]
    if options.redact:
        parts += ["_Emails, phone numbers, URLs and @handles are redacted._", ""]
    for i, review in enumerate(reviews):
        if i:
            parts += ["---", ""]
        parts.append(review_note(review, options))
    return "\n".join(parts).rstrip("\n") + "\n"


@functools.cache
def _no_raw_html() -> type[Any]:
    """The extension class (made with the first preview: the app's start needs no
    Markdown)."""
    from markdown.extensions import Extension

    class _NoRawHtml(Extension):
        """Raw HTML in the source is shown as text, never passed through."""

        def extendMarkdown(self, md: markdown.Markdown) -> None:
            md.preprocessors.deregister("html_block")
            md.inlinePatterns.deregister("html")

    return _NoRawHtml


def render_html(md_text: str) -> str:
    """HTML for the preview pane: fenced code, no raw HTML, nothing remote."""
    import markdown

    return markdown.markdown(
        md_text, extensions=["fenced_code", _no_raw_html()()], output_format="html"
    )
