"""Shared test set-up: Qt offscreen, no real keychain, no real network."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_API", "pyside6")
# Never touch a real keychain in tests.
os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"
# Never pick up a developer's Ollama host or API key.
os.environ.pop("OLLAMA_HOST", None)
os.environ.pop("OLLAMA_API_KEY", None)
