"""`safeguard-desktop eval ...`: the policy workbench from the command line.

run (evaluate a policy on a labelled set, N requests in flight, progress on stderr; the same
evaluation run again continues where it stopped), import (a labelled set from a file or from
the history's decisions), sets, list, show, compare (two runs of one set: McNemar and the
flips), report (Markdown), delete.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safeguard_desktop.cli.classify_cmd import model_name
from safeguard_desktop.cli.common import EXIT_ENGINE, CliError, open_session, print_json, warn
from safeguard_desktop.cli.history_cmd import plain_text
from safeguard_desktop.cli.progress import human_duration
from safeguard_desktop.cli.queue_cmd import ProgressLine, host_names, parallel_count
from safeguard_desktop.cli.terminal import safe_terminal
from safeguard_desktop.core.vocabulary import EFFORTS
from safeguard_desktop.services.evaluation import (
    COMPARED,
    ComparisonView,
    EngineError,
    EvaluationError,
    EvaluationService,
    Metrics,
    RunDetail,
    RunInfo,
    RunOutcome,
    SetInfo,
)
from safeguard_desktop.services.history_service import HistoryError
from safeguard_desktop.services.session import Session

EXIT_OK, EXIT_INTERRUPTED = 0, 130


def run_number(text: str) -> str:
    value = text.strip().removeprefix("#")
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a run number (`safeguard-desktop eval list` shows them)"
        )
    return value


def positive_values(text: str) -> list[str]:
    values = [v.strip() for v in plain_text(text).split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(
            "name the label values that count as violation, separated by commas (such as "
            "--positive spam,scam)"
        )
    return values


def _label_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--text-column", type=plain_text, metavar="C",
        help="the column (or JSON key) holding the text (default: text, content, prompt...)",
    )  # fmt: skip
    p.add_argument(
        "--label-column", type=plain_text, metavar="C",
        help="the column (or JSON key) holding the label (default: label, truth, ...)",
    )  # fmt: skip
    p.add_argument(
        "--positive", type=positive_values, metavar="V,V",
        help="the label values that count as violation (every other value is safe); needed "
        "when the labels are not 1/0, true/false, violation/safe or tier ids like SP2",
    )  # fmt: skip


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "eval", help="policy workbench: measure a policy on labelled examples, compare versions"
    )
    es = p.add_subparsers(dest="eval_command", metavar="ACTION", required=True)

    rn = es.add_parser(
        "run",
        help="evaluate a policy on a labelled set (progress on stderr; run again to continue)",
    )
    rn.add_argument(
        "--policy", required=True, type=plain_text, metavar="ID_OR_PATH",
        help="a built-in policy id or a policy file",
    )  # fmt: skip
    rn.add_argument(
        "--labels", required=True, type=plain_text, metavar="FILE",
        help="the labelled set: .jsonl .json .csv (also a `queue export` .jsonl), or the name "
        "of a stored set",
    )  # fmt: skip
    _label_options(rn)
    rn.add_argument(
        "--parallel", type=parallel_count, metavar="N",
        help="requests in flight on the local server (default: the num_parallel setting); "
        "other hosts use their slots",
    )  # fmt: skip
    rn.add_argument(
        "--hosts", type=host_names, metavar="NAME,NAME",
        help="spread the items over these hosts (default: every enabled host; see `hosts list`)",
    )  # fmt: skip
    rn.add_argument("--model", type=model_name, help="model (default: the setting)")
    rn.add_argument(
        "--effort",
        choices=EFFORTS,
        help="reasoning effort (default: the policy's, else the setting)",
    )
    rn.add_argument(
        "--fresh", action="store_true",
        help="start a new run even when this evaluation was run before",
    )  # fmt: skip
    rn.add_argument("--json", action="store_true")
    rn.set_defaults(func=run_run)

    im = es.add_parser("import", help="store a labelled set from a file or from the history")
    im.add_argument("file", nargs="?", type=plain_text, metavar="FILE")
    im.add_argument(
        "--from-history", dest="history_query", nargs="?", const="", type=plain_text,
        metavar="QUERY",
        help="the reviews moderators decided (an agree confirms the verdict, an override "
        "gives the label), all of them or those a history search finds",
    )  # fmt: skip
    im.add_argument(
        "--policy-id", type=plain_text, metavar="ID",
        help="with --from-history: only this policy's reviews",
    )  # fmt: skip
    im.add_argument("--name", type=plain_text, help="the set's name (default: the file's name)")
    _label_options(im)
    im.add_argument("--json", action="store_true")
    im.set_defaults(func=run_import)

    st = es.add_parser("sets", help="the stored labelled sets")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=run_sets)

    ls = es.add_parser("list", help="every evaluation run with its main figures")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)

    sh = es.add_parser("show", help="a run's figures and every item's prediction")
    sh.add_argument("run", type=run_number)
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=run_show)

    cp = es.add_parser("compare", help="two runs of one set: figures, McNemar test, flips")
    cp.add_argument("run_a", type=run_number, metavar="RUN_A")
    cp.add_argument("run_b", type=run_number, metavar="RUN_B")
    cp.add_argument("--json", action="store_true")
    cp.set_defaults(func=run_compare)

    rp = es.add_parser("report", help="write a run's Markdown evaluation report")
    rp.add_argument("run", type=run_number)
    rp.add_argument("--out", required=True, type=plain_text, metavar="FILE.md")
    rp.add_argument(
        "--against", type=run_number, metavar="RUN",
        help="add a comparison with this earlier run of the same set (flips, McNemar, diff)",
    )  # fmt: skip
    rp.set_defaults(func=run_report)

    dl = es.add_parser("delete", help="delete a run (its reviews stay in the history)")
    dl.add_argument("run", type=run_number)
    dl.set_defaults(func=run_delete)


@contextmanager
def evaluations(args: argparse.Namespace) -> Iterator[EvaluationService]:
    """The session's evaluations; every failure becomes one line and its exit code."""
    session = open_session(args, with_history=True)
    try:
        try:
            yield session.evaluations()
        except EvaluationError as exc:
            raise CliError(str(exc)) from None
        except HistoryError as exc:
            raise CliError(str(exc), EXIT_ENGINE) from None
    finally:
        session.close_history()


