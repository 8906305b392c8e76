"""One review, end to end: request, stream, verdict, history. Used by the GUI and the CLI.

No widgets here: progress reaches the caller through a plain callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from safeguard_desktop.core.content import Content
from safeguard_desktop.core.highlight import Highlights, highlight
from safeguard_desktop.core.policy import Policy
from safeguard_desktop.core.prompt import ChatRequest, build_request, system_prompt, wants_schema
from safeguard_desktop.core.tokens import (
    prompt_estimate,
    prompt_floor,
    tokens_needed,
    truncated,
    window_size,
)
from safeguard_desktop.core.verdict import Verdict, parse_verdict
from safeguard_desktop.engine.backend import context_limit as server_context_limit
from safeguard_desktop.engine.backend import model_digest as server_model_digest
from safeguard_desktop.engine.client import AnswerDelta, Done, OllamaClient, Stats, ThinkingDelta
from safeguard_desktop.engine.errors import EngineError, InternalError
from safeguard_desktop.engine.openai_client import OpenAIClient
from safeguard_desktop.store.history import History, HistoryError

__all__ = [
    "PromptTooLong",
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
# The partial stream is written this often (one write at a time, off the event loop), so a
# killed process loses at most this much reasoning plus what streamed during one write.
PROGRESS_EVERY_S = 0.25
SCHEMA_MIN_VERSION = (0, 12, 4)  # Ollama applies `format` after the thinking phase from here on


class PromptTooLong(EngineError):
    """The policy and content need a larger context window than the model has: nothing is sent,
    since Ollama would cut the prompt from the front and drop the policy."""

    def __init__(self, *, model: str, effort: str, estimate: int, needed: int, limit: int) -> None:
        lower = ", or lower the effort" if effort != "low" else ""
        super().__init__(
            f"The policy and the content take about {estimate:,} tokens; with room for the "
            f"model's reasoning at effort {effort} the review needs a {needed:,}-token context "
            f"window, but {model} holds at most {limit:,} tokens, so it was not sent. Shorten "
            f"the policy (OpenAI advises under 10,000 tokens) or the content{lower}."
        )
        self.estimate, self.needed, self.limit = estimate, needed, limit


def truncation_warning(count: int, *, estimate: int, floor: int, num_ctx: int) -> str:
    if count >= num_ctx:
        seen = f"the prompt filled the whole {num_ctx:,}-token window ({count:,} tokens)"
    else:
        seen = f"Ollama read {count:,} prompt tokens where at least {floor:,} were sent"
    return (
        f"The policy may have been truncated: {seen}; the prompt is about {estimate:,} tokens. "
        "Ollama drops the start of a prompt that does not fit, so the model may not have seen "
        "the whole policy: check the model's context length on the server and run it again."
    )


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
    saved: bool = False  # recorded in the history (see `unsaved` when it was not)
    unsaved: str | None = None  # why it is not in the history (also one of the warnings)

    @property
    def can_save_again(self) -> bool:
        """Finished, kept out of the history by a storage failure: `Reviewer.save` may take it."""
        return self.unsaved is not None and not self.saved and self.request is not None

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
        if self.review_id is not None and self.saved:
            out["review_id"] = self.review_id
        out["saved"] = self.saved
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
        self,
        client: OllamaClient | OpenAIClient,
        options: ReviewOptions,
        history: History | None = None,
    ) -> None:
        self.client = client
        self.options = options
        self.history = history
        self._server_version: str | None = None
        self._version_checked = False
        self._digests: dict[str, str | None] = {}
        self._contexts: dict[str, int | None] = {}

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
                self._digests[model] = await server_model_digest(self.client, model)
            except EngineError as exc:  # provenance is best effort; the review itself reports
                log.debug("model digest lookup failed: %s", exc)
                return None
        return self._digests.get(model)

    async def context_limit(self, model: str) -> int | None:
        """The model's context length from `/api/show` (cached; None when unknown)."""
        if model not in self._contexts:
            try:
                self._contexts[model] = await server_context_limit(self.client, model)
            except EngineError as exc:  # e.g. not installed: the chat call says so itself
                log.debug("context length of %s unknown: %s", model, exc)
                return None
        return self._contexts[model]

    def build(self, policy: Policy, content: Content, *, schema: bool) -> ChatRequest:
        """The request with the setting's window; `review` widens it to fit (see core.tokens)."""
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
        self,
        policy: Policy,
        content: Content,
        *,
        on_delta: DeltaCallback | None = None,
        on_answered: Callable[[], None] | None = None,
    ) -> ReviewResult:
        """Classify one item. Never raises EngineError: a failure is a result with status failed.

        Cancelling the awaiting task while the answer streams records the review as cancelled
        and re-raises. Once the stream has ended (`on_answered` is called then), the answer is
        the model's whole answer: a cancel still lets it be parsed and recorded as it is, then
        re-raises.
        """
        version = await self.server_version()
        parsed = version_tuple(version)
        wanted = wants_schema(policy.output)
        if getattr(self.client, "kind", "ollama") == "openai":
            schema = wanted  # sent as response_format; a server that refuses it is asked again
        else:
            schema = wanted and parsed is not None and parsed >= SCHEMA_MIN_VERSION
        request = self.build(policy, content, schema=schema)
        estimate = prompt_estimate(request.system, request.user)
        needed = tokens_needed(estimate, request.think)
        limit = await self.context_limit(request.model)
        result = ReviewResult(
            status="failed",
            policy=policy,
            content=content,
            model=request.model,
            effort=request.think,
            request=request,
        )
        if limit is not None and needed > limit:
            result.error = PromptTooLong(
                model=request.model,
                effort=request.think,
                estimate=estimate,
                needed=needed,
                limit=limit,
            )
            return result
        # The setting is the smallest window; a longer policy or content gets a larger one.
        request = dataclasses.replace(
            request, num_ctx=window_size(needed, self.options.num_ctx, limit)
        )
        result.request = request
        skipped = None
        if wanted and not schema and version and getattr(self.client, "kind", "") != "openai":
            skipped = (
                f"Ollama {version} cannot hold the answer to the verdict schema (0.12.4 and "
                "later can), so the model was only asked for JSON; update Ollama for stricter "
                "answers."
            )
        if self.history is not None:
            # Provenance first (cached per model), so finishing needs no network call.
            digest = await self.model_digest(request.model)
            try:
                result.review_id = await asyncio.to_thread(
                    self._start, request, policy, content, version, digest
                )
            except HistoryError as exc:
                result.unsaved = f"This review is not saved in the history: {exc}"
        thinking: list[str] = []
        answer: list[str] = []
        saver = (
            ProgressSaver(self.history, result.review_id, thinking, answer)
            if self.history is not None and result.review_id is not None
            else None
        )
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
                    if saver is not None:
                        saver.offer()
        except EngineError as exc:
            result.error = exc
        except Exception as exc:  # a bug of ours: still record the review before it surfaces
            result.reasoning, result.answer = "".join(thinking), "".join(answer)
            result.error = InternalError(detail=str(exc))
            await self._close(result, saver)
            raise
        except asyncio.CancelledError:
            result.status = "cancelled"
            result.reasoning, result.answer = "".join(thinking), "".join(answer)
            await asyncio.shield(self._close(result, saver))
            raise
        result.reasoning, result.answer = "".join(thinking), "".join(answer)
        if on_answered is not None:
            on_answered()
        finishing = asyncio.ensure_future(
            self._conclude(result, policy, request, estimate, skipped, saver)
        )
        try:
            return await asyncio.shield(finishing)
        except asyncio.CancelledError:
            await finishing  # recorded whole, not left "running" nor called cancelled
            raise

    async def _conclude(
        self,
        result: ReviewResult,
        policy: Policy,
        request: ChatRequest,
        estimate: int,
        skipped: str | None,
        saver: ProgressSaver | None,
    ) -> ReviewResult:
        """The verdict, highlights and warnings of a whole answer, and its record."""
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
            count = result.stats.prompt_eval_count if result.stats else 0
            floor = prompt_floor(request.system, request.user)
            if truncated(count, floor=floor, num_ctx=request.num_ctx):
                result.warnings.append(
                    truncation_warning(
                        count, estimate=estimate, floor=floor, num_ctx=request.num_ctx
                    )
                )
        await self._close(result, saver)
        if result.unsaved:
            result.warnings.append(result.unsaved)
        return result

    async def save(self, result: ReviewResult) -> str | None:
        """Record a finished review the history could not take (the moderator's "Save again").

        Returns None once it is saved, else the sentence saying why it still is not (it then
        replaces the old one in `result.warnings`). Database work runs off the event loop.
        """
        if result.saved:
            return None
        if self.history is None or result.request is None:
            return "This review cannot be saved: no history is open."
        request = result.request
        try:
            if result.review_id is not None:
                try:
                    await asyncio.to_thread(self._record, result)
                except KeyError:  # the started row is gone (deleted meanwhile): write it anew
                    result.review_id = None
                except ValueError:  # already finished there: it is in the history
                    log.info("review %s was already recorded", result.review_id)
            if result.review_id is None:
                digest = self._digests.get(request.model)
                result.review_id = await asyncio.to_thread(
                    self._start,
                    request,
                    result.policy,
                    result.content,
                    self._server_version,
                    digest,
                )
                await asyncio.to_thread(self._record, result)
        except HistoryError as exc:
            log.warning("review not saved again: %s", exc)
            self._set_unsaved(result, f"This review is still not saved in the history: {exc}")
            return result.unsaved
        self._set_unsaved(result, None)
        result.saved = True
        return None

    @staticmethod
    def _set_unsaved(result: ReviewResult, problem: str | None) -> None:
        if result.unsaved in result.warnings:
            result.warnings.remove(result.unsaved)
        result.unsaved = problem
        if problem:
            result.warnings.append(problem)

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
            backend=getattr(self.client, "kind", "ollama"),
        )

    async def _close(self, result: ReviewResult, saver: ProgressSaver | None) -> None:
        """Let the last progress write land, then record the outcome (once)."""
        if saver is not None:
            await saver.drain()
        if result.unsaved is None:
            await self._finish(result)

    def _record(self, result: ReviewResult) -> None:
        """Write the outcome (in a thread). Raises HistoryError, KeyError, ValueError."""
        assert self.history is not None and result.review_id is not None
        self.history.finish_review(
            result.review_id,
            status=result.status,
            reasoning=result.reasoning,
            answer=result.answer,
            verdict=result.verdict.to_dict() if result.verdict else None,
            stats=result.stats.to_dict() if result.stats else None,
            error=str(result.error) if result.error else None,
        )

    async def _finish(self, result: ReviewResult) -> None:
        """Record the outcome; when it cannot be, `result.unsaved` says why (the result stands)."""
        if self.history is None or result.review_id is None:
            return
        try:
            await asyncio.to_thread(self._record, result)
        except HistoryError as exc:
            log.warning("review %s not saved: %s", result.review_id, exc)
            result.unsaved = f"This review is not saved in the history: {exc}"
            return
        result.saved = True


