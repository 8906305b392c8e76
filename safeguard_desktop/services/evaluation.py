"""The policy workbench's back end: labelled sets, evaluation runs, metrics, comparisons and
the Markdown report, as the CLI (and later the workbench view) use them.

An evaluation run is one policy version (sha256) x one labelled set x one model x one effort,
run by the one batch runner: N requests in flight, Retry with backoff on a busy or absent
server, a clean stop. Every prediction is an ordinary review in the history (source "eval")
with its reasoning, recorded finished together with its link to the item, so a run killed
half-way (kill -9, Ctrl+C) is continued by running the same evaluation again: exactly one
finished review per item. An answer that could not be read (unparsed, incomplete) or a
request that failed is counted on its own, never taken as safe.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import difflib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safeguard_desktop import __version__
from safeguard_desktop.core.content import Content, ContentError, loads_json
from safeguard_desktop.core.importers import decode_text
from safeguard_desktop.core.labelsets import (
    LabelledItem,
    LabelSetError,
    builtin_truth,
    labelset_checksum,
    read_labelset,
)
from safeguard_desktop.core.metrics import (
    COMPARED,
    UNDECIDED,
    Comparison,
    Metrics,
    MetricsError,
    Outcome,
    Prediction,
    compare_runs,
    compute_metrics,
)
from safeguard_desktop.core.policy import Policy, PolicyError, resolve_policy
from safeguard_desktop.core.vocabulary import EFFORTS
from safeguard_desktop.engine.errors import (
    EngineError,
)
from safeguard_desktop.services.batch_runner import (
    Backoff,
    BatchRunner,
    Progress,
    RunReport,
)
from safeguard_desktop.services.batch_runner import Outcome as UnitOutcome
from safeguard_desktop.services.escalation import code_span, fence
from safeguard_desktop.services.hosts import HostConfigError, HostPool, PoolHost
from safeguard_desktop.services.review import ReviewOptions, ReviewResult
from safeguard_desktop.store.db import HistoryError
from safeguard_desktop.store.evaluations import (
    EvalBusy,
    EvalLink,
    EvalRunRow,
    Evaluations,
    EvalUnit,
    LabelSetExists,
    LabelSetRow,
    NewLabelItem,
    NewLabelSet,
    PolicyVersion,
)
from safeguard_desktop.store.queues import FinishedReview

if TYPE_CHECKING:
    from safeguard_desktop.services.session import Session

__all__ = [
    "COMPARED",
    "Backoff",
    "ComparisonView",
    "EngineError",
    "EvaluationError",
    "EvaluationService",
    "FlipView",
    "ItemPrediction",
    "Metrics",
    "Progress",
    "RunDetail",
    "RunInfo",
    "RunOutcome",
    "RunReport",
    "SetInfo",
]

log = logging.getLogger("safeguard.evaluation")
# A labelled set from a history search takes at most this many reviews.
MAX_HISTORY_ITEMS = 10_000
# The report lists at most this many items per group of errors (the rest are counted).
REPORT_ITEMS = 50
# Characters of a reasoning quoted in the report.
EXCERPT = 600
MAX_NAME = 100
_RUNNING: set[tuple[str, int]] = set()  # (history file, run id) run by this process now


class EvaluationError(ValueError):
    """The request cannot be done as asked; str() is one line saying what to do.

    ``values`` holds the distinct label values found when they were the problem, and
    ``columns`` the columns of the file when a column was missing (for a picker)."""

    def __init__(
        self, message: str, *, values: Sequence[str] = (), columns: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.values = tuple(values)
        self.columns = tuple(columns)


# --- what the service hands out ---------------------------------------------------------------


@dataclass(frozen=True)
class SetInfo:
    """A stored labelled set; `reused`: the import found the same items already stored."""

    id: int
    name: str
    source: str
    shape: str
    items: int
    violations: int
    left_out: int
    no_text: int
    ignored: int
    positive: tuple[str, ...]
    checksum: str
    created_at: str
    reused: bool = False

    @property
    def safe(self) -> int:
        return self.items - self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "set": self.id, "name": self.name, "source": self.source, "shape": self.shape,
            "items": self.items, "violations": self.violations, "safe": self.safe,
            "left_out": self.left_out, "no_text": self.no_text, "ignored": self.ignored,
            "positive": list(self.positive), "checksum": self.checksum,
            "created_at": self.created_at, "reused": self.reused,
        }  # fmt: skip


def _set_info(row: LabelSetRow, *, reused: bool = False) -> SetInfo:
    return SetInfo(
        row.id, row.name, row.source, row.shape, row.items, row.violations, row.left_out,
        row.no_text, row.ignored, row.positive, row.checksum, row.created_at, reused,
    )  # fmt: skip


@dataclass(frozen=True)
class RunInfo:
    """One evaluation run: what it measures and how far it got."""

    id: int
    set_id: int
    set_name: str
    set_checksum: str
    policy_id: str
    policy_sha256: str
    policy_version: str | None
    model: str
    effort: str
    created_at: str
    total: int  # items in the set
    done: int  # items with a finished review
    failed: int  # items whose every attempt failed
    running: bool  # another process runs it now

    @property
    def pending(self) -> int:
        """Items not tried yet (or whose attempt was cut off)."""
        return self.total - self.done - self.failed

    @property
    def finished(self) -> bool:
        return self.done == self.total

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.id, "set": self.set_name, "set_id": self.set_id,
            "set_checksum": self.set_checksum, "policy": self.policy_id,
            "policy_sha256": self.policy_sha256, "policy_version": self.policy_version,
            "model": self.model, "effort": self.effort, "created_at": self.created_at,
            "total": self.total, "done": self.done, "failed": self.failed,
            "pending": self.pending, "running": self.running,
        }  # fmt: skip


@dataclass(frozen=True)
class ItemPrediction:
    """One item of a run: its truth and what the model said (None: not classified yet)."""

    position: int
    ref: str | None
    text: str
    truth: bool
    categories: tuple[str, ...]
    predicted: Prediction | None
    review_id: int | None  # the finished review, else the latest failed attempt
    seconds: float | None = None
    tokens: int | None = None

    @property
    def correct(self) -> bool | None:
        if self.predicted is None:
            return None
        return (
            self.predicted in ("violation", "safe")
            and (self.predicted == "violation") == self.truth
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "item": self.position, "ref": self.ref,
            "truth": "violation" if self.truth else "safe", "predicted": self.predicted,
            "correct": self.correct, "categories": list(self.categories),
            "review_id": self.review_id, "seconds": self.seconds, "tokens": self.tokens,
            "text": self.text,
        }  # fmt: skip


@dataclass(frozen=True)
class RunDetail:
    info: RunInfo
    metrics: Metrics
    items: tuple[ItemPrediction, ...]

    def to_json(self) -> dict[str, Any]:
        return {**run_json(self.info, self.metrics), "items": [i.to_json() for i in self.items]}


def run_json(info: RunInfo, metrics: Metrics) -> dict[str, Any]:
    """`eval run --json`: the run's id, then every figure, then what it measured."""
    out: dict[str, Any] = {"run": info.id}
    out.update(metrics.to_json())
    out.update({k: v for k, v in info.to_json().items() if k != "run"})
    return out


