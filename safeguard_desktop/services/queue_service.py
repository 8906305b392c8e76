"""Review queues as the CLI (and later the queue view) use them: create from files, run with
the batch runner, read counts and verdict grids, decide, export, delete.

A queue's items are classified once per policy (one policy per request, as the model's usage
guide advises); an item counts as a violation when any policy says so. Each classification
is an ordinary review in the history, recorded finished together with its link to the item.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safeguard_desktop.core.content import (
    KINDS,
    Content,
    ContentError,
    Kind,
    content_from_dict,
    from_text,
    loads_json,
)
from safeguard_desktop.core.importers import EXTENSIONS, import_file
from safeguard_desktop.core.policy import Policy, PolicyError, parse_policy, resolve_policy
from safeguard_desktop.core.vocabulary import EFFORTS
from safeguard_desktop.engine.errors import (
    EngineError,
)
from safeguard_desktop.services.batch_runner import (
    Backoff,
    BatchRunner,
    Outcome,
    Progress,
    RunReport,
    throughput,
)
from safeguard_desktop.services.hosts import HostConfigError, HostPool, PoolHost
from safeguard_desktop.services.review import ReviewResult
from safeguard_desktop.store.db import HistoryError
from safeguard_desktop.store.queues import (
    ITEM_ACTIONS,
    ITEM_ORDERS,
    FinishedReview,
    ItemDecision,
    ItemLink,
    ItemRow,
    NewItem,
    PolicyText,
    QueueBusy,
    QueueExists,
    QueueRow,
    Queues,
    Unit,
)

if TYPE_CHECKING:
    from safeguard_desktop.services.session import Session

__all__ = [
    "ITEM_ACTIONS",
    "ITEM_ORDERS",
    "STATES",
    "Backoff",
    "EngineError",
    "ItemView",
    "Progress",
    "QueueError",
    "QueueService",
    "QueueStatus",
    "RunReport",
    "VerdictCell",
]

log = logging.getLogger("safeguard.queue")
STATES = ("pending", "classifying", "classified", "decided", "failed", "interrupted")
OVERRIDE_LABELS = ("violation", "safe")
MAX_NAME = 100
# A queue from a history search takes at most this many reviews (a search matching more
# is too broad to be one day's queue: narrow it).
MAX_HISTORY_ITEMS = 10_000
_RUNNING: set[tuple[str, int]] = set()  # (history file, queue id) run by this process now


class QueueError(ValueError):
    """The request cannot be done as asked; str() is one line saying what to do."""


@dataclass(frozen=True)
class VerdictCell:
    """One policy's verdict on one item; label None while it is not classified."""

    policy: str
    label: str | None
    review_id: int | None
    rule_ids: tuple[str, ...] = ()
    confidence: str | float | None = None
    host: str | None = None  # the server that judged

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "label": self.label, "review_id": self.review_id,
            "host": self.host,
        }  # fmt: skip


@dataclass(frozen=True)
class ItemView:
    """An item as a moderator sees it: its content, the verdict grid, the decision."""

    position: int
    state: str
    content: dict[str, object]
    text: str
    ref: str | None
    verdicts: tuple[VerdictCell, ...]
    decision: ItemDecision | None
    time: str | None = None  # the item's own time (UTC ISO 8601), when its content gave one

    @property
    def violation(self) -> bool | None:
        """True when any policy says violation; False when every policy says safe."""
        labels = [v.label for v in self.verdicts]
        if "violation" in labels:
            return True
        return False if labels and all(label == "safe" for label in labels) else None

    @property
    def outcome(self) -> str | None:
        """What the item is: the moderator's override label when one stands, else the
        model's ("violation" / "safe"); None while that is not known."""
        d = self.decision
        if d is not None and d.action == "override" and d.label:
            return d.label
        return None if self.violation is None else "violation" if self.violation else "safe"

    def to_json(self) -> dict[str, Any]:
        d = self.decision
        return {
            "item": self.position,
            "state": self.state,
            "verdicts": [v.to_json() for v in self.verdicts],
            "decision": None
            if d is None
            else {
                "action": d.action, "label": d.label, "rule": d.rule, "note": d.note,
                "moderator": d.moderator, "at": d.at,
            },
            "violation": self.violation,
            "outcome": self.outcome,
            "ref": self.ref,
        }  # fmt: skip