# --- printing ----------------------------------------------------------------------------------


def _n(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _ci(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f" [{interval[0]:.3f}-{interval[1]:.3f}]"


def metric_lines(m: Metrics) -> list[str]:
    by = m.confusion.undecided
    undecided = ", ".join(f"{by[k]} {k}" for k in by if by[k])
    lines = [
        f"  n {m.n}   TP {m.tp}  FP {m.fp}  TN {m.tn}  FN {m.fn}   no verdict {m.unparsed}"
        + (f" ({undecided})" if undecided else ""),
        f"  precision {_n(m.precision)}{_ci(m.precision_ci)}   recall {_n(m.recall)}"
        f"{_ci(m.recall_ci)}   F1 {_n(m.f1)}",
        f"  accuracy {_n(m.accuracy)}{_ci(m.accuracy_ci)}   false-positive rate {_n(m.fpr)}"
        f"{_ci(m.fpr_ci)}   kappa {_n(m.kappa)}",
    ]
    if m.median_seconds is not None or m.median_tokens is not None:
        lines.append(
            f"  median per item: {_n(m.median_seconds, 2)} s, {_n(m.median_tokens, 0)} tokens"
        )
    for c in m.categories:
        lines.append(
            f"  recall {safe_terminal(c.category)}: {_n(c.recall)} ({c.caught} of "
            f"{c.caught + c.missed}{f', {c.unparsed} no verdict' if c.unparsed else ''})"
        )
    return lines


def _run_title(info: RunInfo) -> str:
    return (
        f"Run {info.id}: policy {safe_terminal(info.policy_id)} ({info.policy_sha256[:12]}) on "
        f"{safe_terminal(info.set_name)} ({info.total} items), model {safe_terminal(info.model)}, "
        f"effort {info.effort}"
    )


def _set_line(s: SetInfo) -> str:
    extra = []
    if s.left_out:
        extra.append(f"{s.left_out} without a label left out")
    if s.no_text:
        extra.append(f"{s.no_text} without text left out")
    more = f"; {', '.join(extra)}" if extra else ""
    return (
        f"{safe_terminal(s.name)}: {s.items} items ({s.violations} violation, {s.safe} safe"
        f"{more}), {s.shape}, checksum {s.checksum[:12]}"
    )


# --- commands ----------------------------------------------------------------------------------


def run_run(args: argparse.Namespace) -> int:
    session = open_session(args, with_history=True)
    line = ProgressLine()
    try:
        try:
            service = session.evaluations()
            outcome = asyncio.run(_run(session, service, args, line))
        except KeyboardInterrupt:
            line.finish()
            print(
                "Interrupted: the finished items are kept. Run the same command again to "
                "continue the evaluation.",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        except EvaluationError as exc:
            line.finish()
            raise CliError(str(exc)) from None
        except (HistoryError, EngineError) as exc:
            line.finish()
            raise CliError(
                f"{exc} The finished items are kept; run the same command again to continue.",
                EXIT_ENGINE,
            ) from None
    finally:
        session.close_history()
    line.finish()
    info = outcome.info
    if outcome.reused:
        warn(
            f"run {info.id} had evaluated this policy version on this set already; nothing "
            "was sent (--fresh starts a new run)."
        )
    elif outcome.continued:
        warn(f"continued run {info.id} where it stopped.")
    if info.failed:
        warn(
            f"{info.failed} {'item' if info.failed == 1 else 'items'} failed (counted under no "
            "verdict); run the same command "
            f"again to try them again, or `safeguard-desktop eval show {info.id}`."
        )
    if args.json:
        print_json(outcome.to_json())
        return EXIT_OK
    _print_outcome(outcome)
    return EXIT_OK


def _print_outcome(outcome: RunOutcome) -> None:
    info, report = outcome.info, outcome.report
    print(_run_title(info))
    sent = report.done + report.failed
    print(
        f"  {info.done} of {info.total} items classified, {info.failed} failed "
        f"({sent} requests in {human_duration(report.elapsed_s)})"
    )
    for text in metric_lines(outcome.metrics):
        print(text)
    print(
        f"Next: safeguard-desktop eval show {info.id}, or eval report {info.id} "
        f"--out run-{info.id}.md"
    )


async def _run(
    session: Session, service: EvaluationService, args: argparse.Namespace, line: ProgressLine
) -> RunOutcome:
    try:
        return await service.run(
            args.policy, args.labels, text_column=args.text_column,
            label_column=args.label_column, positive=args.positive, model=args.model,
            effort=args.effort, parallel=args.parallel, hosts=args.hosts, on_progress=line,
            on_warning=line.warn, fresh=args.fresh,
        )  # fmt: skip
    finally:
        await session.aclose_client()


def run_import(args: argparse.Namespace) -> int:
    if (args.file is None) == (args.history_query is None):
        raise CliError("Give a labelled set FILE, or --from-history [QUERY] (not both).")
    with evaluations(args) as ev:
        if args.file is not None:
            if args.policy_id:
                raise CliError("--policy-id goes with --from-history.")
            info = ev.import_set(
                Path(args.file), args.name, text_column=args.text_column,
                label_column=args.label_column, positive=args.positive,
            )  # fmt: skip
        else:
            if args.text_column or args.label_column or args.positive:
                raise CliError(
                    "--text-column, --label-column and --positive go with a FILE; the history's "
                    "labels are the moderators' decisions."
                )
            query = args.history_query or None
            name = args.name or ("history" + (f" {query}" if query else ""))
            info = ev.import_history(name, query, policy=args.policy_id)
    if args.json:
        print_json(info.to_json())
        return EXIT_OK
    verb = "Found the same items already stored as" if info.reused else "Stored"
    print(f"{verb} set {_set_line(info)}.")
    return EXIT_OK


def run_sets(args: argparse.Namespace) -> int:
    with evaluations(args) as ev:
        rows = ev.sets()
    if args.json:
        print_json([s.to_json() for s in rows])
        return EXIT_OK
    if not rows:
        print("No labelled sets yet: `safeguard-desktop eval run --policy ID --labels FILE` "
              "imports one.")  # fmt: skip
    for s in rows:
        print(f"{s.id:>4}  {_set_line(s)}")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    with evaluations(args) as ev:
        runs = ev.list()
        figures = {r.id: ev.metrics(r.id) for r in runs}
    if args.json:
        print_json(
            [
                {**r.to_json(), **{k: figures[r.id].to_json()[k] for k in (
                    "n", "precision", "recall", "f1", "accuracy", "fpr", "kappa")}}
                for r in runs
            ]
        )  # fmt: skip
        return EXIT_OK
    if not runs:
        print("No evaluation runs yet: `safeguard-desktop eval run --policy ID --labels FILE`.")
    for r in runs:
        m = figures[r.id]
        notes = [f"{r.failed} failed"] if r.failed else []
        notes += ["running"] if r.running else [f"{r.pending} to do"] if r.pending else []
        state = f"  ({', '.join(notes)})" if notes else ""
        print(
            f"{r.id:>4}  {safe_terminal(r.policy_id):<16} {r.policy_sha256[:8]}  "
            f"{safe_terminal(r.set_name):<24} {safe_terminal(r.model)} {r.effort:<6} "
            f"{r.done}/{r.total}  F1 {_n(m.f1)}  precision {_n(m.precision)}  "
            f"recall {_n(m.recall)}{state}"
        )
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    with evaluations(args) as ev:
        detail = ev.show(args.run)
    if args.json:
        print_json(detail.to_json())
        return EXIT_OK
    _print_detail(detail)
    return EXIT_OK


def _print_detail(detail: RunDetail) -> None:
    info = detail.info
    print(_run_title(info))
    print(f"  created {info.created_at[:19]}; {info.done} of {info.total} classified, "
          f"{info.failed} failed, {info.pending} to do")  # fmt: skip
    for text in metric_lines(detail.metrics):
        print(text)
    print()
    for item in detail.items:
        mark = {True: "ok", False: "WRONG", None: "-"}[item.correct]
        predicted = item.predicted or "to do"
        ref = f" [{safe_terminal(item.ref)}]" if item.ref else ""
        preview = " ".join(item.text.split())[:60]
        truth = "violation" if item.truth else "safe"
        print(
            f"{item.position:>5}  {truth:<9} -> {predicted:<10} {mark:<5}{ref} "
            f"{safe_terminal(preview)}"
        )


def run_compare(args: argparse.Namespace) -> int:
    with evaluations(args) as ev:
        view = ev.compare(args.run_a, args.run_b)
    if args.json:
        print_json(view.to_json())
        return EXIT_OK
    _print_comparison(view)
    return EXIT_OK


def _print_comparison(view: ComparisonView) -> None:
    c = view.comparison
    print(f"A: {_run_title(view.a)}")
    print(f"B: {_run_title(view.b)}")
    print(f"{'':<16}{'A':>10}{'B':>10}{'B - A':>10}")
    for name in COMPARED:
        digits = 0 if name == "median_tokens" else 2 if name == "median_seconds" else 3
        print(
            f"{name:<16}{_n(c.a.figure(name), digits):>10}{_n(c.b.figure(name), digits):>10}"
            f"{_n(c.difference[name], digits):>10}"
        )
    chance = "more than chance" if c.mcnemar_p < 0.05 else "could be chance"
    print(
        f"McNemar (exact): {c.only_a_correct} only A right, {c.only_b_correct} only B right, "
        f"p = {c.mcnemar_p:.4g}: the difference {chance}."
    )
    count = len(view.flips)
    print(f"{count} {'flip' if count == 1 else 'flips'}:" if count else "No flips.")
    for f in view.flips:
        ref = f" [{safe_terminal(f.ref)}]" if f.ref else ""
        preview = " ".join(f.text.split())[:50]
        truth = "violation" if f.truth else "safe"
        print(f"{f.position:>5}  truth {truth:<9}  A {f.a:<10} B {f.b:<10}{ref} "
              f"{safe_terminal(preview)}")  # fmt: skip


def run_report(args: argparse.Namespace) -> int:
    out = Path(args.out)
    with evaluations(args) as ev:
        ev.report(args.run, out, against=args.against)
    against = f" compared with run {args.against}" if args.against else ""
    print(f"Wrote the report of run {args.run}{against} to {safe_terminal(str(out))}.")
    return EXIT_OK


def run_delete(args: argparse.Namespace) -> int:
    with evaluations(args) as ev:
        ev.delete(args.run)
    print(f"Deleted evaluation run {args.run}; its reviews stay in the history.")
    return EXIT_OK
