"""The remote-host token lives in the OS keyring, and nowhere else.

When no keyring backend exists (a bare Linux box without Secret Service), we
say so and refuse to store the token rather than writing it to a file.

The `keyring` library is imported on first use (`_keyring`), and the app reads the token
in a thread (`TokenLookup`) while the window opens: finding the backend costs 50-200 ms
and 9 MiB (its entry points, Secret Service's D-Bus and crypto libraries).

Most hosts have no token (a local Ollama has no authentication), so the keyring is not
even loaded for them: `keyring-hosts.json` in the config folder records, per host address,
whether the keyring holds its token (never the token). Saving or forgetting a token here
updates it; a host it does not know yet is looked up once and recorded. A token put into
the keyring by another program for a host recorded as having none is found by the
Settings dialog (`read_token`), which then records it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

log = logging.getLogger("safeguard.secrets")
SERVICE = "safeguard-desktop"

NO_BACKEND = (
    "No system keyring is available, so the token was not saved. Install and unlock a "
    "keyring (GNOME Keyring or KWallet on Linux), or pass the token for this session only "
    "with SAFEGUARD_OLLAMA_TOKEN."
)


class SecretStoreUnavailable(RuntimeError):
    """No usable keyring backend: the token cannot be kept."""


def _keyring() -> ModuleType:
    """The `keyring` module. Off macOS, its macOS backend's bindings are marked absent
    first: looking for the Keychain libraries there runs `ctypes.util.find_library` three
    times (ldconfig, gcc and ld subprocesses, 30-100 ms) for a backend that can only say
    "macOS required"."""
    if sys.platform != "darwin":
        sys.modules.setdefault("keyring.backends.macOS.api", None)  # type: ignore[arg-type]
    import keyring
    import keyring.errors

    return keyring


def _usable(backend: KeyringBackend) -> bool:
    name = f"{type(backend).__module__}.{type(backend).__name__}"
    # keyrings.alt backends write files (some in plain text): not a keyring for our token.
    return not name.startswith(("keyring.backends.fail", "keyring.backends.null", "keyrings.alt"))


def backend_name() -> str:
    """Where tokens are kept, for the settings dialog ("Stored in: SecretService")."""
    backend = _keyring().get_keyring()
    return type(backend).__name__ if _usable(backend) else "none"


def available() -> bool:
    return _usable(_keyring().get_keyring())


# -- which hosts have a token in the keyring (`keyring-hosts.json`; no secret in it) -------
INDEX_NAME = "keyring-hosts.json"
_index_lock = threading.Lock()


def _index_file() -> Path:
    from safeguard_desktop import paths

    return paths.config_dir() / INDEX_NAME


def _read_index() -> dict[str, bool]:
    """Host address -> whether the keyring holds its token; {} when unknown or unreadable
    (then every host is looked up, as before the file existed)."""
    try:
        data = json.loads(_index_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if not isinstance(hosts, dict):
        return {}
    return {str(k): v for k, v in hosts.items() if isinstance(v, bool)}


def known_to_have_none(host: str) -> bool:
    """True when the keyring was read for `host` and held no token, and none was saved
    since: nothing to look up."""
    return _read_index().get(host) is False


def _record(host: str, has_token: bool) -> None:
    """Remember whether the keyring holds `host`'s token. A file that cannot be written
    only means the keyring is read again next time."""
    from safeguard_desktop import paths

    with _index_lock:
        hosts = _read_index()
        if hosts.get(host) is has_token:
            return
        hosts[host] = has_token
        try:
            target = _index_file()
            tmp = target.with_name(f".{INDEX_NAME}.{os.getpid()}.tmp")
            paths.write_private(tmp, json.dumps({"version": 1, "hosts": hosts}, indent=1))
            os.replace(tmp, target)
        except OSError as exc:
            log.info("could not record which hosts have a token: %s", exc)


def get_token(host: str) -> str | None:
    """The keyring's token for `host`; the keyring is not loaded for a host recorded as
    having none (`keyring-hosts.json`)."""
    if known_to_have_none(host):
        return None
    return read_token(host)


def read_token(host: str) -> str | None:
    """The keyring's token for `host`, read whatever the record says, which is then
    updated. A keyring that fails to answer changes no record, unless there is no keyring
    at all (nothing can be stored in it)."""
    keyring = _keyring()
    try:
        token = keyring.get_password(SERVICE, host) or None
    except keyring.errors.NoKeyringError as exc:
        log.info("keyring read failed: %s", exc)
        token = None
    except keyring.errors.KeyringError as exc:
        log.info("keyring read failed: %s", exc)
        return None
    _record(host, token is not None)
    return token


def set_token(host: str, token: str) -> None:
    keyring = _keyring()
    if not available():
        raise SecretStoreUnavailable(NO_BACKEND)
    try:
        if token:
            keyring.set_password(SERVICE, host, token)
            _record(host, True)
        else:
            delete_token(host)
    except keyring.errors.KeyringError as exc:
        raise SecretStoreUnavailable(f"The keyring refused the token ({exc}).") from None


def delete_token(host: str) -> None:
    keyring = _keyring()
    try:
        keyring.delete_password(SERVICE, host)
    except keyring.errors.PasswordDeleteError:
        pass
    except keyring.errors.KeyringError as exc:
        log.info("keyring delete failed: %s", exc)
        return
    _record(host, False)


class TokenLookup:
    """The keyring's token for one host, read in a thread from the moment this is made.

    Nothing waits for it but the requests to that host (`wait`, through
    `engine.endpoint.AwaitedBearer`): the window opens and takes typing meanwhile, however
    long the keyring takes (a locked one asks to be unlocked). A keyring that fails is
    logged and read as no token, as `get_token` does.
    """

    def __init__(self, host: str) -> None:
        self.host = host
        self._future: concurrent.futures.Future[str | None] = concurrent.futures.Future()
        self._future.set_running_or_notify_cancel()  # a cancelled waiter cannot cancel it
        if known_to_have_none(host):  # no thread, and the keyring library is not loaded
            self._future.set_result(None)
            return
        thread = threading.Thread(target=self._read, name="keyring-lookup", daemon=True)
        thread.start()

    def _read(self) -> None:
        token: str | None = None
        try:
            token = get_token(self.host)
        except Exception:  # a broken backend: the same as no token, and said in the log
            log.exception("keyring read failed")
        finally:
            self._future.set_result(token)

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> str | None:
        """The token, once read (blocks: never on the GUI thread)."""
        return self._future.result(timeout)

    async def wait(self) -> str | None:
        """The token, once read, without blocking the event loop."""
        if self._future.done():
            return self._future.result()
        return await asyncio.wrap_future(self._future)