@dataclass(frozen=True)
class QueueStatus:
    name: str
    items: int
    counts: dict[str, int]
    policies: tuple[str, ...]
    model: str
    effort: str | None
    created_at: str
    running: bool
    order: str = "file"  # how items() lists the items: one of ITEM_ORDERS

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "items": self.items}
        out.update({state: self.counts.get(state, 0) for state in STATES})
        out["policies"] = list(self.policies)
        return out


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise QueueError("The queue name is empty: give it a short name, such as reports-monday.")
    if len(name) > MAX_NAME or any(ch < " " or ch == "\x7f" for ch in name):
        raise QueueError(
            f"The queue name must be one line of at most {MAX_NAME} characters; choose a "
            "shorter name."
        )
    return name


def stored_policy(p: PolicyText) -> Policy:
    """The policy exactly as the queue stored it: the same text gives the same system prompt
    on every run, so Ollama's prompt cache holds across runs too."""
    parsed = parse_policy(p.text.encode("utf-8"))
    return dataclasses.replace(parsed, id=p.policy_id, sha256=p.sha256, version=p.version)


def source_files(path: Path) -> list[Path]:
    """A file, or the importable files of a folder (name order, hidden ones left out)."""
    if not path.is_dir():
        return [path]
    found = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in EXTENSIONS
    )
    if not found:
        raise QueueError(
            f"{path} holds no file to import ({', '.join(EXTENSIONS)}); choose another folder."
        )
    return found


