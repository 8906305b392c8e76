"""One review, end to end: request, stream, verdict, history. Used by the GUI and the CLI.

No widgets here: progress reaches the caller through a plain callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from safeguard_desktop.core.content import Content
from safeguard_desktop.core.highlight import Highlights, highlight
from safeguard_desktop.core.policy import Policy
from safeguard_desktop.core.prompt import ChatRequest, build_request, system_prompt, wants_schema
from safeguard_desktop.core.verdict import Verdict, parse_verdict
from safeguard_desktop.engine.client import AnswerDelta, Done, OllamaClient, Stats, ThinkingDelta
from safeguard_desktop.engine.errors import EngineError, InternalError
from safeguard_desktop.engine.models import list_models
from safeguard_desktop.store.history import History, HistoryError

__all__ = [
    "ReviewOptions",
    "ReviewResult",
    "Reviewer",
    "Stats",
    "review_highlights",
    "review_warnings",
]
log = logging.getLogger("safeguard.review")
NO_HIGHLIGHTS = Highlights((), (), (), ())
Status = Literal["done", "failed", "cancelled"]
DeltaCallback = Callable[[str, str], None]  # (kind "thinking" | "answer", text)
PROGRESS_EVERY_S = 1.0
SCHEMA_MIN_VERSION = (0, 12, 4)  # Ollama applies `format` after the thinking phase from here on


@dataclass(frozen=True, kw_only=True)
class ReviewOptions:
    """How reviews run. Made by `Session.review_options` from the settings registry, which
    holds every default; nothing here has one of its own."""

    model: str
    effort: str | None  # chosen for this review (picker, --effort); None: see effort_for
    default_effort: str  # the `effort` setting
    num_ctx: int
    seed: int | None
    temperature: float | None
    keep_alive: str | None
    moderator: str
    source: str

    def effort_for(self, policy: Policy) -> str:
        """The effort chosen for the review, else the policy's own, else the setting's."""
        return self.effort or policy.effort or self.default_effort


def review_highlights(
    reasoning: str, content_text: str, policy: Policy | None, cited: Sequence[str] = ()
) -> Highlights:
    """Rule ids, quotes of the content and decision phrases in the reasoning.

    The one rule for every view and export: rule ids are the policy's when the policy is
    known, else the ones the verdict cited; the policy's labels count as decision phrases.
    """
    known = [r.id for r in policy.rules] if policy is not None else list(cited)
    labels = policy.labels if policy is not None else None
    return highlight(reasoning, content_text, known, labels)


def review_warnings(
    policy: Policy, model: str, verdict: Verdict | None, *, schema_skipped: str | None = None
) -> list[str]:
    """Sentences a moderator should read beside the verdict (not errors: the review ran)."""
    out: list[str] = []
    if not is_safeguard_model(model):
        out.append(
            f"{model} is not a gpt-oss-safeguard model: it was not trained to apply a policy, "
            "so treat its verdict as a hint only."
        )
    if schema_skipped:
        out.append(schema_skipped)
    if verdict is not None:
        if verdict.problem:
            out.append(verdict.problem)
        defined = {r.id for r in policy.rules}
        unknown = [r for r in verdict.rule_ids if defined and r not in defined]
        if unknown:
            ids = ", ".join(unknown)
            out.append(f"The model cited {ids}, which the policy does not define; check the rule.")
    return out


def is_safeguard_model(model: str) -> bool:
    return "safeguard" in model.lower()


@dataclass
class ReviewResult:
    status: Status
    policy: Policy
    content: Content
    model: str
    effort: str
    verdict: Verdict | None = None
    reasoning: str = ""
    answer: str = ""
    stats: Stats | None = None
    error: EngineError | None = None
    review_id: int | None = None
    request: ChatRequest | None = field(default=None, repr=False)
    highlights: Highlights = field(default_factory=lambda: NO_HIGHLIGHTS, repr=False)
    warnings: list[str] = field(default_factory=list)
    saved: bool = False  # recorded in the history (see warnings when it was not)

    def to_json(self) -> dict[str, Any]:
        """The object `classify --json` prints."""
        verdict = self.verdict.to_dict() if self.verdict else None
        out: dict[str, Any] = {
            "verdict": verdict,
            "reasoning": self.reasoning,
            "answer": self.answer,
            "policy": {
                "id": self.policy.id,
                "version": self.policy.version,
                "sha256": self.policy.sha256,
            },
            "model": self.model,
            "effort": self.effort,
            "stats": self.stats.to_dict() if self.stats else {},
            "status": self.status,
        }
        if self.error is not None:
            out["error"] = str(self.error)
        if self.review_id is not None:
            out["review_id"] = self.review_id
        out["warnings"] = list(self.warnings)
        return out


def policy_system_prompt(policy: Policy) -> str:
    return system_prompt(
        policy.body,
        output=policy.output,
        labels=policy.labels,
        states_output=policy.states_output_format(),
    )


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    parts: list[int] = []
    for piece in text.split("-")[0].split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts) or None


class Reviewer:
    """Runs reviews against one server, recording each in the history when given one."""

    def __init__(
        self, client: OllamaClient, options: ReviewOptions, history: History | None = None
    ) -> None:
        self.client = client
        self.options = options
        self.history = history
        self._server_version: str | None = None
        self._version_checked = False
        self._digests: dict[str, str | None] = {}

    async def server_version(self) -> str | None:
        if not self._version_checked:
            try:
                self._server_version = await self.client.version()
            except EngineError:
                self._server_version = None
            self._version_checked = True
        return self._server_version

    async def model_digest(self, model: str) -> str | None:
        """The installed model's digest for provenance (cached; None when unknown)."""
        if model not in self._digests:
            try:
                listed = await list_models(self.client)
            except EngineError as exc:  # provenance is best effort; the review itself reports
                log.debug("model digest lookup failed: %s", exc)
                return None
            names = {model, f"{model}:latest"}
            self._digests[model] = next((m.digest for m in listed if m.name in names), None)
        return self._digests.get(model)

    def build(self, policy: Policy, content: Content, *, schema: bool) -> ChatRequest:
        opts = self.options
        effort = opts.effort_for(policy)
        return build_request(
            system=policy_system_prompt(policy),
            user=content.render(),
            model=opts.model,
            effort=effort,
            num_ctx=opts.num_ctx,
            seed=opts.seed,
            temperature=opts.temperature,
            schema=schema,
            keep_alive=opts.keep_alive,
        )

    async def review(
        self, policy: Policy, content: Content, *, on_delta: DeltaCallback | None = None
    ) -> ReviewResult:
        """Classify one item. Never raises EngineError: a failure is a result with status failed.

        Cancelling the awaiting task records the review as cancelled and re-raises.
        """
        version = await self.server_version()
        parsed = version_tuple(version)
        wanted = wants_schema(policy.output)
        schema = wanted and parsed is not None and parsed >= SCHEMA_MIN_VERSION
        request = self.build(policy, content, schema=schema)
        result = ReviewResult(
            status="failed",
            policy=policy,
            content=content,
            model=request.model,
            effort=request.think,
            request=request,
        )
        skipped = None
        if wanted and not schema and version:
            skipped = (
                f"Ollama {version} cannot hold the answer to the verdict schema (0.12.4 and "
                "later can), so the model was only asked for JSON; update Ollama for stricter "
                "answers."
            )
        unsaved: str | None = None
        if self.history is not None:
            # Provenance first (cached per model), so finishing needs no network call.
            digest = await self.model_digest(request.model)
            try:
                result.review_id = await asyncio.to_thread(
                    self._start, request, policy, content, version, digest
                )
            except HistoryError as exc:
                unsaved = f"This review is not saved in the history: {exc}"
        thinking: list[str] = []
        answer: list[str] = []
        last_save = time.monotonic()
        try:
            async with contextlib.aclosing(self.client.classify(request)) as events:
                async for event in events:
                    if isinstance(event, ThinkingDelta):
                        thinking.append(event.text)
                        if on_delta:
                            on_delta("thinking", event.text)
                    elif isinstance(event, AnswerDelta):
                        answer.append(event.text)
                        if on_delta:
                            on_delta("answer", event.text)
                    elif isinstance(event, Done):
                        result.stats = event.stats
                    if (
                        result.review_id is not None
                        and time.monotonic() - last_save >= PROGRESS_EVERY_S
                    ):
                        last_save = time.monotonic()
                        await self._save_progress(result, thinking, answer)
        except EngineError as exc:
            result.error = exc
        except Exception as exc:  # a bug of ours: still record the review before it surfaces
            result.reasoning, result.answer = "".join(thinking), "".join(answer)
            result.error = InternalError(detail=str(exc))
            await self._finish(result)
            raise
        except asyncio.CancelledError:
            result.status = "cancelled"
            result.reasoning, result.answer = "".join(thinking), "".join(answer)
            await asyncio.shield(self._finish(result))
            raise
        result.reasoning, result.answer = "".join(thinking), "".join(answer)
        if result.error is None:
            result.status = "done"
            done_reason = result.stats.done_reason if result.stats else None
            result.verdict = parse_verdict(
                result.answer,
                done_reason=done_reason,
                labels=policy.labels,
                escalate=policy.escalate,
            )
        # Off the event loop: on a long reasoning this takes tens of milliseconds.
        result.highlights = await asyncio.to_thread(
            review_highlights, result.reasoning, request.user, policy
        )
        if result.error is None:  # a failed review says why in its error
            result.warnings = review_warnings(
                policy, result.model, result.verdict, schema_skipped=skipped
            )
        problem = unsaved or await self._finish(result)
        if problem:
            result.warnings.append(problem)
        return result

    def _start(
        self,
        request: ChatRequest,
        policy: Policy,
        content: Content,
        version: str | None,
        digest: str | None,
    ) -> int:
        assert self.history is not None
        return self.history.start_review(
            content=content.to_dict(),
            content_text=request.user,
            content_kind=content.kind,
            policy_sha256=policy.sha256,
            policy_id=policy.id,
            policy_version=policy.version,
            policy_title=policy.title,
            policy_text=policy.text,
            model=request.model,
            effort=request.think,
            num_ctx=request.num_ctx,
            seed=request.seed,
            temperature=request.temperature,
            moderator=self.options.moderator,
            source=self.options.source,
            host=self.client.endpoint.url,
            ollama_version=version,
            model_digest=digest,
        )

    async def _save_progress(
        self, result: ReviewResult, thinking: list[str], answer: list[str]
    ) -> None:
        """Keep the partial stream; a full disk must not stop the review itself."""
        assert self.history is not None and result.review_id is not None
        try:
            await asyncio.to_thread(
                self.history.save_progress,
                result.review_id,
                reasoning="".join(thinking),
                answer="".join(answer),
            )
        except HistoryError as exc:
            log.warning("progress of review %s not saved: %s", result.review_id, exc)

    async def _finish(self, result: ReviewResult) -> str | None:
        """Record the outcome; returns a sentence when it could not be (the result stands)."""
        if self.history is None or result.review_id is None:
            return None
        try:
            await asyncio.to_thread(
                self.history.finish_review,
                result.review_id,
                status=result.status,
                reasoning=result.reasoning,
                answer=result.answer,
                verdict=result.verdict.to_dict() if result.verdict else None,
                stats=result.stats.to_dict() if result.stats else None,
                error=str(result.error) if result.error else None,
            )
        except HistoryError as exc:
            log.warning("review %s not saved: %s", result.review_id, exc)
            return f"This review is not saved in the history: {exc}"
        result.saved = True
        return None