class ProgressSaver:
    """Keeps the partial stream of a running review in the history as it grows.

    A write starts `every` seconds after the previous one started, or as soon as it ends when
    it took longer; one write at a time, in a thread, so the stream is never held up by the
    disk. Tokens that arrive between writes are written when the next one is due even if the
    stream then stalls, so a killed process loses at most `every` seconds of the stream plus
    the tokens that arrived while the last write was under way. A failed write (full disk)
    is logged once and the next one is tried.
    """

    def __init__(
        self,
        history: History,
        review_id: int,
        thinking: list[str],
        answer: list[str],
        every: float = PROGRESS_EVERY_S,
    ) -> None:
        self.history = history
        self.review_id = review_id
        self.every = every
        self.failures = 0
        self._thinking, self._answer = thinking, answer  # the live lists of the stream
        self._dirty = False
        self._closed = False
        self._last = time.monotonic()  # start_review has just written the row
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Future[None] | None = None

    def offer(self) -> None:
        """New tokens arrived: write them when the next write is due."""
        self._dirty = True
        self._schedule()

    def _busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def _schedule(self) -> None:
        if self._closed or self._timer is not None or self._busy() or not self._dirty:
            return
        delay = self._last + self.every - time.monotonic()
        if delay <= 0:
            self._start()
        else:
            self._timer = asyncio.get_running_loop().call_later(delay, self._due)

    def _due(self) -> None:
        self._timer = None
        self._schedule()

    def _start(self) -> None:
        self._dirty = False
        self._last = time.monotonic()
        reasoning, text = "".join(self._thinking), "".join(self._answer)
        self._task = asyncio.ensure_future(asyncio.to_thread(self._write, reasoning, text))
        self._task.add_done_callback(lambda _task: self._schedule())

    def _write(self, reasoning: str, answer: str) -> None:
        try:
            self.history.save_progress(self.review_id, reasoning=reasoning, answer=answer)
        except HistoryError as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning("progress of review %s not saved: %s", self.review_id, exc)

    async def drain(self) -> None:
        """Stop writing; wait for the write in flight (a bug in it is logged: the outcome is
        written next anyway)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await task
        except Exception:
            log.exception("progress of review %s not saved", self.review_id)