class QueueService:
    """The queues of one session's history. Reading and deciding are quick synchronous
    calls (run them off the GUI thread); `run` is a coroutine. Errors: QueueError (what the
    user asked cannot be done), HistoryError (the file's fault), EngineError from `run`."""

    def __init__(self, session: Session, store: Queues) -> None:
        self.session = session
        self.store = store

    # --- creating ---------------------------------------------------------------------------

    def create(
        self,
        name: str,
        sources: Sequence[Path],
        policies: Sequence[str],
        *,
        kind: str | None = None,
        model: str | None = None,
        effort: str | None = None,
        text_column: str | None = None,
        order: str = "file",
        history_query: str | None = None,
        texts: Sequence[str] | None = None,
    ) -> QueueStatus:
        """Import every item and create the queue in one transaction: a file that cannot
        be read whole (a bad line, an item over the size limit) creates nothing.

        Items come from `sources` (files or folders, in order), then from the reviews a
        history search finds (`history_query`: newest first, one item per distinct
        content), then from `texts` (pasted: one message per entry, blank entries left
        out). `kind` applies to files and pasted texts; `order` is one of ITEM_ORDERS."""
        name = _check_name(name)
        if kind is not None and kind not in KINDS:
            raise QueueError(f"Unknown content kind {kind!r}: use one of {', '.join(KINDS)}.")
        if effort is not None and effort not in EFFORTS:
            raise QueueError(f"Unknown effort {effort!r}: use one of {', '.join(EFFORTS)}.")
        _check_order(order)
        if not sources and history_query is None and texts is None:
            raise QueueError(
                "Give the items to review with --from FILE (or a folder, or - for lines on "
                "standard input) or --from-history QUERY."
            )
        if not policies:
            raise QueueError("Give at least one policy with --policy ID_OR_PATH.")
        resolved = self._policies(policies)
        max_bytes = int(self.session.settings["max_file_mb"]) * 1024 * 1024
        items: list[NewItem] = []
        if sources:
            items += self._import(sources, kind, text_column, max_bytes)
            if not items:
                raise QueueError("The files hold no item to review; no queue was created.")
        if history_query is not None:
            items += self._from_history(history_query, max_bytes)
        if texts is not None:
            items += self._pasted(texts, kind, max_bytes)
        settings = self.session.settings
        try:
            row = self.store.create(
                name,
                moderator=str(settings["moderator"] or ""),
                model=(model or "").strip() or str(settings["model"]),
                effort=effort,
                policies=[PolicyText(p.sha256, p.id, p.title, p.version, p.text) for p in resolved],
                items=items,
                order=order,
            )
        except QueueExists as exc:
            raise QueueError(str(exc)) from None
        return self._status(row)

    def _policies(self, refs: Sequence[str]) -> list[Policy]:
        found: list[Policy] = []
        for ref in refs:
            try:
                policy = resolve_policy(ref, folders=self.session.policy_folders())
            except PolicyError as exc:
                raise QueueError(str(exc)) from None
            same = next((p for p in found if p.id == policy.id), None)
            if same is not None:
                what = "is given twice" if same.sha256 == policy.sha256 else "is the id of two"
                raise QueueError(
                    f"Policy {policy.id!r} {what} policies; each policy of a queue needs its "
                    "own id (set `id:` in the front matter)."
                )
            found.append(policy)
        return found

    def _import(
        self, sources: Sequence[Path], kind: Kind | None, text_column: str | None, max_bytes: int
    ) -> list[NewItem]:
        items: list[NewItem] = []
        for source in sources:
            for path in source_files(Path(source)):
                try:
                    contents = import_file(
                        path,
                        kind=kind,
                        max_bytes=max_bytes,
                        csv_text_column=text_column,
                    )
                except ContentError as exc:
                    raise QueueError(f"{exc} No queue was created.") from None
                times = file_times(path, contents)
                for content, time in zip(contents, times, strict=True):
                    where = content.source or path.name
                    items.append(_new_item(content, where, max_bytes, time=time))
        return items

    def _from_history(self, query: str, max_bytes: int) -> list[NewItem]:
        """The content of the reviews the History's search finds, newest first, one item per
        distinct content (its time: when that content was first reviewed)."""
        history = self.session.history
        if history is None:
            raise QueueError("No history is open to search; fix the history first.")
        if not query.strip():
            raise QueueError(
                "The history search is empty: give a word from the content, reasoning or notes."
            )
        found = history.search(query, limit=MAX_HISTORY_ITEMS + 1)
        if len(found) > MAX_HISTORY_ITEMS:
            raise QueueError(
                f"The history search {query!r} matches more than {MAX_HISTORY_ITEMS:,} reviews, "
                "too many for one queue; add words to narrow it. No queue was created."
            )
        if not found:
            raise QueueError(
                f"The history search {query!r} matches no review; no queue was created."
            )
        kept: dict[str, tuple[int, Content]] = {}
        first_seen: dict[str, str] = {}
        for summary in sorted(found, key=lambda r: (r.created_at, r.id), reverse=True):
            review = history.get(summary.id)
            if review is None:  # deleted meanwhile
                continue
            text = review.content_text
            first_seen[text] = review.created_at  # oldest last: it stays
            if text in kept:
                continue
            try:
                content = content_from_dict(review.content)
            except ContentError as exc:
                raise QueueError(f"Review #{review.id}: {exc} No queue was created.") from None
            kept[text] = (review.id, content)
        return [
            _new_item(
                content, f"review #{review_id}", max_bytes, source=f"history:{review_id}",
                time=item_time(first_seen[text]),
            )
            for text, (review_id, content) in kept.items()
        ]  # fmt: skip

    @staticmethod
    def _pasted(texts: Sequence[str], kind: Kind | None, max_bytes: int) -> list[NewItem]:
        items = []
        for number, text in enumerate(texts, start=1):
            if not text.strip():
                continue
            where = f"pasted item {number}"
            try:
                content = from_text(text, kind or "message")
            except ContentError as exc:
                raise QueueError(f"{where.capitalize()}: {exc} No queue was created.") from None
            items.append(_new_item(content, where, max_bytes, source=f"pasted:{number}"))
        if not items:
            raise QueueError("The pasted text holds no item to review; no queue was created.")
        return items

    # --- reading ----------------------------------------------------------------------------

    def _queue(self, name: str) -> QueueRow:
        row = self.store.get(name.strip())
        if row is None:
            raise QueueError(
                f"There is no queue named {name!r}. `safeguard-desktop queue list` shows them."
            )
        return row

    def names(self) -> list[str]:
        return [q.name for q in self.store.all()]

    def all(self) -> list[QueueStatus]:
        """Every queue, newest first, with its counts per state."""
        return [self._status(q) for q in self.store.all()]

    def status(self, name: str) -> QueueStatus:
        return self._status(self._queue(name))

    def _status(self, queue: QueueRow) -> QueueStatus:
        counts = Counter(item.state for item in self._views(queue, ordered=False))
        return QueueStatus(
            name=queue.name,
            items=sum(counts.values()),
            counts={state: counts.get(state, 0) for state in STATES},
            policies=tuple(p.policy_id for p in self.store.policies(queue.id)),
            model=queue.model,
            effort=queue.effort,
            created_at=queue.created_at,
            running=self.store.runner_alive(queue),
            order=queue.item_order,
        )

    def items(self, name: str, *, state: str | None = None) -> list[ItemView]:
        """The items in the queue's order (`status().order`), each with its verdict grid and
        decision; `ItemView.position` stays the item's place in the files."""
        if state is not None and state not in STATES:
            raise QueueError(f"Unknown state {state!r}: use one of {', '.join(STATES)}.")
        views = self._views(self._queue(name))
        return [v for v in views if state is None or v.state == state]

    def set_order(self, name: str, order: str) -> QueueStatus:
        """List the queue's items in file order, oldest first, or by verdict (ITEM_ORDERS)."""
        _check_order(order)
        queue = self._queue(name)
        self.store.set_order(queue.id, order)
        return self.status(queue.name)

    def _views(
        self, queue: QueueRow, *, only: ItemRow | None = None, ordered: bool = True
    ) -> list[ItemView]:
        """Every item's view (in the queue's order unless `ordered` is False), or `only`'s."""
        item_id = None if only is None else only.id
        policies = self.store.policies(queue.id)
        by_item: dict[int, dict[str, ItemLink]] = {}
        for link in self.store.links(queue.id, item_id=item_id):
            cells = by_item.setdefault(link.item_id, {})
            kept = cells.get(link.policy_sha256)
            if kept is None or kept.outcome != "done":  # a finished review wins over failures
                cells[link.policy_sha256] = link
        decisions = self.store.decisions(queue.id, item_id=item_id)
        runner_gone = not self.store.runner_alive(queue)
        rows = self.store.items(queue.id) if only is None else [only]
        views = [
            self._view(item, policies, by_item.get(item.id, {}), decisions.get(item.id),
                       runner_gone)
            for item in rows
        ]  # fmt: skip
        if ordered and queue.item_order == "oldest":
            views.sort(key=lambda v: (v.time is None, v.time or "", v.position))
        elif ordered and queue.item_order == "verdict":
            views.sort(key=verdict_rank)
        return views

    @staticmethod
    def _view(
        item: ItemRow,
        policies: Sequence[PolicyText],
        links: dict[str, ItemLink],
        decision: ItemDecision | None,
        runner_gone: bool,
    ) -> ItemView:
        cells = []
        for p in policies:
            link = links.get(p.sha256)
            if link is None:
                cells.append(VerdictCell(p.policy_id, None, None))
            else:
                cells.append(
                    VerdictCell(
                        p.policy_id,
                        link.label,
                        link.review_id,
                        link.rule_ids,
                        link.confidence,
                        link.host,
                    )
                )
        state = item.state
        if decision is not None:
            state = "decided"  # also when decided on a linked review in the History view
        elif state == "classifying" and runner_gone:
            state = "interrupted"  # its runner was killed: the next run does it again
        return ItemView(
            item.position, state, item.content, item.text, item.external_id, tuple(cells),
            decision, item.time,
        )  # fmt: skip

    def item(self, name: str, position: int) -> ItemView:
        """One item by its 1-based position in the files (reads that item only)."""
        queue = self._queue(name)
        return self._views(queue, only=self._item_row(queue, name, position))[0]

    def _item_row(self, queue: QueueRow, name: str, position: int) -> ItemRow:
        row = self.store.item(queue.id, position)
        if row is None:
            raise QueueError(
                f"Queue {name!r} has items 1 to {self.store.item_count(queue.id)}; there is no "
                f"item {position}."
            )
        return row

    # --- deciding ---------------------------------------------------------------------------

    def decide(
        self,
        name: str,
        position: int,
        action: str,
        *,
        label: str | None = None,
        note: str | None = None,
        rule: str | None = None,
    ) -> ItemView:
        """Append the moderator's decision to the trail of the item's reviews; an override
        may name the rule or category it applies (`rule`, e.g. H2.f)."""
        note = (note or "").strip() or None
        if action not in ITEM_ACTIONS:
            raise QueueError(f"Unknown decision {action!r}: use {', '.join(ITEM_ACTIONS)}.")
        if action == "override" and label not in OVERRIDE_LABELS:
            raise QueueError(f"An override needs a label: {' or '.join(OVERRIDE_LABELS)}.")
        if action == "override" and not note:
            raise QueueError("An override needs a reason: give it with --note.")
        if action == "skip" and not note:
            raise QueueError("Skipping needs a reason: give it with --note.")
        if rule and action != "override":
            raise QueueError("Only an override names a rule or category: use it with --override.")
        moderator = self._moderator()
        queue = self._queue(name)
        row = self._item_row(queue, name, position)
        view = self._views(queue, only=row)[0]
        if view.state not in ("classified", "decided", "failed"):
            raise QueueError(
                f"Item {position} of {queue.name!r} is {view.state}, not classified yet: run "
                f"`safeguard-desktop queue run {queue.name}` first."
            )
        try:
            self.store.decide(
                row.id,
                action=action,
                moderator=moderator,
                label=label if action == "override" else None,
                note=note,
                rule=rule if action == "override" else None,
            )
        except ValueError as exc:
            raise QueueError(f"Item {position}: {exc}") from None
        return self.item(queue.name, position)

    def retract(self, name: str, position: int, *, note: str | None = None) -> ItemView:
        """Undo the item's decision (the U key): a "retracted" entry is appended to the trail
        of the reviews it was made on; nothing is edited or removed. The item is undecided
        again, in the state its classification left it."""
        note = (note or "").strip() or None
        moderator = self._moderator()
        queue = self._queue(name)
        row = self._item_row(queue, name, position)
        try:
            self.store.retract(row.id, moderator=moderator, note=note)
        except ValueError:
            raise QueueError(
                f"Item {position} of {queue.name!r} has no decision to undo."
            ) from None
        return self.item(queue.name, position)

    def note(self, name: str, position: int, note: str) -> ItemView:
        """Add a note to the trail of the item's reviews (the N key); its decision stays."""
        note = note.strip()
        if not note:
            raise QueueError("The note is empty: write something or cancel.")
        moderator = self._moderator()
        queue = self._queue(name)
        row = self._item_row(queue, name, position)
        try:
            self.store.add_note(row.id, moderator=moderator, note=note)
        except ValueError:
            raise QueueError(
                f"Item {position} of {queue.name!r} has no review yet to add a note to: run "
                f"`safeguard-desktop queue run {queue.name}` first."
            ) from None
        return self.item(queue.name, position)

    def _moderator(self) -> str:
        moderator = str(self.session.settings["moderator"] or "").strip()
        if not moderator:
            raise QueueError("Your moderator name is empty; set it in Settings (Moderator) first.")
        return moderator

    # --- exporting and deleting -------------------------------------------------------------

    def export(self, name: str, out: Path) -> int:
        """One row per item (content, verdicts, decision) as .jsonl or .csv; returns the
        number of rows. The file appears whole or not at all."""
        suffix = out.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise QueueError(f"Export to a .jsonl or a .csv file, not {out.name!r}.")
        views = self.items(name)
        policies = self.status(name).policies
        text = _jsonl(views) if suffix == ".jsonl" else _csv(views, policies)
        _write_whole(out, text)
        return len(views)

    def delete(self, name: str) -> int:
        """Remove the queue and its items; their reviews and decisions stay in the history.
        Returns how many items it held."""
        queue = self._queue(name)
        if self.store.runner_alive(queue):
            raise QueueError(f"Queue {queue.name!r} is being run; stop that run first.")
        count = self.store.item_count(queue.id)
        self.store.delete(queue.id)
        return count

    # --- running ----------------------------------------------------------------------------

    async def run(
        self,
        name: str,
        *,
        parallel: int | None = None,
        hosts: Sequence[str] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
        stop: asyncio.Event | None = None,
        backoff: Backoff | None = None,
    ) -> RunReport:
        """Classify every item still to do, items in queue order, over the hosts named
        (default: every enabled host; with --host only that server), each with its slots in
        flight (`parallel`, default the num_parallel setting, for the local server). Progress
        counts items; `on_warning` hears of hosts left out. `backoff`: the delays between
        attempts of an item and before a host that failed is tried again.

        Cancelling puts the items in flight back to pending; a killed process leaves them
        classifying, and the next run takes them as interrupted. Raises QueueError,
        HistoryError, or the EngineError that stopped the run (server gone, model missing).
        """
        queue = self._queue(name)
        n = int(parallel or self.session.settings["num_parallel"])
        if n < 1:
            raise QueueError("--parallel must be at least 1.")
        key = (str(self.store.history.path), queue.id)
        if key in _RUNNING:  # the database sees one runner per process: say so here
            raise QueueError(f"Queue {queue.name!r} is already running in this window.")
        _RUNNING.add(key)
        try:
            try:
                interrupted = await asyncio.to_thread(self.store.claim, queue.id)
            except QueueBusy as exc:
                raise QueueError(str(exc)) from None
            if interrupted:
                log.warning("queue %s: %d interrupted item(s) run again", queue.name, interrupted)
            try:
                job = _Job(self, queue)
                await job.prepare()
                if not job.units:  # nothing to do: no server is asked anything
                    return await job.run(n, on_progress, stop, backoff)
                try:
                    job.pool = await self.session.hosts().pool(job.options, hosts, parallel=n)
                except HostConfigError as exc:
                    raise QueueError(str(exc)) from None
                try:
                    for warning in job.pool.warnings:
                        log.warning("queue %s: %s", queue.name, warning)
                        if on_warning is not None:
                            on_warning(warning)
                    job.pool.on_event = on_warning
                    if backoff is not None:  # the caller's delays hold for hosts too
                        job.pool.backoff = backoff
                    report = await job.run(job.pool.parallel, on_progress, stop, backoff)
                    return dataclasses.replace(report, by_host=job.pool.summary())
                finally:
                    await job.pool.aclose()
            finally:
                with contextlib.suppress(HistoryError):
                    await asyncio.shield(asyncio.to_thread(self.store.release, queue.id))
        finally:
            _RUNNING.discard(key)