@dataclass(frozen=True)
class RunOutcome:
    """What `run` did: the run (continued or new), this call's report, the figures."""

    info: RunInfo
    report: RunReport
    metrics: Metrics
    continued: bool  # an unfinished run of the same evaluation was continued
    reused: bool  # the same evaluation had finished already: nothing was sent

    def to_json(self) -> dict[str, Any]:
        return run_json(self.info, self.metrics)


@dataclass(frozen=True)
class FlipView:
    """An item whose verdict differs between the two runs, with both reviews to open."""

    position: int
    ref: str | None
    text: str
    truth: bool
    a: Prediction
    b: Prediction
    review_a: int | None
    review_b: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "item": self.position, "truth": "violation" if self.truth else "safe",
            "a": self.a, "b": self.b, "ref": self.ref, "review_a": self.review_a,
            "review_b": self.review_b,
        }  # fmt: skip


@dataclass(frozen=True)
class ComparisonView:
    """Two runs of one set side by side: core's comparison, the flips with their reviews,
    and the two policy texts with their unified diff (empty for the same version)."""

    a: RunInfo
    b: RunInfo
    comparison: Comparison
    flips: tuple[FlipView, ...]
    policy_a: str
    policy_b: str
    policy_diff: str

    @property
    def mcnemar_p(self) -> float:
        return self.comparison.mcnemar_p

    def to_json(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "a": run_json(self.a, c.a), "b": run_json(self.b, c.b),
            "difference": dict(c.difference), "only_a_correct": c.only_a_correct,
            "only_b_correct": c.only_b_correct, "mcnemar_p": c.mcnemar_p,
            "flips": [f.to_json() for f in self.flips], "policy_diff": self.policy_diff,
        }  # fmt: skip


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise EvaluationError("The set name is empty: give it a short name, such as spam-golden.")
    if len(name) > MAX_NAME or any(ch < " " or ch == "\x7f" for ch in name):
        raise EvaluationError(
            f"The set name must be one line of at most {MAX_NAME} characters; choose a "
            "shorter name."
        )
    return name


def _truth_word(truth: bool) -> str:
    return "violation" if truth else "safe"


# --- the service -----------------------------------------------------------------------------


