"""`safeguard-desktop history ...` and `export`: find past reviews, decide, export notes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safeguard_desktop import paths
from safeguard_desktop.cli.common import CliError, load_settings, print_json
from safeguard_desktop.cli.terminal import safe_terminal
from safeguard_desktop.services.escalation import NoteOptions, escalation_note
from safeguard_desktop.services.history_service import (
    MAX_ID,
    Filters,
    HistoryError,
    HistoryService,
    Restored,
    Review,
    ReviewSummary,
    TrailReport,
    check_date,
)

EXIT_ENGINE, EXIT_USAGE = 1, 2
VERDICT_KEYS = ("label", "violation", "category", "rule_ids", "confidence", "rationale")
MAX_DAYS = 36_500


def iso_date(text: str) -> str:
    try:
        return check_date(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date: use YYYY-MM-DD (like 2026-11-28), or YYYY-MM-DDTHH:MM"
        ) from None


def _whole(text: str, what: str, low: int, high: int, hint: str) -> int:
    """A whole number within [low, high] (SQLite holds no larger), else a usage error."""
    try:
        value = int(text.strip(), 10)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}: {hint}")
    return value


def review_id(text: str) -> int:
    return _whole(
        text, "a review id", 1, MAX_ID,
        "ids are whole numbers from 1; `safeguard-desktop history list` shows them",
    )  # fmt: skip


def row_limit(text: str) -> int:
    return _whole(text, "a number of reviews", 1, MAX_ID, "give a whole number from 1, e.g. 50")


def plain_text(text: str) -> str:
    """Text the history can store: raw bytes that are not UTF-8 arrive as lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            "it holds bytes that are not UTF-8 text: set the terminal to UTF-8, or type it again"
        ) from None
    return text


def day_count(text: str) -> int:
    return _whole(
        text, "a number of days", 1, MAX_DAYS, f"give a whole number from 1 to {MAX_DAYS:,}"
    )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("history", help="past reviews, decisions, retention and backups")
    hs = p.add_subparsers(dest="history_command", metavar="ACTION", required=True)

    def filters(q: argparse.ArgumentParser) -> None:
        q.add_argument("--policy", type=plain_text, help="only this policy id")
        q.add_argument("--verdict", choices=("violation", "safe", "unparsed", "incomplete"))
        q.add_argument(
            "--status", choices=("running", "done", "failed", "cancelled", "interrupted")
        )
        q.add_argument("--decision", choices=("agree", "override", "escalate", "note", "none"))
        q.add_argument("--escalated", action="store_true", help="only escalated reviews")
        q.add_argument("--since", type=iso_date, help="from this date (YYYY-MM-DD)")
        q.add_argument("--until", type=iso_date, help="up to this date (YYYY-MM-DD, inclusive)")
        q.add_argument("--limit", type=row_limit, default=50, help="at most this many (50)")
        q.add_argument("--json", action="store_true")

    lst = hs.add_parser("list", help="newest reviews first")
    filters(lst)
    lst.set_defaults(func=run_list)
    se = hs.add_parser("search", help="full-text search over content, reasoning and notes")
    se.add_argument("query", type=plain_text)
    filters(se)
    se.set_defaults(func=run_search)
    sh = hs.add_parser("show", help="one review with its decisions")
    sh.add_argument("id", type=review_id)
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=run_show)
    de = hs.add_parser("decide", help="record your decision (append-only audit trail)")
    de.add_argument("id", type=review_id)
    act = de.add_mutually_exclusive_group(required=True)
    act.add_argument("--agree", action="store_true", help="agree with the model")
    act.add_argument(
        "--override",
        metavar="LABEL",
        choices=("violation", "safe"),
        help="set your own label (needs --note with the reason)",
    )
    act.add_argument("--escalate", action="store_true", help="escalate this review")
    act.add_argument("--note-only", action="store_true", help="add a note only")
    de.add_argument("--note", type=plain_text, help="your note or reason")
    de.add_argument(
        "--rule", type=plain_text, metavar="ID",
        help="with --override: the policy rule or category it applies, e.g. H2.f or SP2",
    )  # fmt: skip
    de.set_defaults(func=run_decide)
    dl = hs.add_parser("delete", help="delete one review (an audit entry remains)")
    dl.add_argument("id", type=review_id)
    dl.add_argument("--reason", type=plain_text, default="")
    dl.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    dl.set_defaults(func=run_delete)
    pu = hs.add_parser("purge", help="delete reviews older than N days (an audit entry remains)")
    pu.add_argument("--older-than", type=day_count, required=True, metavar="DAYS")
    pu.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    pu.set_defaults(func=run_purge)
    bk = hs.add_parser("backup", help="copy the history database to FILE")
    bk.add_argument("file")
    bk.set_defaults(func=run_backup)
    rs = hs.add_parser(
        "restore",
        help="replace the history with a backup whose decision trail verifies "
        "(the current one is kept beside it)",
    )
    rs.add_argument("file")
    rs.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rs.set_defaults(func=run_restore)
    vf = hs.add_parser(
        "verify", help="check that no decision was edited, removed or added outside the app"
    )
    vf.add_argument("--json", action="store_true")
    vf.set_defaults(func=run_verify)

    rc = hs.add_parser(
        "recover", help="set a damaged history aside (kept as a copy) and start an empty one"
    )
    rc.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rc.set_defaults(func=run_recover)

    ex = sub.add_parser("export", help="escalation note in Markdown for one or more reviews")
    ex.add_argument("ids", type=review_id, nargs="+", metavar="ID")
    ex.add_argument("--out", help="write to this .md file instead of stdout")
    ex.add_argument(
        "--redact", action="store_true", help="mask emails, phone numbers, URLs and @handles"
    )
    ex.add_argument("--no-reasoning", action="store_true", help="leave the reasoning out")
    ex.set_defaults(func=run_export)


