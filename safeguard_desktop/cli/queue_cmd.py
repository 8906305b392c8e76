"""`safeguard-desktop queue ...`: review queues from the command line.

create (import files, a history search or lines on stdin; pick policies), list, run (classify
what is left, N requests in flight, progress on stderr), status, items, order, decide (and
undo), export, delete.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from safeguard_desktop.cli.classify_cmd import model_name
from safeguard_desktop.cli.common import EXIT_ENGINE, CliError, open_session, print_json, warn
from safeguard_desktop.cli.history_cmd import plain_text
from safeguard_desktop.cli.progress import human_duration
from safeguard_desktop.cli.terminal import redrawing, safe_terminal
from safeguard_desktop.core.content import KINDS
from safeguard_desktop.core.vocabulary import EFFORTS
from safeguard_desktop.services.history_service import HistoryError
from safeguard_desktop.services.queue_service import (
    ITEM_ORDERS,
    STATES,
    EngineError,
    ItemView,
    Progress,
    QueueError,
    QueueService,
    QueueStatus,
    RunReport,
)
from safeguard_desktop.services.session import Session

EXIT_OK, EXIT_INTERRUPTED = 0, 130
_BAR = 24


def parallel_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of requests from 1 to 64")
    return value


def host_names(text: str) -> list[str]:
    """--hosts NAME,NAME: the names, in order, without blanks."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one host, e.g. --hosts local,gpu2")
    return names


def item_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an item number: items are numbered from 1 "
            "(`safeguard-desktop queue items NAME` shows them)"
        )
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("queue", help="review queues: import many items, classify, decide")
    qs = p.add_subparsers(dest="queue_command", metavar="ACTION", required=True)

    cr = qs.add_parser("create", help="create a queue from files and policies")
    cr.add_argument("name", type=plain_text)
    cr.add_argument(
        "--from", dest="sources", action="append", metavar="FILE",
        help="items to review: .jsonl .json .csv .txt .eml, or a folder of them, or - for "
        "one message per line of standard input (repeatable)",
    )  # fmt: skip
    cr.add_argument(
        "--from-history", dest="history_query", type=plain_text, metavar="QUERY",
        help="items from a history search (as `history search`): the content of the "
        "matching reviews, newest first, each distinct content once",
    )  # fmt: skip
    cr.add_argument(
        "--policy", dest="policies", action="append", required=True, metavar="ID_OR_PATH",
        help="a built-in policy id or a policy file (repeatable: each item once per policy)",
    )  # fmt: skip
    cr.add_argument("--kind", choices=KINDS, help="content kind (default: from the file)")
    cr.add_argument("--model", type=model_name, help="model (default: the setting)")
    cr.add_argument(
        "--effort",
        choices=EFFORTS,
        help="reasoning effort (default: each policy's, else the setting)",
    )
    cr.add_argument("--text-column", metavar="COLUMN", help="the CSV column holding the text")
    cr.add_argument(
        "--order", choices=ITEM_ORDERS, default="file",
        help="how items are listed: file order, oldest first (the items' own times), or by "
        "verdict and confidence once classified (default: file)",
    )  # fmt: skip
    cr.add_argument("--json", action="store_true")
    cr.set_defaults(func=run_create)

    ls = qs.add_parser("list", help="every queue with its counts")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)

    rn = qs.add_parser("run", help="classify every item still to do (progress on stderr)")
    rn.add_argument("name", type=plain_text)
    rn.add_argument(
        "--parallel", type=parallel_count, metavar="N",
        help="requests in flight on the local server (default: the num_parallel setting); "
        "other hosts use their slots",
    )  # fmt: skip
    rn.add_argument(
        "--hosts", type=host_names, metavar="NAME,NAME",
        help="spread the items over these hosts (default: every enabled host; see `hosts list`)",
    )  # fmt: skip
    rn.set_defaults(func=run_run)

    st = qs.add_parser("status", help="counts per state")
    st.add_argument("name", type=plain_text)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=run_status)

    it = qs.add_parser("items", help="the items with their verdicts and decisions")
    it.add_argument("name", type=plain_text)
    it.add_argument("--state", choices=STATES, help="only items in this state")
    it.add_argument("--json", action="store_true")
    it.set_defaults(func=run_items)

    od = qs.add_parser("order", help="list a queue's items in another order")
    od.add_argument("name", type=plain_text)
    od.add_argument("order", choices=ITEM_ORDERS)
    od.add_argument("--json", action="store_true")
    od.set_defaults(func=run_order)

    de = qs.add_parser("decide", help="record your decision on an item (audit trail)")
    de.add_argument("name", type=plain_text)
    de.add_argument("item", type=item_number)
    act = de.add_mutually_exclusive_group(required=True)
    act.add_argument("--agree", action="store_true", help="agree with the model")
    act.add_argument(
        "--override", metavar="LABEL", choices=("violation", "safe"),
        help="your own label: violation or safe (needs --note with the reason)",
    )  # fmt: skip
    act.add_argument("--escalate", action="store_true", help="send to a senior moderator")
    act.add_argument("--skip", action="store_true", help="skip it (needs --note with the reason)")
    act.add_argument(
        "--retract", action="store_true",
        help="undo the item's decision (a \"retracted\" entry is appended to the trail)",
    )  # fmt: skip
    de.add_argument("--note", type=plain_text, help="your note or reason")
    de.add_argument(
        "--rule", type=plain_text, metavar="ID",
        help="with --override: the policy rule or category it applies, e.g. H2.f or SP2",
    )  # fmt: skip
    de.add_argument("--json", action="store_true")
    de.set_defaults(func=run_decide)

    ex = qs.add_parser("export", help="one row per item: content, verdicts, decision")
    ex.add_argument("name", type=plain_text)
    ex.add_argument("--out", required=True, metavar="FILE", help="a .jsonl or .csv file")
    ex.set_defaults(func=run_export)

    dl = qs.add_parser("delete", help="delete a queue (its reviews stay in the history)")
    dl.add_argument("name", type=plain_text)
    dl.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    dl.set_defaults(func=run_delete)


