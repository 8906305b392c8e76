"""`safeguard-desktop models ...`: list, pull, import and move models, online and air-gapped."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from safeguard_desktop.cli.classify_cmd import model_name
from safeguard_desktop.cli.common import (
    EXIT_ENGINE,
    EXIT_USAGE,
    CliError,
    add_host_argument,
    open_session,
    print_json,
)
from safeguard_desktop.cli.progress import ProgressPrinter, human_bytes
from safeguard_desktop.cli.terminal import redrawing, safe_terminal
from safeguard_desktop.services.models_service import (
    RESTART_HINT,
    BundleError,
    EngineError,
    ModelImportFailed,
    ModelsService,
)

EXIT_OK, EXIT_INTERRUPTED = 0, 130


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "models",
        help="list, pull, import and move models",
        description="Models on the Ollama server, and air-gapped bundles.",
    )
    actions = p.add_subparsers(dest="models_action", metavar="ACTION", required=True)

    def action(name: str, help_text: str, *, host: bool = True) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text, description=help_text)
        if host:
            add_host_argument(parser)
        return parser

    action("list", "installed models").add_argument("--json", action="store_true")
    action("ps", "models loaded in memory").add_argument("--json", action="store_true")
    action("pull", "download a model (resumes an interrupted download)").add_argument(
        "name", type=model_name
    )
    action("rm", "delete a model").add_argument("name", type=model_name)
    imp = action("import", "create a model from a local GGUF file (offline)")
    imp.add_argument("gguf", help="path of the .gguf file")
    imp.add_argument(
        "--name", required=True, type=model_name, help="name of the new model, e.g. my-model:latest"
    )
    exp = action(
        "export", "write a model and its blobs to one .tar for another machine", host=False
    )
    exp.add_argument("name", type=model_name)
    exp.add_argument("file", help="the bundle to write (.tar)")
    exp.add_argument(
        "--models-dir",
        help="Ollama's models folder (default: the setting, OLLAMA_MODELS, or ~/.ollama/models)",
    )
    bun = action("import-bundle", "verify and install a bundle made by `models export`", host=False)
    bun.add_argument("file")
    bun.add_argument("--models-dir", help="Ollama's models folder to install into")
    bun.add_argument(
        "--require-signature",
        metavar="PUB",
        help="refuse the bundle unless FILE.sig shows it intact and signed by this public key "
        "(checked before anything is written)",
    )
    bun.add_argument("--sig", metavar="SIG", help="the signature file (default: FILE.sig)")
    action("warm", "load a model now so the first review does not wait").add_argument(
        "name", type=model_name
    )
    action("unload", "free a model's memory now").add_argument("name", type=model_name)
    show = action("show", "details and capabilities of a model")
    show.add_argument("name", type=model_name)
    show.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _code(exc: EngineError) -> int:
    return EXIT_USAGE if isinstance(exc, ModelImportFailed | BundleError) else EXIT_ENGINE


def run(args: argparse.Namespace) -> int:
    session = open_session(args)
    handler = HANDLERS[args.models_action]
    try:
        return asyncio.run(_with_service(session.models(), handler, args))
    except EngineError as exc:
        raise CliError(str(exc), _code(exc)) from None
    except KeyboardInterrupt:
        print(file=sys.stdout, flush=True)
        what = CANCELLED.get(args.models_action, "Interrupted.")
        print(f"safeguard-desktop: {what}", file=sys.stderr)
        return EXIT_INTERRUPTED


async def _with_service(
    service: ModelsService, handler: Callable[..., Awaitable[int]], args: argparse.Namespace
) -> int:
    try:
        return await handler(service, args)
    finally:
        await service.client.aclose()  # on this loop, which made it


CANCELLED = {
    "pull": "Pull cancelled; run the same command again to resume.",
    "import": "Import cancelled; the model was not created.",
    "export": "Export cancelled; no bundle was written.",
    "import-bundle": "Import cancelled; the models folder is unchanged.",
}


async def _list(service: ModelsService, args: argparse.Namespace) -> int:
    installed = await service.installed()
    if args.json:
        print_json([m.to_json() for m in installed])
        return EXIT_OK
    if not installed:
        print(
            "No models installed. Pull one with `safeguard-desktop models pull "
            "gpt-oss-safeguard:20b`, or import a bundle."
        )
        return EXIT_OK
    width = max(len(m.name) for m in installed)
    print(f"{'NAME':<{width}}  {'SIZE':>9}  {'PARAMS':>7}  QUANT   MODIFIED")
    for m in installed:
        print(
            f"{safe_terminal(m.name):<{width}}  {human_bytes(m.size):>9}  "
            f"{m.parameter_size:>7}  {m.quantization:<6}  {m.modified_at[:19]}"
        )
    return EXIT_OK


async def _ps(service: ModelsService, args: argparse.Namespace) -> int:
    loaded = await service.loaded()
    if args.json:
        print_json([m.to_json() for m in loaded])
        return EXIT_OK
    if not loaded:
        print("No model is loaded.")
    for m in loaded:
        gpu_share = f"{100 * m.size_vram / m.size:.0f}% GPU" if m.size else "?"
        print(
            f"{safe_terminal(m.name)}  {human_bytes(m.size)}  {gpu_share}  "
            f"context {m.context_length or '?'}  until {m.expires_at[:19]}"
        )
    return EXIT_OK


async def _check_capabilities(service: ModelsService, name: str) -> None:
    try:
        details = await service.show(name)
    except EngineError:
        return
    for warning in details.warnings():
        print(f"safeguard-desktop: warning: {warning}", file=sys.stderr)


async def _pull(service: ModelsService, args: argparse.Namespace) -> int:
    printer = ProgressPrinter(redrawing())
    try:
        result = await service.pull(args.name, printer)
    finally:
        printer.finish()
    print(f"Pulled {args.name} ({human_bytes(result.total)}).")
    await _check_capabilities(service, args.name)
    return EXIT_OK


async def _rm(service: ModelsService, args: argparse.Namespace) -> int:
    await service.delete(args.name)
    print(f"Deleted {args.name}.")
    return EXIT_OK


async def _import(service: ModelsService, args: argparse.Namespace) -> int:
    printer = ProgressPrinter(redrawing())
    try:
        result = await service.import_gguf(Path(args.gguf), args.name, printer)
    finally:
        printer.finish()
    how = "uploaded" if result.uploaded else "already on the server"
    print(
        f"Imported {result.name} from {Path(args.gguf).name} ({human_bytes(result.size)}, "
        f"{result.digest[:19]}…, {how})."
    )
    await _check_capabilities(service, result.name)
    return EXIT_OK


async def _export(service: ModelsService, args: argparse.Namespace) -> int:
    printer = ProgressPrinter(redrawing())
    try:
        result = await service.export_bundle(
            args.name, Path(args.file), models_dir=args.models_dir, on_progress=printer
        )
    finally:
        printer.finish()
    print(
        f"Wrote {result.path} ({result.blobs} blobs, {human_bytes(result.total)}). Copy it to "
        "the other machine and run `safeguard-desktop models import-bundle FILE` there."
    )
    return EXIT_OK


async def _import_bundle(service: ModelsService, args: argparse.Namespace) -> int:
    if args.sig and not args.require_signature:
        raise CliError("--sig is used with --require-signature PUB (the key to check it with).")
    printer = ProgressPrinter(redrawing())
    try:
        result = await service.import_bundle(
            Path(args.file),
            models_dir=args.models_dir,
            on_progress=printer,
            require_signature=args.require_signature,
            signature=args.sig,
        )
    finally:
        printer.finish()
    present = f", {result.skipped} already present" if result.skipped else ""
    signed = f"; signature by {args.require_signature} checked" if args.require_signature else ""
    print(
        f"Imported {result.name} into {result.path} ({result.blobs} blobs, "
        f"{human_bytes(result.total)}{present}{signed}). {RESTART_HINT}"
    )
    return EXIT_OK


async def _warm(service: ModelsService, args: argparse.Namespace) -> int:
    fit = await service.fit(args.name)
    if fit.fits is False:
        print(f"safeguard-desktop: warning: {fit.message}", file=sys.stderr)
    print(f"Loading {args.name}…", flush=True)
    await service.warm(args.name)
    keep = service.settings["keep_alive"]
    print(
        f"{args.name} is loaded" + (f" (kept for {keep} after the last review)." if keep else ".")
    )
    return EXIT_OK


async def _unload(service: ModelsService, args: argparse.Namespace) -> int:
    await service.unload(args.name)
    print(f"{args.name} is unloaded.")
    return EXIT_OK


async def _show(service: ModelsService, args: argparse.Namespace) -> int:
    details = await service.show(args.name)
    if args.json:
        print_json(details.to_json())
        return EXIT_OK
    rows: list[tuple[str, Any]] = [
        ("Model", details.name),
        ("Capabilities", ", ".join(details.capabilities) or "none reported"),
        ("Family", details.family),
        ("Parameters", details.parameter_size),
        ("Quantization", details.quantization),
        ("Context length", details.context_length),
        ("License", details.license),
    ]
    for label, value in rows:
        if value:
            print(f"{label + ':':<16}{safe_terminal(str(value))}")
    for warning in details.warnings():
        print(f"safeguard-desktop: warning: {warning}", file=sys.stderr)
    return EXIT_OK


HANDLERS: dict[str, Callable[[ModelsService, argparse.Namespace], Awaitable[int]]] = {
    "list": _list,
    "ps": _ps,
    "pull": _pull,
    "rm": _rm,
    "import": _import,
    "export": _export,
    "import-bundle": _import_bundle,
    "warm": _warm,
    "unload": _unload,
    "show": _show,
}
