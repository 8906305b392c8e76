"""`safeguard-desktop classify`: one item against one policy, JSON or a readable summary."""

from __future__ import annotations

import argparse
import asyncio
import sys

from safeguard_desktop.cli.common import (
    EXIT_ENGINE,
    CliError,
    add_host_argument,
    open_session,
    print_json,
)
from safeguard_desktop.cli.terminal import safe_terminal, styled
from safeguard_desktop.core.content import (
    KINDS,
    Content,
    ContentError,
    first_surrogate,
    visible_surrogates,
)
from safeguard_desktop.core.importers import import_file, parse_bytes
from safeguard_desktop.core.policy import Policy, PolicyError, resolve_policy
from safeguard_desktop.core.prompt import MIN_NUM_CTX, RequestError
from safeguard_desktop.core.vocabulary import EFFORTS
from safeguard_desktop.services.review import ReviewOptions, ReviewResult
from safeguard_desktop.services.session import Session

EXIT_OK, EXIT_UNPARSED = 0, 3


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "classify",
        help="classify one item against a policy",
        description="Classify text, a file or stdin against a policy.",
    )
    p.add_argument("--policy", required=True, help="built-in policy id or path to a .md/.txt file")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help="the content to classify")
    src.add_argument(
        "--file", help="import the content from a file (.txt .md .json .jsonl .csv .eml)"
    )
    p.add_argument("--item", type=int, help="which item (1-based) of a multi-item file")
    p.add_argument(
        "--kind", choices=KINDS, help="content kind (default: message, or from the file)"
    )
    p.add_argument(
        "--effort",
        choices=EFFORTS,
        help="reasoning effort (default: the policy's, else the setting)",
    )
    p.add_argument(
        "--model",
        type=model_name,
        help="model name (default: the setting, gpt-oss-safeguard:20b)",
    )
    p.add_argument("--num-ctx", type=context_size, help="context window in tokens (>= 2048)")
    add_host_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-history", action="store_true", help="do not save this review")
    p.set_defaults(func=run)


def context_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of tokens") from None
    if not MIN_NUM_CTX <= value <= 1_048_576:
        raise argparse.ArgumentTypeError(f"must be between {MIN_NUM_CTX} and 1048576 tokens")
    return value


def model_name(text: str) -> str:
    if first_surrogate(text) is not None:
        raise argparse.ArgumentTypeError(
            f"'{visible_surrogates(text)}' is not UTF-8 text; type the model name again "
            "(`safeguard-desktop models list` shows them)"
        )
    return text


def _undecodable(text: str, option: str) -> CliError | None:
    """Why an argument cannot be read as text: Python keeps each byte that is not UTF-8 as a
    lone surrogate (U+DC80-U+DCFF); other lone surrogates come from callers in-process."""
    index = first_surrogate(text)
    if index is None:
        return None
    code = ord(text[index])
    if 0xDC80 <= code <= 0xDCFF:
        return CliError(
            f"{option} holds bytes that are not UTF-8 (\\x{code - 0xDC00:02x} at character "
            f"{index + 1}); set the terminal to UTF-8, or save the content to a file and use "
            "--file."
        )
    return CliError(
        f"{option} holds an invalid character (\\u{code:04x}, a lone surrogate) at character "
        f"{index + 1}; remove it and try again."
    )


def read_content(args: argparse.Namespace, max_bytes: int) -> Content:
    kind = args.kind
    items: list[Content]
    try:
        if args.text is not None and not args.text.strip():
            raise CliError("The text is empty: give the content to classify with --text.")
        problem = _undecodable(args.text, "--text") if args.text is not None else None
        if problem is not None:
            raise problem
        if args.text is not None:
            items = parse_bytes(args.text.encode("utf-8"), "text.txt", kind=kind or "message")
        elif args.file:
            items = import_file(args.file, kind=kind, max_bytes=max_bytes)
        elif not sys.stdin.isatty():
            items = parse_bytes(
                sys.stdin.buffer.read(max_bytes + 1),
                "stdin.txt",
                kind=kind or "message",
                max_bytes=max_bytes,
            )
        else:
            raise CliError("Give the content with --text, --file, or on standard input.")
    except ContentError as exc:
        raise CliError(str(exc)) from None
    if not items:
        raise CliError("The input holds no item to classify.")
    if args.item is not None:
        if not 1 <= args.item <= len(items):
            raise CliError(
                f"--item {args.item} is out of range: the input holds {len(items)} items."
            )
        return items[int(args.item) - 1]
    if len(items) > 1:
        raise CliError(f"The input holds {len(items)} items; choose one with --item N.")
    return items[0]


