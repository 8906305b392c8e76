"""Adapters that show a stored `Review` in the live review widgets (verdict panel, reasoning,
content pane), and rebuild the exact policy version a review ran with.

The review widgets are built for a live stream; a stored review has no stream, so this
module feeds them the finished texts and a Verdict rebuilt from the stored dict.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from safeguard_desktop.core.highlight import Highlights
from safeguard_desktop.core.policy import Policy, PolicyError, parse_policy
from safeguard_desktop.core.verdict import Verdict, verdict_from_dict
from safeguard_desktop.services.history_service import Review
from safeguard_desktop.services.review import Stats, review_highlights, review_warnings
from safeguard_desktop.ui.history_model import local_time
from safeguard_desktop.ui.reasoning_view import ContentPane, ReasoningView
from safeguard_desktop.ui.verdict_panel import VerdictPanel

log = logging.getLogger("safeguard.ui.history")
_STATS_FIELDS = {f.name for f in dataclasses.fields(Stats)}
INTERRUPTED_PROBLEM = "This review was interrupted: the app stopped before the answer came."
INTERRUPTED_KEPT = " The partial reasoning is kept below; re-run it for a verdict."
INTERRUPTED_EMPTY = " No reasoning was saved; re-run it for a verdict."


def stats_from_dict(data: dict[str, object] | None) -> Stats | None:
    """The stored `Stats.to_dict()` back as Stats (unknown keys such as tokens_per_s dropped)."""
    if not data:
        return None
    try:
        return Stats(**{k: v for k, v in data.items() if k in _STATS_FIELDS})  # type: ignore[arg-type]
    except TypeError:
        return None


def stored_verdict(review: Review) -> Verdict | None:
    """The stored verdict; category and rule ids fall back to the indexed columns, which
    also read the model's own spelling (`policy_category`)."""
    if not review.verdict:
        return None
    verdict = verdict_from_dict(review.verdict, raw=review.answer)
    if verdict.label in ("violation", "safe"):
        verdict = dataclasses.replace(
            verdict,
            category=verdict.category or review.category,
            rule_ids=verdict.rule_ids or review.rule_ids,
        )
    return verdict


def rebuild_policy(text: str | None, review: Review) -> Policy | None:
    """The policy exactly as the review used it, from the stored text (None when unreadable).

    The stored text was decoded with utf-8-sig, so a file that began with a BOM hashes
    differently once re-encoded: the BOM is tried too, to keep the same sha256.
    """
    if text is None:
        return None
    source = Path(f"{review.policy_id}.md")  # keeps the id of a policy without front matter
    try:
        policy = parse_policy(text.encode("utf-8"), source=source)
        if policy.sha256 != review.policy_sha256:
            with_bom = parse_policy(b"\xef\xbb\xbf" + text.encode("utf-8"), source=source)
            if with_bom.sha256 == review.policy_sha256:
                policy = with_bom
    except PolicyError as exc:
        log.warning("stored policy %s unreadable: %s", review.policy_sha256[:12], exc)
        return None
    return dataclasses.replace(policy, source=None)


def stored_highlights(review: Review, policy: Policy | None) -> Highlights:
    """The highlights of a stored review, by the same rule as a live one."""
    return review_highlights(review.reasoning, review.content_text, policy, review.rule_ids)


def show_verdict(
    panel: VerdictPanel, review: Review, policy: Policy | None, marks: Highlights | None = None
) -> None:
    """Put a stored outcome on the verdict panel, whatever its status."""
    known = [r.id for r in policy.rules] if policy is not None else []
    verdict = stored_verdict(review)
    if review.status == "interrupted":
        more = INTERRUPTED_KEPT if review.reasoning else INTERRUPTED_EMPTY
        panel.set_failed(INTERRUPTED_PROBLEM + more, model=review.model, effort=review.effort)
        panel.badge.setText("INTERRUPTED")  # the panel has no interrupted state of its own
    elif review.status == "running":
        panel.set_running(review.model, review.effort)
    elif review.status == "cancelled":
        panel.set_cancelled(model=review.model, effort=review.effort)
    elif verdict is None:
        message = review.error or "The review failed without an answer; re-run it."
        panel.set_failed(message, model=review.model, effort=review.effort)
    else:
        panel.set_verdict(
            verdict,
            model=review.model,
            effort=review.effort,
            mentioned=marks.rule_ids if marks is not None else (),
            known=known,
            warnings=stored_warnings(review, policy, verdict),
        )
    panel.set_stats(stats_from_dict(review.stats))