@contextmanager
def opened() -> Iterator[HistoryService]:
    try:
        history = HistoryService.open()
    except HistoryError as exc:
        raise CliError(str(exc), EXIT_ENGINE) from None
    try:
        yield history
    except HistoryError as exc:
        raise CliError(str(exc), EXIT_ENGINE) from None
    finally:
        history.close()


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(
        policy_id=args.policy, verdict=args.verdict, decision=args.decision, status=args.status,
        escalated=True if args.escalated else None, since=args.since, until=args.until,
    )  # fmt: skip


def verdict_object(verdict: dict[str, Any] | None) -> dict[str, Any] | None:
    """The same verdict object `classify --json` prints."""
    if verdict is None:
        return None
    return {k: verdict.get(k, [] if k == "rule_ids" else None) for k in VERDICT_KEYS}


def summary_json(s: ReviewSummary) -> dict[str, Any]:
    return {
        "id": s.id, "created_at": s.created_at, "status": s.status,
        "verdict": verdict_object(s.verdict), "policy_id": s.policy_id,
        "policy_version": s.policy_version, "model": s.model, "preview": s.preview,
        "escalated": s.escalated, "last_decision": s.last_decision,
    }  # fmt: skip


def review_json(r: Review) -> dict[str, Any]:
    return {
        "id": r.id, "created_at": r.created_at, "finished_at": r.finished_at,
        "status": r.status, "content": r.content_text, "content_item": r.content,
        "reasoning": r.reasoning, "answer": r.answer, "verdict": verdict_object(r.verdict),
        "model": r.model, "model_digest": r.model_digest, "ollama_version": r.ollama_version,
        "host": r.host, "backend": r.backend, "served_model": r.served_model,
        "effort": r.effort, "num_ctx": r.num_ctx, "seed": r.seed,
        "temperature": r.temperature, "moderator": r.moderator, "source": r.source,
        "policy": {"id": r.policy_id, "version": r.policy_version, "sha256": r.policy_sha256,
                   "title": r.policy_title},
        "stats": r.stats, "error": r.error, "escalated": r.escalated,
        "decisions": [{"action": d.action, "label": d.label, "rule": d.rule, "note": d.note,
                       "moderator": d.moderator, "at": d.at} for d in r.decisions],
    }  # fmt: skip