def run(args: argparse.Namespace) -> int:
    session = open_session(args, with_history=not args.no_history)
    try:
        try:
            policy = resolve_policy(args.policy, folders=session.policy_folders())
        except PolicyError as exc:
            raise CliError(str(exc)) from None
        content = read_content(args, int(session.settings["max_file_mb"]) * 1024 * 1024)
        options = session.review_options(
            source="cli", model=args.model, effort=args.effort, num_ctx=args.num_ctx
        )
        try:
            result = asyncio.run(_classify(session, options, policy, content, args.json))
        except RequestError as exc:
            raise CliError(str(exc)) from None
    finally:
        session.close_history()
    return report(result, as_json=args.json)


async def _classify(
    session: Session, options: ReviewOptions, policy: Policy, content: Content, as_json: bool
) -> ReviewResult:
    live = not as_json and sys.stdout.isatty()
    if live:
        _header(policy, options.model, options.effort_for(policy))

    def on_delta(kind: str, text: str) -> None:
        if kind == "thinking":
            styled("2", text)
            sys.stdout.flush()

    try:
        return await session.reviewer(options).review(
            policy, content, on_delta=on_delta if live else None
        )
    finally:
        await session.aclose_client()


def _header(policy: Policy, model: str, effort: str) -> None:
    version = f" v{policy.version}" if policy.version else ""
    print(f"Policy: {policy.title} ({policy.id}{version}, sha256 {policy.short_sha})")
    print(f"Model:  {model} · effort {effort}\n")


def report(result: ReviewResult, *, as_json: bool) -> int:
    if as_json:
        print_json(result.to_json())
    else:
        _summary(result)
    for warning in result.warnings:
        print(f"safeguard-desktop: {safe_terminal(warning)}", file=sys.stderr)
    if result.error is not None:
        print(f"safeguard-desktop: {result.error}", file=sys.stderr)
        return EXIT_ENGINE
    verdict = result.verdict
    if verdict is None or verdict.label in ("unparsed", "incomplete"):
        return EXIT_UNPARSED
    return EXIT_OK


def _summary(result: ReviewResult) -> None:
    live = sys.stdout.isatty()
    if not live:
        _header(result.policy, result.model, result.effort)
        if result.reasoning:
            print("Reasoning:\n" + safe_terminal(result.reasoning))
    print("\n" + "─" * 60)
    v = result.verdict
    if v is None:
        print("FAILED")
    else:
        parts = [v.label.upper()]
        if v.category:
            parts.append(f"category {safe_terminal(v.category)}")
        if v.rule_ids:
            parts.append("rules " + ", ".join(safe_terminal(r) for r in v.rule_ids))
        if v.confidence:
            parts.append(f"confidence {safe_terminal(v.confidence)}")
        print("  ·  ".join(parts))
        if v.rationale:
            print(f"Rationale: {safe_terminal(v.rationale)}")
        if v.label in ("unparsed", "incomplete"):
            print(f"Answer: {safe_terminal(v.raw)!r}")
    s = result.stats
    if s is not None:
        bits = []
        if s.first_token_s is not None:
            bits.append(f"first token {s.first_token_s:.2f} s")
        if s.tokens_per_s:
            bits.append(f"{s.tokens_per_s:.1f} tokens/s")
        bits.append(f"total {s.wall_s:.2f} s")
        bits.append(f"prompt {s.prompt_eval_count} tokens")
        print("Stats: " + " · ".join(bits))
    if result.saved and result.review_id is not None:
        print(f"Saved as review #{result.review_id}.")
