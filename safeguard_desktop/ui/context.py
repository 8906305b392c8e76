"""What the views share: settings, the server endpoint and client, the history (if open)."""

from __future__ import annotations

from dataclasses import dataclass, field

from safeguard_desktop.engine.client import OllamaClient
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.settings import Settings
from safeguard_desktop.store.history import History


@dataclass
class AppContext:
    """Services wired in `app.py` (or by a test) and handed to every view."""

    settings: Settings
    endpoint: Endpoint
    client: OllamaClient
    history: History | None = None
    warnings: list[str] = field(default_factory=list)  # shown once in the status bar

    @classmethod
    def create(
        cls, settings: Settings, endpoint: Endpoint, history: History | None = None
    ) -> AppContext:
        return cls(
            settings=settings, endpoint=endpoint, client=OllamaClient(endpoint), history=history
        )

    def replace_endpoint(self, endpoint: Endpoint) -> OllamaClient:
        """Point at another server (e.g. a managed one); returns the old client to close."""
        old = self.client
        self.endpoint = endpoint
        self.client = OllamaClient(endpoint)
        return old