@contextmanager
def queues(args: argparse.Namespace) -> Iterator[QueueService]:
    """The session's queues; every failure becomes one line and its exit code."""
    session = open_session(args, with_history=True)
    try:
        try:
            yield session.queues()
        except QueueError as exc:
            raise CliError(str(exc)) from None
        except HistoryError as exc:
            raise CliError(str(exc), EXIT_ENGINE) from None
    finally:
        session.close_history()


def stdin_lines() -> list[str]:
    """Standard input as UTF-8 text, one item per line (blank lines are left out later)."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        text = sys.stdin.read()
    else:
        data = buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise CliError(
                f"Standard input is not valid UTF-8 (byte {exc.start}, line {line}); send "
                "UTF-8 text. No queue was created."
            ) from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")


def run_create(args: argparse.Namespace) -> int:
    sources = args.sources or []
    files = [Path(s) for s in sources if s != "-"]
    if sources.count("-") > 1:
        raise CliError("Give --from - (standard input) once.")
    texts = stdin_lines() if "-" in sources else None
    with queues(args) as q:
        status = q.create(
            args.name, files, args.policies, kind=args.kind, model=args.model,
            effort=args.effort, text_column=args.text_column, order=args.order,
            history_query=args.history_query, texts=texts,
        )  # fmt: skip
    if args.json:
        print_json(status.to_json())
    else:
        print(
            f"Created queue {safe_terminal(status.name)}: {status.items} items × "
            f"{len(status.policies)} {'policy' if len(status.policies) == 1 else 'policies'} "
            f"({', '.join(status.policies)}), model {status.model}. "
            f"Next: safeguard-desktop queue run {safe_terminal(status.name)}"
        )
    return EXIT_OK


def _counts(s: QueueStatus) -> str:
    return "  ".join(f"{state} {s.counts[state]}" for state in STATES if s.counts[state])


def run_list(args: argparse.Namespace) -> int:
    with queues(args) as q:
        rows = q.all()
    if args.json:
        print_json([{**s.to_json(), "model": s.model, "created_at": s.created_at} for s in rows])
        return EXIT_OK
    if not rows:
        print("No queues yet. Create one with `safeguard-desktop queue create NAME --from FILE "
              "--policy ID`.")  # fmt: skip
    for s in rows:
        running = "  (running)" if s.running else ""
        print(f"{safe_terminal(s.name):<24} {s.items:>6} items  {_counts(s)}{running}")
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    with queues(args) as q:
        s = q.status(args.name)
    if args.json:
        print_json(s.to_json())
        return EXIT_OK
    print(f"Queue {safe_terminal(s.name)}: {s.items} items, policies {', '.join(s.policies)}")
    print(
        f"Model {s.model}, effort {s.effort or 'per policy'}, items in {s.order} order, "
        f"created {s.created_at[:19]}"
    )
    print(_counts(s) or "empty")
    return EXIT_OK


def run_items(args: argparse.Namespace) -> int:
    with queues(args) as q:
        views = q.items(args.name, state=args.state)
    if args.json:
        print_json([v.to_json() for v in views])
        return EXIT_OK
    for v in views:
        print(_item_line(v))
    if not views:
        print("No items match.")
    return EXIT_OK


def _item_line(v: ItemView) -> str:
    grid = " ".join(f"{c.policy}={c.label or '-'}" for c in v.verdicts)
    decision = f" [{v.decision.action}{' ' + v.decision.label if v.decision.label else ''}]" \
        if v.decision else ""  # fmt: skip
    preview = " ".join(v.text.split())[:50]
    return f"{v.position:>5}  {v.state:<12} {grid}{decision}  {safe_terminal(preview)}"


def run_order(args: argparse.Namespace) -> int:
    with queues(args) as q:
        status = q.set_order(args.name, args.order)
    if args.json:
        print_json({**status.to_json(), "order": status.order})
    else:
        print(f"Queue {safe_terminal(status.name)} lists its items in {status.order} order.")
    return EXIT_OK


def run_decide(args: argparse.Namespace) -> int:
    if args.retract:
        with queues(args) as q:
            view = q.retract(args.name, args.item, note=args.note)
        if args.json:
            print_json(view.to_json())
        else:
            print(
                f"Undid the decision on item {args.item} of {safe_terminal(args.name)}: it is "
                f"{view.state} again (the trail keeps both)."
            )
        return EXIT_OK
    action = ("agree" if args.agree else "override" if args.override
              else "escalate" if args.escalate else "skip")  # fmt: skip
    with queues(args) as q:
        view = q.decide(
            args.name, args.item, action, label=args.override, note=args.note, rule=args.rule
        )
    if args.json:
        print_json(view.to_json())
    else:
        d = view.decision
        who = f" by {safe_terminal(d.moderator)}" if d else ""
        print(f"Recorded {action} on item {args.item} of {safe_terminal(args.name)}{who}.")
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    with queues(args) as q:
        count = q.export(args.name, out)
    print(f"Exported {count} items to {out}.")
    return EXIT_OK


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{question} Pass --yes to confirm.")
    try:
        answer = input(f"{question} [y/N] ").strip().lower()
    except EOFError:
        answer = ""
    if answer not in ("y", "yes"):
        raise CliError("Nothing deleted.", EXIT_OK)


def run_delete(args: argparse.Namespace) -> int:
    with queues(args) as q:
        status = q.status(args.name)
        _confirm(
            f"Delete queue {safe_terminal(status.name)} and its {status.items} items? "
            "Their reviews and decisions stay in the history.",
            args.yes,
        )
        q.delete(args.name)
    print(f"Deleted queue {safe_terminal(status.name)}; its reviews stay in the history.")
    return EXIT_OK


# --- run ---------------------------------------------------------------------------------------


class ProgressLine:
    """The run's progress on stderr: one line redrawn on a terminal, else a line at every
    tenth of the queue (and the last one), so logs stay short and scripts can follow."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last_tenth = -1
        self._last_text = ""
        self._drawn = False

    def __call__(self, p: Progress) -> None:
        text = describe(p)
        if self.tty:
            if text != self._last_text:
                pad = max(0, len(self._last_text) - len(text))
                redrawing(self.stream).write("\r" + text + " " * pad)
                self.stream.flush()
                self._drawn = True
        else:
            tenth = p.done * 10 // p.total if p.total else 10
            if tenth != self._last_tenth:
                self.stream.write(text + "\n")
                self.stream.flush()
                self._last_tenth = tenth
        self._last_text = text

    def warn(self, message: str) -> None:
        """A warning on its own line, the progress line redrawn after it."""
        self.finish()
        warn(message)

    def finish(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def describe(p: Progress) -> str:
    filled = round(_BAR * p.done / p.total) if p.total else _BAR
    parts = [f"[{'#' * filled}{'.' * (_BAR - filled)}] {p.done}/{p.total} items"]
    if p.per_minute is not None:
        parts.append(f"{p.per_minute:.1f} items/min")
    if p.eta_s is not None and p.done < p.total:
        parts.append(f"ETA {human_duration(p.eta_s)}")
    if p.failed:
        parts.append(f"{p.failed} failed")
    if p.retries:
        parts.append(f"{p.retries} asked again (a server busy or gone)")
    return "  ".join(parts)


def run_run(args: argparse.Namespace) -> int:
    session = open_session(args, with_history=True)
    line = ProgressLine()
    try:
        try:
            service = session.queues()
            report = asyncio.run(_run(session, service, args.name, args.parallel, args.hosts, line))
            status = service.status(args.name)
        except KeyboardInterrupt:
            line.finish()
            print(
                "Interrupted: the items in flight are back to pending. Run "
                f"`safeguard-desktop queue run {safe_terminal(args.name)}` again to finish.",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        except QueueError as exc:
            line.finish()
            raise CliError(str(exc)) from None
        except (HistoryError, EngineError) as exc:
            line.finish()
            raise CliError(f"{exc} The items left stay to do.", EXIT_ENGINE) from None
    finally:
        session.close_history()
    line.finish()
    c = status.counts
    reviews = report.done + report.failed
    print(
        f"Queue {safe_terminal(status.name)}: {c['classified'] + c['decided']} of "
        f"{status.items} items classified, {c['failed']} failed ({reviews} reviews in "
        f"{human_duration(report.elapsed_s)})."
    )
    if report.by_host:
        print(f"Reviews by host: {safe_terminal(report.by_host)}.")
    if c["failed"]:
        print(
            f"safeguard-desktop: {c['failed']} items failed; `safeguard-desktop queue items "
            f"{safe_terminal(status.name)} --state failed` shows them, and another run tries "
            "them again.",
            file=sys.stderr,
        )
    return EXIT_OK


async def _run(
    session: Session,
    service: QueueService,
    name: str,
    parallel: int | None,
    hosts: list[str] | None,
    line: ProgressLine,
) -> RunReport:
    try:
        return await service.run(
            name, parallel=parallel, hosts=hosts, on_progress=line, on_warning=line.warn
        )
    finally:
        await session.aclose_client()