class EvaluationService:
    """Labelled sets and evaluation runs of one session's history. Everything but `run` is
    a quick synchronous call (run it off the GUI thread); `run` is a coroutine. Errors:
    EvaluationError (what was asked cannot be done), HistoryError (the file's fault),
    EngineError from `run` (server gone, model missing)."""

    def __init__(self, session: Session, store: Evaluations) -> None:
        self.session = session
        self.store = store

    # --- labelled sets ----------------------------------------------------------------------

    def import_set(
        self,
        path: Path | str,
        name: str | None = None,
        *,
        text_column: str | None = None,
        label_column: str | None = None,
        positive: Sequence[str] | None = None,
    ) -> SetInfo:
        """Store the labelled set of a file (JSON Lines, JSON, CSV, a CSV with section rows,
        or a `queue export` .jsonl whose decisions are the labels). The same items imported
        again give the stored set back (`reused`). Without `name`, the file's name."""
        path = Path(path)
        if _is_queue_export(path):
            if text_column or label_column or positive:
                raise EvaluationError(
                    f"{path.name} is a queue export: its labels are the moderators' decisions, "
                    "so --text-column, --label-column and --positive do not apply."
                )
            new = _queue_export_set(path)
        else:
            try:
                labelset = read_labelset(
                    path, text_column=text_column, label_column=label_column, positive=positive
                )
            except LabelSetError as exc:
                raise EvaluationError(str(exc), values=exc.values, columns=exc.columns) from None
            s = labelset.summary
            new = NewLabelSet(
                name=s.name, source=path.name, shape=s.shape, text_column=s.text_column,
                label_column=s.label_column, positive=s.positive, checksum=s.checksum,
                items=[_new_item(i) for i in labelset.items], rows=s.rows,
                left_out=s.left_out, no_text=s.no_text, ignored=s.ignored,
            )  # fmt: skip
        return self._store_set(new, name)

    def import_history(
        self, name: str, query: str | None = None, *, policy: str | None = None
    ) -> SetInfo:
        """A labelled set from the moderators' decisions in the history: an agree confirms
        the review's verdict, an override gives its label. `query` narrows the reviews as
        the History's search does; `policy` keeps one policy id's reviews. Each distinct
        content once (its newest decided review); escalated, skipped and undecided reviews
        are not ground truth and are left out."""
        name = _check_name(name)
        history = self.session.history
        if history is None:
            raise EvaluationError("No history is open to read decisions from; fix it first.")
        if query is not None and query.strip():
            found = history.search(query, limit=MAX_HISTORY_ITEMS + 1)
            if len(found) > MAX_HISTORY_ITEMS:
                raise EvaluationError(
                    f"The history search {query!r} matches more than {MAX_HISTORY_ITEMS:,} "
                    "reviews; add words to narrow it."
                )
            rows = self.store.decided_reviews(review_ids=[r.id for r in found], policy_id=policy)
            what = f"The history search {query!r}"
        else:
            rows = self.store.decided_reviews(policy_id=policy)
            what = "The history"
        items: list[LabelledItem] = []
        seen: set[str] = set()
        left_out = duplicates = 0
        for row in rows:
            if row.action == "override":
                truth = builtin_truth(row.label or "")
            else:
                truth = {"violation": True, "safe": False}.get(row.verdict_label or "")
            if truth is None:
                left_out += 1
                continue
            if row.content_text in seen:
                duplicates += 1
                continue
            seen.add(row.content_text)
            items.append(LabelledItem(row.content_text, truth, (), f"review #{row.review_id}"))
        if not items:
            raise EvaluationError(
                f"{what} holds no review with an agree or override decision"
                + (f" for policy {policy!r}" if policy else "")
                + "; decide some reviews first."
            )
        source = "history" + (f" search {query.strip()!r}" if query and query.strip() else "")
        new = NewLabelSet(
            name=name, source=source, shape="history", text_column=None, label_column=None,
            positive=(), checksum=labelset_checksum(items),
            items=[_new_item(i) for i in items], rows=len(rows), left_out=left_out,
            ignored=duplicates,
        )  # fmt: skip
        return self._store_set(new, name)

    def _store_set(self, new: NewLabelSet, name: str | None) -> SetInfo:
        chosen = _check_name(name) if name is not None else None
        wanted = chosen or _check_name(new.name[:MAX_NAME])
        if chosen is None:  # an automatic name: the next free one
            number = 1
            while self.store.name_taken(wanted):
                same = self.store.set_named(wanted)
                if same is not None and same.checksum == new.checksum:
                    break
                number += 1
                suffix = f" ({number})"
                wanted = new.name[: MAX_NAME - len(suffix)] + suffix
        try:
            row, created = self.store.add_set(dataclasses.replace(new, name=wanted))
        except LabelSetExists as exc:
            raise EvaluationError(str(exc)) from None
        return _set_info(row, reused=not created)

    def sets(self) -> list[SetInfo]:
        """Every stored labelled set, newest first."""
        return [_set_info(r) for r in self.store.sets()]

    def labelled_set(self, ref: str) -> SetInfo:
        """A stored set by name or id."""
        return _set_info(self._set(ref))

    def _set(self, ref: str) -> LabelSetRow:
        row = self.store.set_named(ref.strip())
        if row is None and ref.strip().isdigit():
            row = self.store.set_by_id(int(ref.strip()))
        if row is None:
            raise EvaluationError(
                f"There is no labelled set named {ref!r}. `safeguard-desktop eval sets` shows "
                "them; give a file to import one."
            )
        return row

    def _set_for(
        self,
        labels: Path | str,
        text_column: str | None,
        label_column: str | None,
        positive: Sequence[str] | None,
    ) -> LabelSetRow:
        """A file to import (or find again by checksum), else a stored set's name."""
        path = Path(labels)
        if path.exists() or isinstance(labels, Path):
            info = self.import_set(
                path, text_column=text_column, label_column=label_column, positive=positive
            )
            row = self.store.set_by_id(info.id)
            assert row is not None
            return row
        if self.store.set_named(str(labels).strip()) is None and not str(labels).strip().isdigit():
            raise EvaluationError(
                f"File not found: {labels}; check the path (or name a stored labelled set: "
                "`safeguard-desktop eval sets` lists them)."
            )
        return self._set(str(labels))

    # --- runs -------------------------------------------------------------------------------

    def _run_row(self, run_id: int | str) -> EvalRunRow:
        text = str(run_id).strip().removeprefix("#")
        row = self.store.run(int(text)) if text.isdigit() and len(text) < 19 else None
        if row is None:
            raise EvaluationError(
                f"There is no evaluation run {run_id}. `safeguard-desktop eval list` shows them."
            )
        return row

    def _info(
        self,
        run: EvalRunRow,
        sets: Mapping[int, LabelSetRow] | None = None,
        counts: Mapping[int, tuple[int, int]] | None = None,
    ) -> RunInfo:
        labelled = (sets or {}).get(run.label_set_id) or self.store.set_by_id(run.label_set_id)
        assert labelled is not None  # a run goes with its set (ON DELETE CASCADE)
        done, failed = (counts if counts is not None else self.store.counts()).get(run.id, (0, 0))
        policy = self.store.policy(run.policy_sha256)
        return RunInfo(
            id=run.id, set_id=labelled.id, set_name=labelled.name,
            set_checksum=labelled.checksum, policy_id=run.policy_id,
            policy_sha256=run.policy_sha256, policy_version=policy.version if policy else None,
            model=run.model, effort=run.effort, created_at=run.created_at,
            total=labelled.items, done=done, failed=failed,
            running=self.store.runner_alive(run),
        )  # fmt: skip

    def info(self, run_id: int | str) -> RunInfo:
        return self._info(self._run_row(run_id))

    def list(self) -> list[RunInfo]:
        """Every run, newest first."""
        sets = {s.id: s for s in self.store.sets()}
        counts = self.store.counts()
        return [self._info(r, sets, counts) for r in self.store.runs()]

    def _predictions(self, run: EvalRunRow) -> builtins.list[ItemPrediction]:
        links: dict[int, EvalLink] = {}
        for link in self.store.links(run.id):
            kept = links.get(link.item_id)
            if kept is None or kept.outcome != "done":  # a finished review wins over failures
                links[link.item_id] = link
        out = []
        for item in self.store.items(run.label_set_id):
            found = links.get(item.id)
            out.append(
                ItemPrediction(
                    item.position, item.ref, item.text, item.truth, item.categories,
                    _prediction(found.label) if found else None,
                    found.review_id if found else None, found.seconds if found else None,
                    found.tokens if found else None,
                )
            )  # fmt: skip
        return out

    @staticmethod
    def _outcomes(predictions: Sequence[ItemPrediction]) -> builtins.list[Outcome]:
        return [
            Outcome(str(p.position), p.truth, p.predicted, p.categories, p.seconds, p.tokens)
            for p in predictions
            if p.predicted is not None
        ]

    def metrics(self, run_id: int | str) -> Metrics:
        """The run's figures over the items classified so far (an item not tried yet is in
        no count; RunInfo.pending says how many)."""
        return compute_metrics(self._outcomes(self._predictions(self._run_row(run_id))))

    def show(self, run_id: int | str) -> RunDetail:
        """The run, its figures and every item's prediction (in the set's order)."""
        run = self._run_row(run_id)
        predictions = self._predictions(run)
        return RunDetail(
            self._info(run), compute_metrics(self._outcomes(predictions)), tuple(predictions)
        )

    def delete(self, run_id: int | str) -> None:
        """The run and its links; its reviews stay in the history."""
        run = self._run_row(run_id)
        if self.store.runner_alive(run):
            raise EvaluationError(f"Evaluation run {run.id} is being run; stop that run first.")
        self.store.delete_run(run.id)

    # --- comparing --------------------------------------------------------------------------

    def compare(self, a: int | str, b: int | str) -> ComparisonView:
        """Run B against run A on the same labelled set: figures side by side, McNemar on
        the items only one got right, the flips with both reviews, the policy diff."""
        run_a, run_b = self._run_row(a), self._run_row(b)
        if run_a.label_set_id != run_b.label_set_id:
            raise EvaluationError(
                f"Runs {run_a.id} and {run_b.id} are on different labelled sets; compare two "
                "runs of the same set."
            )
        info_a, info_b = self._info(run_a), self._info(run_b)
        for info in (info_a, info_b):
            if info.pending:
                raise EvaluationError(
                    f"Run {info.id} is not finished ({info.pending} of {info.total} items still "
                    "to do); run the same evaluation again to finish it, then compare."
                )
        pred_a, pred_b = self._predictions(run_a), self._predictions(run_b)
        try:
            comparison = compare_runs(self._outcomes(pred_a), self._outcomes(pred_b))
        except MetricsError as exc:
            raise EvaluationError(str(exc)) from None
        by_a = {str(p.position): p for p in pred_a}
        by_b = {str(p.position): p for p in pred_b}
        flips = tuple(
            FlipView(
                by_a[f.item].position, by_a[f.item].ref, by_a[f.item].text, f.truth, f.a, f.b,
                by_a[f.item].review_id, by_b[f.item].review_id,
            )
            for f in comparison.flips
        )  # fmt: skip
        text_a, text_b = self._policy_text(run_a), self._policy_text(run_b)
        diff = ""
        if run_a.policy_sha256 != run_b.policy_sha256:
            diff = "".join(
                difflib.unified_diff(
                    _lines(text_a), _lines(text_b),
                    fromfile=f"run {run_a.id}: {run_a.policy_id} {run_a.policy_sha256[:12]}",
                    tofile=f"run {run_b.id}: {run_b.policy_id} {run_b.policy_sha256[:12]}",
                )
            )  # fmt: skip
        return ComparisonView(info_a, info_b, comparison, flips, text_a, text_b, diff)

    def _policy_text(self, run: EvalRunRow) -> str:
        policy = self.store.policy(run.policy_sha256)
        return policy.text if policy is not None else ""

    # --- the report -------------------------------------------------------------------------

    def report(self, run_id: int | str, out: Path, *, against: int | str | None = None) -> Path:
        """Write the run's Markdown report (with a comparison when `against` names another
        run of the same set); the file appears whole or not at all."""
        if out.suffix.lower() not in (".md", ".markdown"):
            raise EvaluationError(f"Write the report to a .md file, not {out.name!r}.")
        _write_whole(out, self.report_markdown(run_id, against=against))
        return out

    def report_markdown(self, run_id: int | str, *, against: int | str | None = None) -> str:
        detail = self.show(run_id)
        comparison = self.compare(against, run_id) if against is not None else None
        reasoning = self._reasoning_lookup()
        return _report(
            detail,
            self.store.set_by_id(detail.info.set_id),
            self.store.provenance(detail.info.id),
            comparison,
            reasoning,
        )

    def _reasoning_lookup(self) -> Callable[[int | None], str | None]:
        history = self.session.history
        cache: dict[int, str | None] = {}

        def lookup(review_id: int | None) -> str | None:
            if review_id is None or history is None:
                return None
            if review_id not in cache:
                review = history.get(review_id)
                cache[review_id] = None if review is None else review.reasoning
            return cache[review_id]

        return lookup

    # --- running ----------------------------------------------------------------------------

    def _policy(self, ref: str) -> Policy:
        try:
            return resolve_policy(ref, folders=self.session.policy_folders())
        except PolicyError as exc:
            raise EvaluationError(str(exc)) from None

    async def run(
        self,
        policy_ref: str,
        labels: Path | str,
        *,
        text_column: str | None = None,
        label_column: str | None = None,
        positive: Sequence[str] | None = None,
        model: str | None = None,
        effort: str | None = None,
        parallel: int | None = None,
        hosts: Sequence[str] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
        stop: asyncio.Event | None = None,
        backoff: Backoff | None = None,
        fresh: bool = False,
    ) -> RunOutcome:
        """Evaluate a policy (id or file) on a labelled set (a file, imported or found again
        by checksum, or a stored set's name), over the hosts named (default: every enabled
        host; with --host only that server), `parallel` requests in flight on the local one
        (default: the num_parallel setting), the others with their slots.

        The same evaluation (policy version, set, model, effort) run again continues its
        unfinished run, or gives the finished one back without sending anything; `fresh`
        starts a new run regardless. Cancelling (Ctrl+C) or `stop` keeps what finished.
        Raises EvaluationError, HistoryError, or the EngineError that stopped the run."""
        if effort is not None and effort not in EFFORTS:
            raise EvaluationError(f"Unknown effort {effort!r}: use one of {', '.join(EFFORTS)}.")
        n = int(parallel or self.session.settings["num_parallel"])
        if n < 1:
            raise EvaluationError("--parallel must be at least 1.")
        policy = self._policy(policy_ref)
        labelled = await asyncio.to_thread(
            self._set_for, labels, text_column, label_column, positive
        )
        options = self.session.review_options(source="eval", model=model, effort=effort)
        options = dataclasses.replace(options, effort=options.effort_for(policy))
        assert options.effort is not None
        version = PolicyVersion(policy.sha256, policy.id, policy.title, policy.version, policy.text)
        run = None if fresh else await asyncio.to_thread(
            self.store.find_run, labelled.id, policy.sha256, options.model, options.effort
        )  # fmt: skip
        continued = run is not None
        if run is None:
            moderator = str(self.session.settings["moderator"] or "")
            run = await asyncio.to_thread(
                lambda: self.store.create_run(
                    labelled.id, version, model=options.model, effort=str(options.effort),
                    moderator=moderator,
                )
            )  # fmt: skip
        key = (str(self.store.history.path), run.id)
        if key in _RUNNING:
            raise EvaluationError(f"Evaluation run {run.id} is already running in this window.")
        _RUNNING.add(key)
        try:
            try:
                await asyncio.to_thread(self.store.claim, run.id)
            except EvalBusy as exc:
                raise EvaluationError(str(exc)) from None
            try:
                job = _Job(self, run, policy, options)
                report = await job.run(n, hosts, on_progress, on_warning, stop, backoff)
            finally:
                with contextlib.suppress(HistoryError):
                    await asyncio.shield(asyncio.to_thread(self.store.release, run.id))
        finally:
            _RUNNING.discard(key)
        info = await asyncio.to_thread(self.info, run.id)
        metrics = await asyncio.to_thread(self.metrics, run.id)
        reused = continued and job.total == 0
        return RunOutcome(info, report, metrics, continued and not reused, reused)


