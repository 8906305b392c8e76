"""`safeguard-desktop policies list | show ID | lint PATH`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safeguard_desktop.cli.common import CliError, load_settings, print_json
from safeguard_desktop.cli.terminal import safe_terminal
from safeguard_desktop.core.policy import (
    Policy,
    PolicyError,
    builtin_policies,
    find_policies_with_errors,
    lint,
    resolve_policy,
)
from safeguard_desktop.services.session import policy_folders
from safeguard_desktop.settings import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "policies",
        help="list, show and lint policies",
        description="Built-in policies and those in your policy folder (setting policy_folder, "
        "else the data folder's policies/).",
    )
    ps = p.add_subparsers(dest="policies_command", metavar="ACTION", required=True)
    lst = ps.add_parser("list", help="built-in policies and those in your policy folder")
    lst.add_argument("--json", action="store_true", help="print a JSON array")
    lst.set_defaults(func=run_list)
    show = ps.add_parser("show", help="print a policy with its rule ids")
    show.add_argument("policy", help="policy id or path")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=run_show)
    lt = ps.add_parser(
        "lint",
        help="check a policy against the model's usage guide",
        description="Check a policy against the model's usage guide. Exit status: 0 when "
        "there is no error (warnings are advice), 1 when there are errors, 2 when the "
        "policy cannot be read.",
    )
    lt.add_argument("path", help="policy id or path")
    lt.add_argument("--json", action="store_true", help="print a JSON array of findings")
    lt.set_defaults(func=run_lint)


def _user_policies(settings: Settings) -> list[Policy]:
    """Policies in the user's folder; files that cannot be read are named on stderr."""
    configured = bool(settings["policy_folder"])
    found: list[Policy] = []
    for folder in policy_folders(settings):
        folder = Path(folder)
        if not folder.is_dir():
            if configured:
                _warn(
                    f"your policy folder {folder} (setting policy_folder) is not an existing "
                    "folder; only the built-in policies are listed. Create it or change "
                    "the setting."
                )
            continue
        policies, problems = find_policies_with_errors(folder)
        found.extend(policies)
        for path, message in problems:
            if path == folder:
                _warn(message)
            else:
                _warn(f"skipped {path}: {message}")
    return found


def _warn(message: str) -> None:
    print(f"safeguard-desktop: warning: {safe_terminal(message)}", file=sys.stderr)


def run_list(args: argparse.Namespace) -> int:
    settings = load_settings()
    policies = list(builtin_policies()) + _user_policies(settings)
    # `show`, `lint` and `classify` take the first policy with an id: later ones need a path.
    seen: set[str] = set()
    shadowed: list[bool] = []
    for p in policies:
        shadowed.append(p.id in seen)
        seen.add(p.id)
    rows = [
        {
            "id": p.id,
            "title": p.title,
            "version": p.version,
            "sha256": p.sha256,
            "builtin": p.builtin,
            "source": str(p.source) if p.source else None,
            "rules": len(p.rules),
            "lint": _lint_status(p),
            "shadowed": hidden,
        }
        for p, hidden in zip(policies, shadowed, strict=True)
    ]
    if args.json:
        print_json(rows)
        return 0
    width = max((len(p.id) for p in policies), default=2)
    for p, r in zip(policies, rows, strict=True):
        where = _where(p)
        if r["shadowed"]:
            where += "; its id is taken by a policy above, so refer to it by path"
        print(
            f"{_line(p.id):<{width}}  {_line(p.version or '-'):<5}  {r['lint']:<9}  "
            f"{_line(p.title)}  ({_line(where)})"
        )
    return 0


def _where(policy: Policy) -> str:
    return "built-in" if policy.builtin else str(policy.source)


def _line(text: str) -> str:
    """Untrusted text (front matter, file names) on one terminal line, controls shown."""
    return safe_terminal(" ".join(text.split()))


def _lint_status(policy: Policy) -> str:
    issues = lint(policy)
    if any(i.severity == "error" for i in issues):
        return "errors"
    if any(i.severity == "warning" for i in issues):
        return "warnings"
    return "clean"


def _resolve(ref: str) -> Policy:
    settings = load_settings()
    try:
        return resolve_policy(ref, folders=policy_folders(settings))
    except PolicyError as exc:
        if exc.path is not None:  # a file was found but cannot be read
            raise CliError(str(exc)) from None
        raise CliError(_unknown_id(ref.strip(), str(exc), settings)) from None


def _unknown_id(ref: str, message: str, settings: Settings) -> str:
    """Why `ref` matched no policy: a file of that name that cannot be read, else the ids."""
    ids = [p.id for p in builtin_policies()]
    for folder in policy_folders(settings):
        folder = Path(folder)
        if not folder.is_dir():
            if settings["policy_folder"]:
                message += (
                    f" Your policy folder {folder} (setting policy_folder) is not an "
                    "existing folder."
                )
            continue
        policies, problems = find_policies_with_errors(folder)
        for path, problem in problems:
            if path != folder and path.stem.casefold() == ref.casefold():
                return f"{problem} (file {path})"
        for policy in policies:
            if policy.id not in ids:
                ids.append(policy.id)
    return f"{message} Available ids: {', '.join(ids)}."


def run_show(args: argparse.Namespace) -> int:
    p = _resolve(args.policy)
    if args.json:
        print_json(
            {
                "id": p.id,
                "title": p.title,
                "version": p.version,
                "sha256": p.sha256,
                "builtin": p.builtin,
                "source": str(p.source) if p.source else None,
                "output": p.output,
                "labels": p.labels,
                "escalate": list(p.escalate),
                "effort": p.effort,
                "text": p.text,
                "rules": [
                    {"id": r.id, "line": r.line, "section": r.section, "text": r.text}
                    for r in p.rules
                ],
            }
        )
        return 0
    print(safe_terminal(p.text.rstrip("\n")))
    if not p.rules:
        print("\nRules: none (no rule ids such as HS2.a found).")
        return 0
    print("\nRules:")
    for r in p.rules:
        print(f"  {r.id:<8} line {r.line:<4} {safe_terminal(r.section)}")
    return 0


def run_lint(args: argparse.Namespace) -> int:
    # The same lookup as `show` and `classify --policy`: lint what a review would use.
    policy = _resolve(args.path)
    issues = lint(policy)
    if args.json:
        print_json(
            [
                {"code": i.code, "severity": i.severity, "line": i.line, "message": i.message}
                for i in issues
            ]
        )
    else:
        print(f"Policy {_line(policy.id)} ({_line(_where(policy))})")
        for i in issues:
            where = f"line {i.line}: " if i.line else ""
            print(f"{i.severity:<8} {i.code:<18} {where}{safe_terminal(i.message)}")
        if not issues:
            print("No issues.")
    return 1 if any(i.severity == "error" for i in issues) else 0