def _check_order(order: str) -> None:
    if order not in ITEM_ORDERS:
        raise QueueError(f"Unknown item order {order!r}: use one of {', '.join(ITEM_ORDERS)}.")


def _new_item(
    content: Content,
    where: str,
    max_bytes: int,
    *,
    source: str | None = None,
    time: str | None = None,
) -> NewItem:
    """The item as the queue stores it, refused when over the size limit."""
    text = content.render()
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise QueueError(
            f"{where}: the item is {size / 2**20:.1f} MB, over the "
            f"{max_bytes / 2**20:.0f} MB limit (setting max_file_mb); shorten or split "
            "it. No queue was created."
        )
    return NewItem(
        content.to_dict(), text, content.kind, content.ref, source or content.source, time
    )


# --- item order --------------------------------------------------------------------------------

_CONFIDENCE_RANK = {"low": 1.0, "medium": 2.0, "high": 3.0}


def confidence_rank(value: str | float | None) -> float:
    """low 1, medium 2, high 3; a number from 0 to 1 (or a percentage) on the same scale
    (0.5 ranks as medium); 0 when there is none or it cannot be read."""
    if value is None or isinstance(value, bool):
        return 0.0
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _CONFIDENCE_RANK:
            return _CONFIDENCE_RANK[word]
        try:
            value = float(word.rstrip("%")) / (100 if word.endswith("%") else 1)
        except ValueError:
            return 0.0
    number = float(value)
    if 1 < number <= 100:
        number /= 100
    return 1.0 + 2.0 * number if 0 <= number <= 1 else 0.0