class _Job:
    """One call of `run` on one evaluation run: the items left, the reviewer, provenance."""

    def __init__(
        self, service: EvaluationService, run: EvalRunRow, policy: Policy, options: ReviewOptions
    ) -> None:
        self.service = service
        self.store = service.store
        self.run_row = run
        self.policy = policy
        self.options = options
        self.total = 0
        self.pool: HostPool | None = None

    async def run(
        self,
        parallel: int,
        hosts: Sequence[str] | None,
        on_progress: Callable[[Progress], None] | None,
        on_warning: Callable[[str], None] | None,
        stop: asyncio.Event | None,
        backoff: Backoff | None,
    ) -> RunReport:
        units = await asyncio.to_thread(self.store.units, self.run_row.id)
        items = await asyncio.to_thread(self.store.items, self.run_row.label_set_id)
        self.total = len(units)
        if units:  # no server is asked anything when nothing is left to do
            try:
                self.pool = await self.service.session.hosts().pool(
                    self.options, hosts, parallel=parallel
                )
            except HostConfigError as exc:
                raise EvaluationError(str(exc)) from None
            parallel = self.pool.parallel
            self.pool.on_event = on_warning
            for warning in self.pool.warnings:
                log.warning("evaluation run %d: %s", self.run_row.id, warning)
                if on_warning is not None:
                    on_warning(warning)
        runner: BatchRunner[EvalUnit] = BatchRunner(parallel=parallel, backoff=backoff)
        try:
            report = await runner.run(
                units,
                self.do_one,
                on_progress=on_progress,
                done_before=len(items) - len(units),
                stop=stop,
            )
            return dataclasses.replace(report, by_host=self.pool.summary() if self.pool else None)
        finally:
            if self.pool is not None:
                await self.pool.aclose()

    async def do_one(self, unit: EvalUnit) -> UnitOutcome:
        if await asyncio.to_thread(self.store.done, unit):
            return "skipped"
        assert self.pool is not None
        # Raises Retry (busy, or its host went away: again, maybe on another host) or what
        # stops the run; frees the runner's slot once the answer is in.
        content = Content(kind="message", text=unit.text)
        result, host = await self.pool.review(self.policy, content)
        label = _result_label(result)
        seconds, tokens = _stats_figures(result)
        review_id = await asyncio.to_thread(
            lambda: self.store.record(
                unit, self._finished_review(result, host), label=label, seconds=seconds,
                tokens=tokens,
            )
        )  # fmt: skip
        if review_id is None:
            log.warning("run %d item %d already had a finished review", unit.run_id, unit.position)
            return "skipped"
        return "done" if result.status == "done" else "failed"

    def _finished_review(self, result: ReviewResult, host: PoolHost) -> FinishedReview:
        request = result.request
        assert request is not None  # every result of Reviewer.review carries its request
        policy = result.policy
        return FinishedReview(
            content=result.content.to_dict(), content_text=request.user,
            content_kind=result.content.kind, policy_sha256=policy.sha256, policy_id=policy.id,
            policy_version=policy.version, policy_title=policy.title, policy_text=policy.text,
            model=request.model, effort=request.think, num_ctx=request.num_ctx,
            seed=request.seed, temperature=request.temperature,
            moderator=self.options.moderator, host=host.url, backend=host.kind,
            model_digest=host.digest, ollama_version=host.ollama_version,
            status="done" if result.status == "done" else "failed",
            reasoning=result.reasoning, answer=result.answer,
            verdict=result.verdict.to_dict() if result.verdict else None,
            stats=result.stats.to_dict() if result.stats else None,
            error=str(result.error) if result.error else None,
        )  # fmt: skip


