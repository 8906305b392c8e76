"""`safeguard-desktop keys new`, `sign` and `verify`: Ed25519 signatures for carried-in files.

    keys new NAME [--dir D] [--force]   NAME.key (private, 0600) and NAME.pub
    sign FILE --key NAME.key            writes FILE.sig beside FILE
    verify FILE --key NAME.pub          exit 0 only for an intact FILE signed by that key

`verify` exits 1 with one line saying what is wrong (no signature, another key, file altered,
malformed signature or key). The formats are described in ``core/signing.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safeguard_desktop.cli.common import CliError, print_json
from safeguard_desktop.cli.progress import ProgressPrinter, human_bytes
from safeguard_desktop.cli.terminal import redrawing

if TYPE_CHECKING:
    from safeguard_desktop.services.signing import Signature

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser(
        "keys",
        help="make a signing key pair",
        description="Ed25519 key pairs for `sign` and `verify`.",
    )
    ka = keys.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    new = ka.add_parser(
        "new",
        help="write NAME.key (private, yours only) and NAME.pub (public, to hand out)",
        description="Write NAME.key (private, file mode 0600: keep it to yourself) and "
        "NAME.pub (public: give it to whoever verifies).",
    )
    new.add_argument("name", help="name of the pair, e.g. review-room")
    new.add_argument("--dir", help="folder to write them in (default: the current folder)")
    new.add_argument("--force", action="store_true", help="replace an existing pair")
    new.add_argument("--json", action="store_true")
    new.set_defaults(func=run_keys_new)

    sign = sub.add_parser(
        "sign",
        help="sign a file (a bundle, an installer): writes FILE.sig",
        description="Sign FILE with a private key; the signature goes to FILE.sig beside it.",
    )
    sign.add_argument("file")
    sign.add_argument("--key", required=True, metavar="KEY", help="the private key (NAME.key)")
    sign.add_argument("--sig", metavar="SIG", help="where to write the signature (FILE.sig)")
    sign.add_argument("--json", action="store_true")
    sign.set_defaults(func=run_sign)

    verify = sub.add_parser(
        "verify",
        help="check that a file is intact and signed by a key",
        description="Exit 0 only when FILE is intact and signed by the key in PUB; "
        "else exit 1 with one line saying what is wrong.",
    )
    verify.add_argument("file")
    verify.add_argument("--key", required=True, metavar="PUB", help="the public key (NAME.pub)")
    verify.add_argument("--sig", metavar="SIG", help="the signature file (default: FILE.sig)")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=run_verify)


def _progress() -> ProgressPrinter | None:
    """A redrawn progress line on stderr for large files, only when it is a terminal."""
    return ProgressPrinter(redrawing(sys.stderr), tty=True) if sys.stderr.isatty() else None


def _facts(path: Path, sig_path: Path, signature: Signature) -> dict[str, Any]:
    return {
        "file": str(path),
        "signature": str(sig_path),
        "key": signature.key,
        "sha256": signature.sha256,
        "size": signature.size,
    }


def run_keys_new(args: argparse.Namespace) -> int:
    from safeguard_desktop.services import signing

    folder = Path(args.dir).expanduser() if args.dir else Path.cwd()
    if not folder.is_dir():
        raise CliError(f"{folder} is not a folder; create it first or choose another with --dir.")
    try:
        pair = signing.new_keys(args.name, folder, force=args.force)
    except (ValueError, FileExistsError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"The keys cannot be written in {folder} ({exc.strerror or exc}).") from None
    if args.json:
        print_json({"private": str(pair.private), "public": str(pair.public), "key": pair.key})
        return EXIT_OK
    print(f"Wrote {pair.private} (private: keep it to yourself; never copy it into a room).")
    print(f"Wrote {pair.public} (public: give it to whoever verifies).")
    print(f"Key id {pair.key}")
    return EXIT_OK


def run_sign(args: argparse.Namespace) -> int:
    from safeguard_desktop.services import signing

    path = Path(args.file).expanduser()
    printer = _progress()
    try:
        signed = signing.sign_file(
            path,
            Path(args.key).expanduser(),
            sig_path=Path(args.sig).expanduser() if args.sig else None,
            on_progress=printer,
        )
    except signing.SignatureError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    finally:
        if printer is not None:
            printer.finish()
    if args.json:
        print_json(_facts(signed.path, signed.sig_path, signed.signature))
        return EXIT_OK
    sig = signed.signature
    print(
        f"Signed {path} ({human_bytes(sig.size)}, sha256 {sig.sha256[:16]}…) with key "
        f"{sig.key[:16]}…; wrote {signed.sig_path}."
    )
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    from safeguard_desktop.services import signing

    path = Path(args.file).expanduser()
    pub = Path(args.key).expanduser()
    printer = _progress()
    try:
        verified = signing.verify_file(
            path,
            pub,
            sig_path=Path(args.sig).expanduser() if args.sig else None,
            on_progress=printer,
        )
    except signing.SignatureError as exc:
        if args.json:
            print_json(
                {"ok": False, "file": str(path), "problem": exc.problem, "message": str(exc)}
            )
        raise CliError(str(exc), EXIT_FAILED) from None
    finally:
        if printer is not None:
            printer.finish()
    if args.json:
        print_json({"ok": True, **_facts(path, verified.sig_path, verified.signature)})
        return EXIT_OK
    sig = verified.signature
    print(
        f"Good signature: {path} is intact ({human_bytes(sig.size)}, sha256 "
        f"{sig.sha256[:16]}…) and signed by {pub} (key {sig.key[:16]}…)."
    )
    return EXIT_OK