def verdict_rank(view: ItemView) -> tuple[int, float, int]:
    """Violations first (most confident first), then items not (fully) classified, then
    safe ones (most confident first); ties in file order. A violation's confidence is the
    highest among the policies that say so; a safe item's the lowest of its policies'."""
    labels = [c.label for c in view.verdicts]
    if "violation" in labels:
        rank = max(confidence_rank(c.confidence) for c in view.verdicts if c.label == "violation")
        return (0, -rank, view.position)
    if labels and all(label == "safe" for label in labels):
        return (2, -min(confidence_rank(c.confidence) for c in view.verdicts), view.position)
    return (1, 0.0, view.position)


# --- an item's own time ------------------------------------------------------------------------

# Fields that say when an item was written, most specific first (JSON keys, CSV headers).
TIME_FIELDS = ("created_at", "timestamp", "date", "time", "datetime", "created", "sent_at",
               "posted_at", "reported_at", "ts")  # fmt: skip
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def item_time(value: object) -> str | None:
    """A time as JSON, CSV or a mail header gives it (ISO 8601, RFC 2822, Unix seconds or
    milliseconds) as UTC ISO 8601 with microseconds, which sorts as text; a time without
    a zone counts as UTC. None when it is not a time."""
    if value is None or isinstance(value, bool):
        return None
    when: datetime | None = None
    try:
        if isinstance(value, int | float):
            when = _from_epoch(float(value))
        elif isinstance(value, str):
            text = value.strip()
            if _NUMBER.fullmatch(text):
                when = _from_epoch(float(text))
            elif text:
                try:
                    when = datetime.fromisoformat(text)
                except ValueError:
                    import email.utils  # here: only a date in e-mail form needs it

                    when = email.utils.parsedate_to_datetime(text)
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    except (ValueError, TypeError, IndexError, OverflowError, OSError):
        return None


