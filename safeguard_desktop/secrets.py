"""The remote-host token lives in the OS keyring, and nowhere else.

When no keyring backend exists (a bare Linux box without Secret Service), we
say so and refuse to store the token rather than writing it to a file.
"""

from __future__ import annotations

import logging

import keyring
import keyring.errors
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


def _usable(backend: KeyringBackend) -> bool:
    name = f"{type(backend).__module__}.{type(backend).__name__}"
    # keyrings.alt backends write files (some in plain text): not a keyring for our token.
    return not name.startswith(("keyring.backends.fail", "keyring.backends.null", "keyrings.alt"))


def backend_name() -> str:
    """Where tokens are kept, for the settings dialog ("Stored in: SecretService")."""
    backend = keyring.get_keyring()
    return type(backend).__name__ if _usable(backend) else "none"


def available() -> bool:
    return _usable(keyring.get_keyring())


def get_token(host: str) -> str | None:
    try:
        return keyring.get_password(SERVICE, host) or None
    except keyring.errors.KeyringError as exc:
        log.info("keyring read failed: %s", exc)
        return None


def set_token(host: str, token: str) -> None:
    if not available():
        raise SecretStoreUnavailable(NO_BACKEND)
    try:
        if token:
            keyring.set_password(SERVICE, host, token)
        else:
            delete_token(host)
    except keyring.errors.KeyringError as exc:
        raise SecretStoreUnavailable(f"The keyring refused the token ({exc}).") from None


def delete_token(host: str) -> None:
    try:
        keyring.delete_password(SERVICE, host)
    except keyring.errors.PasswordDeleteError:
        pass
    except keyring.errors.KeyringError as exc:
        log.info("keyring delete failed: %s", exc)
