"""`safeguard-desktop hosts`: the model hosts queue and evaluation runs spread over.

    hosts add NAME URL [--kind ollama|openai] [--model M] [--slots N] [--token-stdin]
    hosts list [--json]          every host with its health (probed at once)
    hosts remove NAME
    hosts enable NAME / hosts disable NAME
    hosts test NAME [--json]     one tiny review on the host, timed

The managed local Ollama (the host setting) is always listed, as `local`. Tokens go to the
keyring only (`--token-stdin` reads one line from standard input, never an argument that
would stay in the shell's history).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from safeguard_desktop.cli.common import CliError, open_session, print_json, warn
from safeguard_desktop.cli.terminal import safe_terminal
from safeguard_desktop.hosts import KINDS, MAX_SLOTS

if TYPE_CHECKING:
    from safeguard_desktop.services.hosts import HostStatus, HostTest
    from safeguard_desktop.services.session import Session

EXIT_OK, EXIT_FAILED = 0, 1


def slot_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_SLOTS:
        raise argparse.ArgumentTypeError(f"slots must be between 1 and {MAX_SLOTS}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hosts = sub.add_parser(
        "hosts",
        help="the model hosts queue and evaluation runs spread over",
        description="Several Ollama or OpenAI-compatible servers (vLLM, llama.cpp's "
        "llama-server, LM Studio): queue and evaluation runs spread their items over every "
        "enabled host that has the model. The managed local Ollama is the host `local`.",
    )
    ha = hosts.add_subparsers(dest="hosts_action", metavar="ACTION", required=True)

    add = ha.add_parser("add", help="add a host")
    add.add_argument("name", help="a short name, e.g. gpu2")
    add.add_argument(
        "url", help="its address, e.g. http://gpu2:11434 (Ollama) or http://gpu3:8000/v1"
    )
    add.add_argument(
        "--kind", choices=KINDS,
        help="ollama (native API) or openai (/v1/chat/completions); default: openai for an "
        "address ending in /v1, else ollama",
    )  # fmt: skip
    add.add_argument(
        "--model", default="", metavar="M",
        help="the model's name on that host (default: the model setting)",
    )  # fmt: skip
    add.add_argument(
        "--slots", type=slot_count, default=1, metavar="N",
        help="requests in flight on it (its OLLAMA_NUM_PARALLEL or vLLM's batch; default 1)",
    )  # fmt: skip
    add.add_argument(
        "--token-stdin", action="store_true",
        help="read its bearer token from standard input (kept in the keyring only)",
    )  # fmt: skip
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=run_add)

    ls = ha.add_parser("list", help="every host with its health and models")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)

    rm = ha.add_parser("remove", help="remove a host (and its token)")
    rm.add_argument("name")
    rm.set_defaults(func=run_remove)

    for action, enabled in (("enable", True), ("disable", False)):
        p = ha.add_parser(action, help=f"{action} a host for queue and evaluation runs")
        p.add_argument("name")
        p.set_defaults(func=run_enable, enabled=enabled)

    test = ha.add_parser("test", help="one tiny review on a host, timed")
    test.add_argument("name")
    test.add_argument("--json", action="store_true")
    test.set_defaults(func=run_test)


def _session(args: argparse.Namespace) -> Session:
    return open_session(args)


def run_add(args: argparse.Namespace) -> int:
    from safeguard_desktop.services.hosts import HostConfigError

    token = None
    if args.token_stdin:
        token = sys.stdin.readline().strip() or None
        if token is None:
            raise CliError("--token-stdin: standard input held no token.")
    session = _session(args)
    try:
        host = session.hosts().add(
            args.name, args.url, kind=args.kind, model=args.model, slots=args.slots, token=token
        )
    except HostConfigError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(host.to_json())
    else:
        print(
            f"Added host {safe_terminal(host.name)}: {host.kind} at {safe_terminal(host.url)}, "
            f"{host.slots} slot(s), model {safe_terminal(host.model or 'from the settings')}."
            " `safeguard-desktop hosts test " + safe_terminal(host.name) + "` tries it."
        )
    return EXIT_OK


def run_remove(args: argparse.Namespace) -> int:
    from safeguard_desktop.services.hosts import HostConfigError

    try:
        host = _session(args).hosts().remove(args.name)
    except HostConfigError as exc:
        raise CliError(str(exc)) from None
    print(f"Removed host {safe_terminal(host.name)} ({safe_terminal(host.url)}).")
    return EXIT_OK


def run_enable(args: argparse.Namespace) -> int:
    from safeguard_desktop.services.hosts import HostConfigError

    try:
        host = _session(args).hosts().set_enabled(args.name, args.enabled)
    except HostConfigError as exc:
        raise CliError(str(exc)) from None
    state = "enabled" if host.enabled else "disabled"
    print(f"Host {safe_terminal(host.name)} is {state}.")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    session = _session(args)
    service = session.hosts()
    if service.list.problem:
        warn(service.list.problem)

    async def probe_all() -> list[HostStatus]:
        try:
            return await service.statuses()
        finally:
            await session.aclose_client()

    statuses = asyncio.run(probe_all())
    if args.json:
        print_json([s.to_json() for s in statuses])
        return EXIT_OK
    for s in statuses:
        c, p = s.config, s.probe
        health = f"up, {p.kind} {p.version or ''}".rstrip() if p.healthy else "DOWN"
        flags = [] if c.enabled else ["disabled"]
        if s.token:
            flags.append("token in keyring")
        print(
            f"{safe_terminal(c.name):<12} {safe_terminal(c.url):<34} {c.slots} slot(s)  "
            f"{health}" + (f" ({', '.join(flags)})" if flags else "")
        )
        model = c.model_for(service.default_model())
        if not p.healthy:
            print(f"{'':<12} {safe_terminal(p.problem or 'not answering')}")
        elif s.mark:
            print(f"{'':<12} NOT USED: {safe_terminal(s.mark)}")
        else:
            print(f"{'':<12} model {safe_terminal(model)}: there")
    return EXIT_OK


def run_test(args: argparse.Namespace) -> int:
    from safeguard_desktop.services.hosts import HostConfigError

    session = _session(args)

    async def one() -> HostTest:
        try:
            return await session.hosts().test(args.name)
        finally:
            await session.aclose_client()

    try:
        result = asyncio.run(one())
    except HostConfigError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(result.to_json())
    elif result.error:
        print(
            f"Host {safe_terminal(result.name)} ({safe_terminal(result.url)}): "
            f"{safe_terminal(result.error)} ({result.seconds:.2f} s)"
        )
    else:
        served = f", served as {safe_terminal(result.served_model)}" if (
            result.served_model and result.served_model != result.model) else ""  # fmt: skip
        print(
            f"Host {safe_terminal(result.name)} ({safe_terminal(result.url)}, {result.kind}): "
            f"answered in {result.seconds:.2f} s with {safe_terminal(result.model)}{served}; "
            f"verdict {safe_terminal(result.label or 'not parsed')}."
        )
    return EXIT_FAILED if result.error else EXIT_OK