def stored_warnings(review: Review, policy: Policy | None, verdict: Verdict) -> list[str]:
    """The warnings a live review would show beside this verdict (the ones that can be
    told again from what is stored: the model, the verdict and the policy)."""
    # Without its stored policy, no rule can be told unknown: an empty one checks the rest.
    known = policy if policy is not None else parse_policy(b"# ?\n", source=Path("unknown.md"))
    return review_warnings(known, review.model, verdict)


def show_texts(
    reasoning: ReasoningView, content: ContentPane, review: Review, policy: Policy | None
) -> Highlights:
    """The stored reasoning and content with their highlights (no stream involved)."""
    reasoning.begin()
    reasoning.finish(review.reasoning)
    content.show_content(review.content_text)
    marks = stored_highlights(review, policy)
    reasoning.apply_highlights(marks.reasoning, policy)
    content.apply_highlights(marks.content)
    return marks


def policy_line(policy_id: str, version: str | None, sha256: str) -> str:
    version_text = f" v{version}" if version else ""
    return f"{policy_id}{version_text} · sha256 {sha256[:12]}"


def provenance_lines(review: Review) -> list[str]:
    """Everything needed to reproduce or audit the review, one fact a line."""
    stats = stats_from_dict(review.stats)
    lines = [
        f"Policy: {policy_line(review.policy_id, review.policy_version, review.policy_sha256)}"
        + (f" ({review.policy_title})" if review.policy_title else ""),
        f"Model: {review.model}"
        + (f" · digest {review.model_digest[:19]}" if review.model_digest else "")
        + (f" · Ollama {review.ollama_version}" if review.ollama_version else ""),
        f"Server: {review.server_line or 'not recorded'}",
        f"Effort: {review.effort} · num_ctx {review.num_ctx:,} · seed "
        f"{'random' if review.seed is None else review.seed} · temperature "
        f"{'default' if review.temperature is None else review.temperature}",
        f"Started: {local_time(review.created_at, '%Y-%m-%d %H:%M:%S')}"
        + (
            f" · finished {local_time(review.finished_at, '%H:%M:%S')}"
            if review.finished_at
            else ""
        )
        + f" · status {review.status}",
        f"Moderator: {review.moderator or '—'} · source {review.source}"
        + (f" · host {review.host}" if review.host else ""),
    ]
    if stats is not None:
        timing = f"Timing: total {stats.wall_s:.1f} s"
        if stats.first_token_s is not None:
            timing += f" · first token {stats.first_token_s:.2f} s"
        if stats.tokens_per_s:
            timing += f" · {stats.tokens_per_s:.1f} tokens/s"
        if stats.prompt_eval_count or stats.eval_count:
            timing += f" · prompt {stats.prompt_eval_count:,} / output {stats.eval_count:,} tokens"
        lines.append(timing)
    if review.error:
        lines.append(f"Error: {review.error}")
    return lines


def decision_line(
    at: str,
    moderator: str,
    action: str,
    label: str | None,
    note: str | None,
    rule: str | None = None,
) -> str:
    head = f"{local_time(at, '%Y-%m-%d %H:%M')} · {moderator or '—'} · {action}"
    if label:
        head += f" → {label}"
    if rule:
        head += f" (rule {rule})"
    if note:
        head += f" · {note}"
    return head