def _print_rows(rows: list[ReviewSummary], as_json: bool) -> int:
    if as_json:
        print_json([summary_json(s) for s in rows])
        return 0
    if not rows:
        print("No reviews match.")
    for s in rows:
        label = (s.verdict_label or s.status).upper()
        flag = " ⚑" if s.escalated else ""
        print(
            f"#{s.id:<6} {s.created_at[:19]}  {label:<10} {s.policy_id:<16} "
            f"{safe_terminal(s.preview)[:60]}{flag}"
        )
    return 0


def run_list(args: argparse.Namespace) -> int:
    with opened() as h:
        return _print_rows(h.list(filters=_filters(args), limit=args.limit), args.json)


def run_search(args: argparse.Namespace) -> int:
    if not args.query.strip():
        raise CliError("The search is empty: give a word from the content, reasoning or notes.")
    with opened() as h:
        return _print_rows(
            h.search(args.query, filters=_filters(args), limit=args.limit), args.json
        )


def _get(h: HistoryService, review_id: int) -> Review:
    review = h.get(review_id)
    if review is None:
        raise CliError(
            f"There is no review #{review_id}. `safeguard-desktop history list` shows the ids."
        )
    return review


def run_show(args: argparse.Namespace) -> int:
    with opened() as h:
        r = _get(h, args.id)
    if args.json:
        print_json(review_json(r))
        return 0
    v = r.verdict or {}
    print(f"Review #{r.id}  {r.created_at}  {r.status}  by {safe_terminal(r.moderator)}")
    print(
        f"Policy {r.policy_id} v{r.policy_version or '-'} (sha256 {r.policy_sha256[:12]}); "
        f"model {r.model}; effort {r.effort}"
    )
    print(
        f"Verdict: {str(v.get('label', r.status)).upper()}  "
        f"category {safe_terminal(str(v.get('category') or '-'))}  "
        f"rules {safe_terminal(', '.join(r.rule_ids) or '-')}"
    )
    if r.rationale:
        print(f"Rationale: {safe_terminal(r.rationale)}")
    if r.error:
        print(f"Error: {safe_terminal(r.error)}")
    print("\nContent:\n" + safe_terminal(r.content_text))
    print("\nReasoning:\n" + safe_terminal(r.reasoning or "(none)"))
    if r.decisions:
        print("\nDecisions:")
    for d in r.decisions:
        label = f" -> {d.label}" if d.label else ""
        label += f" (rule {safe_terminal(d.rule)})" if d.rule else ""
        note = f": {safe_terminal(d.note)}" if d.note else ""
        print(f"  {d.at[:19]} {safe_terminal(d.moderator)} {d.action}{label}{note}")
    return 0


def run_decide(args: argparse.Namespace) -> int:
    action = ("agree" if args.agree else "override" if args.override
              else "escalate" if args.escalate else "note")  # fmt: skip
    moderator = load_settings()["moderator"]
    with opened() as h:
        _get(h, args.id)
        try:
            h.add_decision(
                args.id, action=action, moderator=moderator, label=args.override, note=args.note,
                rule=args.rule,
            )  # fmt: skip
        except ValueError as exc:
            raise CliError(str(exc)) from None
    print(f"Recorded {action} on review #{args.id} by {moderator}.")
    return 0


def _confirm(question: str, yes: bool, declined: str = "Nothing deleted.") -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{question} Pass --yes to confirm.")
    try:
        answer = input(f"{question} [y/N] ").strip().lower()
    except EOFError:
        answer = ""
    if answer not in ("y", "yes"):
        raise CliError(declined, 0)


def run_delete(args: argparse.Namespace) -> int:
    moderator = load_settings()["moderator"]
    with opened() as h:
        _get(h, args.id)
        _confirm(f"Delete review #{args.id}?", args.yes)
        h.delete_review(args.id, moderator=moderator, reason=args.reason)
    print(f"Deleted review #{args.id}; an audit entry records it.")
    return 0


def run_purge(args: argparse.Namespace) -> int:
    if args.older_than < 1:
        raise CliError("--older-than must be at least 1 day.")
    moderator = load_settings()["moderator"]
    with opened() as h:
        _confirm(f"Delete every review older than {args.older_than} days?", args.yes)
        count = h.purge(older_than_days=args.older_than, moderator=moderator)
    print(f"Purged {count} review(s) older than {args.older_than} days; an audit entry records it.")
    return 0