def _result_label(result: ReviewResult) -> str:
    """What the link records: the verdict's label; "unparsed" for a finished answer without
    one; "failed" for a request that did not finish. Never "safe" by default."""
    if result.status != "done":
        return "failed"
    return result.verdict.label if result.verdict is not None else "unparsed"


def _stats_figures(result: ReviewResult) -> tuple[float | None, int | None]:
    """(seconds, tokens) of one answer: its wall time and the tokens the model generated
    (reasoning and answer)."""
    stats = result.stats
    if stats is None:
        return None, None
    return (stats.wall_s or None), (stats.eval_count or None)


def _prediction(label: str) -> Prediction:
    if label == "violation":
        return "violation"
    if label == "safe":
        return "safe"
    if label == "incomplete":
        return "incomplete"
    if label == "failed":
        return "failed"
    return "unparsed"


def _new_item(item: LabelledItem) -> NewLabelItem:
    return NewLabelItem(item.text, item.truth, item.categories, item.ref, item.line)


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines


# --- a queue export as a labelled set ---------------------------------------------------------

_QUEUE_EXPORT_KEYS = frozenset({"item", "verdicts", "decision", "text"})


def _is_queue_export(path: Path) -> bool:
    """A .jsonl whose first object has the keys `queue export` writes."""
    if path.suffix.lower() not in (".jsonl", ".ndjson") or not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            for raw in fh:
                if raw.strip():
                    first = json.loads(raw.decode("utf-8-sig"))
                    return isinstance(first, dict) and first.keys() >= _QUEUE_EXPORT_KEYS
    except (OSError, ValueError):
        return False
    return False