def _from_epoch(seconds: float) -> datetime:
    if abs(seconds) >= 1e11:  # milliseconds (1e11 s is the year 5138)
        seconds /= 1000
    return datetime.fromtimestamp(seconds, UTC)


def _record_time(record: object) -> str | None:
    if not isinstance(record, Mapping):
        return None
    fields = {str(k).strip().lower(): v for k, v in record.items()}
    for key in TIME_FIELDS:
        if key in fields and (found := item_time(fields[key])) is not None:
            return found
    return None


def file_times(path: Path, contents: Sequence[Content]) -> list[str | None]:
    """Each imported item's own time, from the record it was read from: a JSON or JSONL
    object's or a CSV row's time field (TIME_FIELDS), an e-mail's Date; None for the rest.
    Best effort: the file was read whole by the importer already, and a file that changed
    since (or any surprise) gives no times rather than an error."""
    none: list[str | None] = [None] * len(contents)
    ext = path.suffix.lower()
    if ext not in (".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".eml"):
        return none
    try:
        data = path.read_bytes()
        if ext == ".eml":
            import email  # here: only .eml files need the e-mail package
            import email.policy

            message = email.message_from_bytes(data, policy=email.policy.default)
            return [item_time(str(message.get("Date") or ""))] * len(contents)
        text = _decoded(data)
        records = _records(ext, text, path.name)
        return [_record_time(records.get(_record_key(ext, c.source or ""))) for c in contents]
    except (ValueError, TypeError, LookupError, OSError, RecursionError, csv.Error):
        return none


def _record_key(ext: str, source: str) -> str:
    """Where the importer says an item came from: "name:line" (JSONL, CSV), "name#n" (an
    item of a JSON list) or the name alone (one JSON object)."""
    if ext == ".json":
        return source.rpartition("#")[2] if "#" in source else ""
    return source.rpartition(":")[2]


def _records(ext: str, text: str, name: str) -> dict[str, object]:
    """The file's records by _record_key."""
    if ext == ".json":
        value = loads_json(text, name)
        if isinstance(value, list):
            return {str(n): v for n, v in enumerate(value, start=1)}
        return {"": value}
    if ext in (".jsonl", ".ndjson"):
        return {
            str(n): loads_json(line, name)
            for n, line in enumerate(text.split("\n"), start=1)
            if line.strip()
        }
    header = text.split("\n", 1)[0]  # the importer's rule: the header's commonest delimiter
    reader = csv.reader(io.StringIO(text), delimiter=max((",", ";", "\t"), key=header.count))
    rows: dict[str, object] = {}
    columns: list[str] | None = None
    while True:
        start = reader.line_num + 1
        row = next(reader, None)
        if row is None:
            return rows
        if columns is None:  # a name given twice: its first column, as the importer
            columns = [h.strip().lower() for h in row]
        else:
            rows[str(start)] = dict(reversed(list(zip(columns, row, strict=False))))


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip


def _decoded(data: bytes) -> str:
    """The text as the importer read it (BOM-marked UTF-16/32, else UTF-8; newlines \\n)."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    text = data.decode(encoding, "replace").removeprefix("\ufeff")
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _Job:
    """One run of one queue: the units left, the reviewer, item-level progress."""

    def __init__(self, service: QueueService, queue: QueueRow) -> None:
        self.service = service
        self.store = service.store
        self.queue = queue
        session = service.session
        self.options = session.review_options(
            source="queue", model=queue.model, effort=queue.effort
        )
        self.pool: HostPool | None = None
        self.policies: dict[str, Policy] = {}
        self.units: list[Unit] = []
        self.left: Counter[int] = Counter()  # units not finished, per item
        self.in_flight: Counter[int] = Counter()
        self.items_total = 0
        self.items_done = 0
        self.items_done_before = 0

    async def prepare(self) -> None:
        stored = await asyncio.to_thread(self.store.policies, self.queue.id)
        self.policies = {p.sha256: stored_policy(p) for p in stored}
        self.units = await asyncio.to_thread(self.store.units, self.queue.id)
        self.left = Counter(u.item_id for u in self.units)
        counts = await asyncio.to_thread(self.store.state_counts, self.queue.id)
        self.items_total = sum(counts.values())
        self.items_done_before = self.items_total - len(self.left)

    async def run(
        self,
        parallel: int,
        on_progress: Callable[[Progress], None] | None,
        stop: asyncio.Event | None,
        backoff: Backoff | None,
    ) -> RunReport:
        started = asyncio.get_running_loop().time()

        def progress(units: Progress) -> None:
            if on_progress is None:
                return
            elapsed = asyncio.get_running_loop().time() - started
            left = len(self.left)
            per_minute, eta = throughput(self.items_done, left, elapsed)
            if units.eta_s is not None:  # per unit: finer than per item, same work left
                eta = units.eta_s
            on_progress(
                dataclasses.replace(
                    units, done=self.items_done_before + self.items_done,
                    total=self.items_total, elapsed_s=elapsed, per_minute=per_minute,
                    eta_s=eta,
                )
            )  # fmt: skip

        runner: BatchRunner[Unit] = BatchRunner(parallel=parallel, backoff=backoff)
        return await runner.run(
            self.units, self.do_one, on_progress=progress, on_abandon=self.give_back, stop=stop
        )

    def _finished(self, unit: Unit) -> None:
        self.left[unit.item_id] -= 1
        if self.left[unit.item_id] <= 0:
            del self.left[unit.item_id]
            self.items_done += 1

    async def do_one(self, unit: Unit) -> Outcome:
        policy = self.policies[unit.policy_sha256]
        item = unit.item_id
        # Units of one item may be in flight together; the item's state follows its links
        # once the last of them is recorded (by that one: "the last one out settles").
        self.in_flight[item] += 1
        try:
            # The item is marked classifying while its request is already on its way (the
            # server's slot does not wait for the database); the mark is settled first.
            starting = asyncio.ensure_future(asyncio.to_thread(self.store.start, unit))
            assert self.pool is not None
            try:
                # Raises Retry (busy, or its host went away: again, maybe on another host)
                # or what stops the run; frees the runner's slot once the answer is in.
                result, host = await self.pool.review(policy, content_from_dict(unit.content))
            finally:
                await asyncio.gather(starting, return_exceptions=True)
            if not starting.result():  # decided or done meanwhile: nothing to record
                self._finished(unit)
                return "skipped"
            settle = self.in_flight[item] == 1
            review_id = await asyncio.to_thread(
                self.store.record, unit, self._finished_review(result, host), settle=settle
            )
        finally:
            self.in_flight[item] -= 1
        if not settle and self.in_flight[item] == 0:
            await asyncio.to_thread(self.store.settle, [item])
        if review_id is None:
            log.warning("item %d already had a finished review: not recorded again", unit.position)
        self._finished(unit)
        return "done" if result.status == "done" else "failed"

    async def give_back(self, units: list[Unit]) -> None:
        """Units cancelled in flight: their items go back to pending (or whatever their
        finished reviews say)."""
        items = sorted({u.item_id for u in units})
        await asyncio.to_thread(self.store.settle, items)

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


# --- export formats ---------------------------------------------------------------------------


def _jsonl(views: Sequence[ItemView]) -> str:
    lines = []
    for v in views:
        row = v.to_json()
        row["content"] = v.content
        row["text"] = v.text
        lines.append(json.dumps(row, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    """Untrusted text in a spreadsheet: a cell that would start a formula gets a leading
    apostrophe (OWASP's advice), so opening the export runs nothing."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv(views: Sequence[ItemView], policies: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["item", "ref", "text", *(f"{p}_label" for p in policies), "violation", "outcome",
         "decision", "decision_label", "decision_rule", "note", "moderator", "at", "hosts"]
    )  # fmt: skip
    for v in views:
        d = v.decision
        hosts = " ".join(dict.fromkeys(c.host for c in v.verdicts if c.host))
        writer.writerow(
            [v.position, _cell(v.ref), _cell(v.text), *(c.label or "" for c in v.verdicts),
             "" if v.violation is None else str(v.violation).lower(), v.outcome or "",
             d.action if d else "", d.label or "" if d else "", _cell(d.rule or "" if d else ""),
             _cell(d.note if d else ""), _cell(d.moderator if d else ""), d.at if d else "",
             _cell(hosts)]
        )  # fmt: skip
    return buffer.getvalue()


def _write_whole(out: Path, text: str) -> None:
    """Write beside the target, then rename: a failed export leaves no partial file."""
    folder = out.parent if str(out.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise QueueError(
            f"Cannot write to {folder} ({exc.strerror}); choose another place."
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(temp, out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise QueueError(f"Cannot write {out} ({exc.strerror}); choose another place.") from None
