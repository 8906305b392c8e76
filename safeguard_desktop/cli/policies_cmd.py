"""`safeguard-desktop policies list | show ID | lint PATH`."""

from __future__ import annotations

import argparse

from safeguard_desktop.cli.classify_cmd import policy_folders
from safeguard_desktop.cli.common import CliError, load_settings, print_json
from safeguard_desktop.cli.terminal import safe_terminal
from safeguard_desktop.core.policy import (
    Policy,
    PolicyError,
    builtin_policies,
    find_policies,
    lint,
    load_policy,
    resolve_policy,
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("policies", help="list, show and lint policies")
    ps = p.add_subparsers(dest="policies_command", metavar="ACTION", required=True)
    lst = ps.add_parser("list", help="built-in policies and those in your policy folder")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=run_list)
    show = ps.add_parser("show", help="print a policy with its rule ids")
    show.add_argument("policy", help="policy id or path")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)
    lt = ps.add_parser("lint", help="check a policy against the model's usage guide")
    lt.add_argument("path", help="policy id or path")
    lt.add_argument("--json", action="store_true")
    lt.set_defaults(func=run_lint)


def run_list(args: argparse.Namespace) -> int:
    settings = load_settings()
    policies = list(builtin_policies())
    for folder in policy_folders(settings):
        if folder.is_dir():
            policies.extend(find_policies(folder))
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
        }
        for p in policies
    ]
    if args.json:
        print_json(rows)
        return 0
    width = max((len(p.id) for p in policies), default=2)
    for p, r in zip(policies, rows, strict=True):
        where = "built-in" if p.builtin else str(p.source)
        print(
            f"{safe_terminal(p.id):<{width}}  {p.version or '-':<5}  {r['lint']:<9}  "
            f"{safe_terminal(p.title)}  ({safe_terminal(where)})"
        )
    return 0


def _lint_status(policy: Policy) -> str:
    issues = lint(policy)
    if any(i.severity == "error" for i in issues):
        return "errors"
    if any(i.severity == "warning" for i in issues):
        return "warnings"
    return "clean"


def _resolve(ref: str) -> Policy:
    try:
        return resolve_policy(ref, folders=policy_folders(load_settings()))
    except PolicyError as exc:
        raise CliError(str(exc)) from None


def run_show(args: argparse.Namespace) -> int:
    p = _resolve(args.policy)
    if args.json:
        print_json(
            {
                "id": p.id,
                "title": p.title,
                "version": p.version,
                "sha256": p.sha256,
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
    print(safe_terminal(p.text))
    print("\nRules:")
    for r in p.rules:
        print(f"  {r.id:<8} line {r.line:<4} {safe_terminal(r.section)}")
    return 0


def run_lint(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.path)
    except PolicyError as exc:
        if "/" in args.path or "." in args.path:
            raise CliError(str(exc)) from None
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
        for i in issues:
            where = f"line {i.line}: " if i.line else ""
            print(f"{i.severity:<8} {i.code:<18} {where}{i.message}")
        if not issues:
            print("No issues.")
    return 1 if any(i.severity == "error" for i in issues) else 0