def _queue_export_set(path: Path) -> NewLabelSet:
    """The decided items of a queue export: an override gives the label, an agree confirms
    the model's verdict (violation when any policy said so); skipped, escalated and
    undecided items (and agreed ones without a verdict) are left out and counted."""
    try:
        text = decode_text(path.read_bytes(), path.name)
    except OSError as exc:
        raise EvaluationError(
            f"Cannot read {path} ({exc.strerror}); check that it is readable."
        ) from None
    except ContentError as exc:
        raise EvaluationError(str(exc)) from None
    items: list[LabelledItem] = []
    rows = left_out = no_text = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            row = loads_json(line, where)
        except (ValueError, ContentError) as exc:
            raise EvaluationError(f"{where} is not valid JSON ({exc}); fix or remove it.") from None
        if not isinstance(row, dict):
            raise EvaluationError(f"{where} is not an object; is this a `queue export` file?")
        rows += 1
        truth = _export_truth(row)
        content = row.get("text")
        if truth is None:
            left_out += 1
            continue
        if not isinstance(content, str) or not content.strip():
            no_text += 1
            continue
        ref = row.get("ref")
        item = row.get("item")
        items.append(LabelledItem(content, truth, (), str(ref) if ref else f"item {item}", number))
    if not items:
        raise EvaluationError(
            f"{path.name} holds no decided item to learn from ({rows} rows, {left_out} skipped, "
            "escalated or undecided); agree with or override items first (`queue decide`)."
        )
    return NewLabelSet(
        name=path.name, source=path.name, shape="queue-export", text_column="text",
        label_column="decision", positive=(), checksum=labelset_checksum(items),
        items=[_new_item(i) for i in items], rows=rows, left_out=left_out, no_text=no_text,
    )  # fmt: skip