def _exit_code(exc: HistoryError) -> int:
    """A file the user named that cannot be used is an input error; the rest the disk's."""
    return EXIT_USAGE if exc.kind == "invalid" else EXIT_ENGINE


def run_backup(args: argparse.Namespace) -> int:
    dest = Path(args.file).expanduser()
    with opened() as h:
        try:
            h.backup(dest)
        except HistoryError as exc:
            raise CliError(str(exc), _exit_code(exc)) from None
    print(f"History backed up to {dest}.")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    src = Path(args.file).expanduser()
    if not src.is_file():
        raise CliError(f"No backup file at {src}. Give the path of a history backup.")
    path = paths.history_db()
    moderator = str(load_settings()["moderator"])
    _confirm(
        f"Replace the history at {path} with the backup {src}? The current history is kept "
        "beside it.",
        args.yes,
        declined="Nothing restored.",
    )
    try:
        done = HistoryService.restore(src, moderator=moderator)
    except HistoryError as exc:
        raise CliError(str(exc), _exit_code(exc)) from None
    print(_restored_text(done))
    return 0


def _restored_text(done: Restored) -> str:
    kept = f" The replaced history is kept at {done.kept}." if done.kept else ""
    return (
        f"History restored from {done.source} (sha256 {done.sha256}); its decision trail "
        f"verifies and now records this restore.{kept}"
    )


def verify_json(report: TrailReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "decisions": report.decisions,
        "head": report.head,
        "repairs": list(report.repairs),
        "problems": [
            {
                "kind": p.kind, "decision_id": p.decision_id, "review_id": p.review_id,
                "where": p.where, "message": p.message,
            }
            for p in report.problems
        ],
    }  # fmt: skip


def run_verify(args: argparse.Namespace) -> int:
    with opened() as h:
        report = h.verify()
        where = h.path
    if args.json:
        print_json(verify_json(report))
        return 0 if report.ok else EXIT_ENGINE
    print(report.describe())
    if report.ok:
        print(f"Last seal: {report.head} (note it elsewhere to check this file later).")
        if report.repairs:
            print(
                f"Note: the trail records that its protection was found removed and "
                f"re-created {len(report.repairs)} time(s), last at decision "
                f"#{report.repairs[-1]}: another program changed this file's schema."
            )
        return 0
    for more in report.problems[1:10]:
        print(f"  also at {more.where}: {more.message}")
    if len(report.problems) > 10:
        print(f"  ... and {len(report.problems) - 10} more")
    print(
        f"The history at {where} was changed outside Safeguard Desktop. Keep a copy of it as "
        "evidence; `safeguard-desktop history restore FILE` replaces it by a backup whose "
        "trail verifies."
    )
    return EXIT_ENGINE


def run_recover(args: argparse.Namespace) -> int:
    path = paths.history_db()
    try:
        HistoryService.check()
    except HistoryError as exc:
        if exc.kind != "corrupt":
            raise CliError(str(exc), EXIT_ENGINE) from None
    else:
        print(f"The history at {path} is readable; nothing to recover.")
        return 0
    _confirm(f"Set the damaged history at {path} aside and start an empty one?", args.yes)
    try:
        kept = HistoryService.recover_corrupt()
        HistoryService.check()
    except HistoryError as exc:
        raise CliError(str(exc), EXIT_ENGINE) from None
    print(f"Started an empty history. The damaged file is kept at {kept}.")
    return 0


def run_export(args: argparse.Namespace) -> int:
    with opened() as h:
        reviews = [_get(h, i) for i in args.ids]
    note = escalation_note(
        reviews, NoteOptions(redact=args.redact, include_reasoning=not args.no_reasoning)
    )
    if args.out:
        out = Path(args.out).expanduser()
        try:
            paths.write_private(out, note)  # it holds the content: private, like the logs
        except OSError as exc:
            raise CliError(f"Cannot write {out}: {exc.strerror}.", EXIT_ENGINE) from None
        print(f"Escalation note written to {out}.")
    else:
        sys.stdout.write(note)
    return 0