def _export_truth(row: Mapping[str, object]) -> bool | None:
    decision = row.get("decision")
    if not isinstance(decision, Mapping):
        return None
    action = decision.get("action")
    if action == "override":
        label = decision.get("label")
        return builtin_truth(label) if isinstance(label, str) else None
    if action != "agree":
        return None
    violation = row.get("violation")
    if isinstance(violation, bool):
        return violation
    verdicts = row.get("verdicts")
    labels = [v.get("label") for v in verdicts if isinstance(v, Mapping)] if isinstance(
        verdicts, list
    ) else []  # fmt: skip
    if "violation" in labels:
        return True
    return False if labels and all(label == "safe" for label in labels) else None


# --- the Markdown report ------------------------------------------------------------------------


def _cell(text: str) -> str:
    """A table cell: a `|` would end it, whatever the code span around it."""
    return text.replace("|", "\\|")


def _number(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _interval(interval: tuple[float, float] | None) -> str:
    return "—" if interval is None else f"{interval[0]:.3f}–{interval[1]:.3f}"


def _metrics_table(m: Metrics) -> list[str]:
    by = m.confusion.undecided
    rows = [
        ("Items (n)", str(m.n), ""),
        ("Decided", str(m.confusion.decided), ""),
        (
            "No verdict (unparsed / incomplete / failed)",
            f"{m.unparsed} ({' / '.join(str(by.get(k, 0)) for k in UNDECIDED)})",
            "",
        ),
        ("Precision", _number(m.precision), _interval(m.precision_ci)),
        ("Recall", _number(m.recall), _interval(m.recall_ci)),
        ("F1", _number(m.f1), ""),
        ("Accuracy", _number(m.accuracy), _interval(m.accuracy_ci)),
        ("False-positive rate", _number(m.fpr), _interval(m.fpr_ci)),
        ("Cohen's κ", _number(m.kappa), ""),
        ("Median seconds per item", _number(m.median_seconds, 2), ""),
        ("Median tokens per item", _number(m.median_tokens, 0), ""),
    ]
    lines = ["| Figure | Value | 95% Wilson interval |", "|---|---:|---|"]
    lines += [f"| {name} | {value} | {ci} |" for name, value, ci in rows]
    return lines


def _confusion(items: Sequence[ItemPrediction]) -> list[str]:
    def count(truth: bool, predicted: Sequence[str]) -> int:
        return sum(1 for i in items if i.truth == truth and i.predicted in predicted)

    lines = [
        "| Truth \\ Verdict | violation | safe | no verdict |",
        "|---|---:|---:|---:|",
    ]
    for truth in (True, False):
        lines.append(
            f"| **{_truth_word(truth)}** | {count(truth, ('violation',))} | "
            f"{count(truth, ('safe',))} | {count(truth, UNDECIDED)} |"
        )
    return lines


def _categories(m: Metrics) -> list[str]:
    if not m.categories:
        return ["No item of the set names a category."]
    lines = [
        "| Category | Violating items | Caught | Missed | No verdict | Recall "
        "| 95% Wilson interval |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in m.categories:
        lines.append(
            f"| {_cell(code_span(c.category))} | {c.n} | {c.caught} | {c.missed} | "
            f"{c.unparsed} | {_number(c.recall)} | {_interval(c.ci)} |"
        )
    return lines


def _excerpt(text: str | None) -> str | None:
    if not text:
        return None
    text = text.strip()
    return text if len(text) <= EXCERPT else text[:EXCERPT].rstrip() + " …"


def _item_block(
    heading: str,
    item: ItemPrediction,
    lines: Sequence[str],
    reasonings: Sequence[tuple[str, str | None]],
) -> list[str]:
    out = [heading, ""]
    out += [f"- {line}" for line in lines]
    out += ["", "Text:", "", fence(item.text), ""]
    for title, reasoning in reasonings:
        excerpt = _excerpt(reasoning)
        if excerpt is not None:
            out += [f"{title}:", "", fence(excerpt), ""]
    return out


def _errors(
    items: Sequence[ItemPrediction], reasoning: Callable[[int | None], str | None]
) -> list[str]:
    groups = (
        ("Missed violations (false negatives)", lambda i: i.truth and i.predicted == "safe"),
        ("False alarms (false positives)", lambda i: not i.truth and i.predicted == "violation"),
        ("No verdict (unparsed, incomplete or failed)", lambda i: i.predicted in UNDECIDED),
    )
    out: list[str] = []
    for title, wanted in groups:
        found = [i for i in items if wanted(i)]
        out += [f"### {title}: {len(found)}", ""]
        for item in found[:REPORT_ITEMS]:
            ref = f" (ref {code_span(item.ref)})" if item.ref else ""
            out += _item_block(
                f"#### Item {item.position}",
                item,
                [
                    f"**Truth:** {_truth_word(item.truth)}{ref}",
                    f"**Verdict:** {item.predicted}"
                    + (f", review #{item.review_id}" if item.review_id else ""),
                ],
                [("Reasoning (excerpt)", reasoning(item.review_id))],
            )
        if len(found) > REPORT_ITEMS:
            out += [f"_… and {len(found) - REPORT_ITEMS} more (`eval show` lists every item)._", ""]
    return out


def _comparison(
    view: ComparisonView,
    items: Mapping[int, ItemPrediction],
    reasoning: Callable[[int | None], str | None],
) -> list[str]:
    c = view.comparison
    a, b = view.a, view.b
    out = [
        f"## Comparison with run {a.id}",
        "",
        f"Run {a.id} (A): policy {code_span(a.policy_id)} sha256 {code_span(a.policy_sha256)}, "
        f"model {code_span(a.model)}, effort {code_span(a.effort)}.",
        "",
        f"Run {b.id} (B, this report): policy {code_span(b.policy_id)} sha256 "
        f"{code_span(b.policy_sha256)}, model {code_span(b.model)}, effort {code_span(b.effort)}.",
        "",
        f"| Figure | Run {a.id} (A) | Run {b.id} (B) | B − A |",
        "|---|---:|---:|---:|",
    ]
    for name in COMPARED:
        digits = 0 if name == "median_tokens" else 2 if name == "median_seconds" else 3
        out.append(
            f"| {name} | {_number(c.a.figure(name), digits)} | "
            f"{_number(c.b.figure(name), digits)} | {_number(c.difference[name], digits)} |"
        )
    verdict = (
        "the difference is more than chance (p < 0.05)"
        if c.mcnemar_p < 0.05
        else "the difference could be chance (p ≥ 0.05)"
    )
    out += [
        "",
        f"Exact McNemar test: {c.only_a_correct} items only A got right, {c.only_b_correct} "
        f"only B got right; p = {c.mcnemar_p:.4g}: {verdict}. An item without a verdict "
        "counts as wrong here.",
        "",
        f"### Flips: {len(view.flips)}",
        "",
    ]
    for flip in view.flips[:REPORT_ITEMS]:
        item = items[flip.position]
        ref = f" (ref {code_span(flip.ref)})" if flip.ref else ""
        out += _item_block(
            f"#### Item {flip.position}: {flip.a} → {flip.b}",
            item,
            [
                f"**Truth:** {_truth_word(flip.truth)}{ref}",
                f"**Run {a.id} (A):** {flip.a}"
                + (f", review #{flip.review_a}" if flip.review_a else ""),
                f"**Run {b.id} (B):** {flip.b}"
                + (f", review #{flip.review_b}" if flip.review_b else ""),
            ],
            [
                (f"Reasoning in run {a.id} (excerpt)", reasoning(flip.review_a)),
                (f"Reasoning in run {b.id} (excerpt)", reasoning(flip.review_b)),
            ],
        )
    if len(view.flips) > REPORT_ITEMS:
        out += [f"_… and {len(view.flips) - REPORT_ITEMS} more (`eval compare` lists them)._", ""]
    out += ["### Policy changes", ""]
    if view.policy_diff:
        out += [fence(view.policy_diff, "diff"), ""]
    else:
        out += ["Both runs used the same policy version.", ""]
    return out


def _report(
    detail: RunDetail,
    labelled: LabelSetRow | None,
    provenance: Mapping[str, Sequence[str]],
    comparison: ComparisonView | None,
    reasoning: Callable[[int | None], str | None],
) -> str:
    info, m = detail.info, detail.metrics

    def listed(key: str) -> str:
        values = provenance.get(key) or []
        return ", ".join(code_span(v) for v in values) if values else "unknown"

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    set_line = f"{code_span(info.set_name)}, {info.total} items"
    if labelled is not None:
        set_line += (
            f" ({labelled.violations} violations, {labelled.items - labelled.violations} safe"
            + (f"; {labelled.left_out} rows without a label left out" if labelled.left_out else "")
            + f"), from {code_span(labelled.source)} ({labelled.shape})"
        )
        if labelled.positive:
            set_line += f", violation = {', '.join(code_span(p) for p in labelled.positive)}"
    lines = [
        f"# Evaluation report: run {info.id}",
        "",
        f"Policy {code_span(info.policy_id)} on {code_span(info.set_name)} with "
        f"{code_span(info.model)} (effort {code_span(info.effort)}).",
        "",
        "## Provenance",
        "",
        f"- **Labelled set:** {set_line}",
        f"- **Set checksum (sha256):** {code_span(info.set_checksum)}",
        f"- **Policy:** {code_span(info.policy_id)} version {code_span(info.policy_version)}, "
        f"sha256 {code_span(info.policy_sha256)}",
        f"- **Model:** {code_span(info.model)}, digest {listed('model_digest')}",
        f"- **Effort:** {code_span(info.effort)}",
        f"- **Ollama version:** {listed('ollama_version')}",
        f"- **Run:** created {code_span(info.created_at)}; {info.done} of {info.total} items "
        f"classified, {info.failed} failed, {info.pending} not yet",
        f"- **Report:** written {now} by Safeguard Desktop {__version__}",
        "",
    ]
    if info.pending:
        lines += [
            f"> **Unfinished run:** {info.pending} items are not classified yet; the figures "
            "below are over the items done. Run the same evaluation again to finish it.",
            "",
        ]
    lines += ["## Metrics", "", *_metrics_table(m), ""]
    lines += [
        "Rates are over the decided items; an item without a verdict is counted on its own, "
        "never as safe. A figure that is undefined is shown as —.",
        "",
        "## Confusion matrix",
        "",
        *_confusion(detail.items),
        "",
        "## Per-category recall",
        "",
        *_categories(m),
        "",
        "## Errors",
        "",
        "Item texts and reasoning are untrusted and quoted as code.",
        "",
        *_errors(detail.items, reasoning),
    ]
    if comparison is not None:
        lines += _comparison(comparison, {i.position: i for i in detail.items}, reasoning)
    return "\n".join(lines).rstrip("\n") + "\n"


def _write_whole(out: Path, text: str) -> None:
    """Write beside the target, then rename: a failed write leaves no partial file."""
    folder = out.parent if str(out.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise EvaluationError(
            f"Cannot write to {folder} ({exc.strerror}); choose another place."
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(temp, out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise EvaluationError(
            f"Cannot write {out} ({exc.strerror}); choose another place."
        ) from None
