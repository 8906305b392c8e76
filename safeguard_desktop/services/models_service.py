"""Model workflows for the GUI's Server panel and the `models` commands.

Each long call takes an `on_progress(Progress)` callback and is cancelled by cancelling the
task that awaits it. Errors are typed (`EngineError` family); nothing prints.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from safeguard_desktop import __version__, paths
from safeguard_desktop.engine import bundle, bundle_import, gguf, gpu, models
from safeguard_desktop.engine.bundle import BundleResult
from safeguard_desktop.engine.client import OllamaClient
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.engine.errors import (
    BundleError,
    EngineError,
    ModelImportFailed,
    ModelMissing,
)
from safeguard_desktop.engine.gguf import ImportResult
from safeguard_desktop.engine.gpu import FitCheck, VramReport
from safeguard_desktop.engine.models import LoadedModel, ModelDetails, ModelInfo, PullResult
from safeguard_desktop.engine.progress import Progress, ProgressCallback, emit
from safeguard_desktop.settings import Settings

if TYPE_CHECKING:
    from safeguard_desktop.core.signing import Signature

__all__ = [
    "RESTART_HINT",
    "BundleError",
    "BundleResult",
    "EngineError",
    "FitCheck",
    "ImportResult",
    "LoadedModel",
    "ModelDetails",
    "ModelImportFailed",
    "ModelInfo",
    "ModelsService",
    "Progress",
    "PullResult",
    "VramReport",
]
RESTART_HINT = (
    "A running Ollama lists it on its next refresh (it reads the manifests folder each time); "
    "if it does not appear, restart Ollama."
)


class ModelsService:
    """Models on one server, plus bundles in one models folder. Close it (or use `async with`)."""

    def __init__(
        self,
        settings: Settings,
        endpoint: Endpoint,
        *,
        client: OllamaClient | None = None,
        nvidia_smi: str | None = None,
    ) -> None:
        """With `client` (the session's), closing this service leaves that client open."""
        self.settings = settings
        self.endpoint = endpoint
        self._own_client = client is None
        self.client = client or OllamaClient(endpoint)
        self.nvidia_smi = nvidia_smi

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.aclose()

    async def __aenter__(self) -> ModelsService:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- server-side ---------------------------------------------------------------------------
    async def installed(self) -> list[ModelInfo]:
        return await models.list_models(self.client)

    async def loaded(self) -> list[LoadedModel]:
        return await models.loaded_models(self.client)

    async def show(self, name: str) -> ModelDetails:
        """Details and capabilities; `.warnings()` says when 'thinking' is missing."""
        return await models.show_model(self.client, name)

    async def pull(self, name: str, on_progress: ProgressCallback | None = None) -> PullResult:
        return await models.pull_model(self.client, name, on_progress)

    async def delete(self, name: str) -> None:
        await models.delete_model(self.client, name)

    async def fit(self, name: str) -> FitCheck:
        """Will the model fit in free GPU memory? Ask before `warm` (loading) it."""
        installed = {m.name: m for m in await self.installed()}
        model = installed.get(name) or installed.get(f"{name}:latest")
        if model is None:
            raise ModelMissing(name)
        for running in await self.loaded():
            if running.name == model.name:
                return FitCheck(
                    True, running.size, model.size, None, f"{model.name} is already loaded."
                )
        vram = await gpu.query_vram(self.nvidia_smi)
        return gpu.fit_check(model.name, model.size, vram)

    async def vram(self) -> VramReport:
        """Total and free GPU memory (nvidia-smi), or why it is unknown."""
        return await gpu.query_vram(self.nvidia_smi)

    async def warm(self, name: str) -> None:
        """Load the model now, kept for the `keep_alive` setting."""
        await models.warm_up(self.client, name, self.settings["keep_alive"] or None)

    async def unload(self, name: str) -> None:
        await models.unload(self.client, name)

    async def import_gguf(
        self, path: Path, name: str, on_progress: ProgressCallback | None = None
    ) -> ImportResult:
        """Create `name` from a local GGUF file (works offline and with a remote server)."""
        return await gguf.import_gguf(self.client, Path(path).expanduser(), name, on_progress)

    # -- models folder -------------------------------------------------------------------------
    def models_dir(self, override: Path | str | None = None) -> Path:
        """`--models-dir`, else the `models_dir` setting, else OLLAMA_MODELS or ~/.ollama/models."""
        chosen = override or self.settings["models_dir"]
        return Path(chosen).expanduser() if chosen else paths.default_models_dir()

    async def export_bundle(
        self,
        name: str,
        dest: Path,
        *,
        models_dir: Path | str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> BundleResult:
        """Write one .tar with the model's manifest and blobs, for an air-gapped machine."""
        return await bundle.in_thread(
            bundle.export_bundle,
            self.models_dir(models_dir),
            name,
            Path(dest),
            app_version=__version__,
            on_progress=on_progress,
        )

    async def import_bundle(
        self,
        src: Path,
        *,
        models_dir: Path | str | None = None,
        on_progress: ProgressCallback | None = None,
        require_signature: Path | str | None = None,
        signature: Path | str | None = None,
    ) -> BundleResult:
        """Verify the whole bundle, then place it; a damaged bundle changes nothing.

        With `require_signature` (a NAME.pub), the bundle must carry a signature by that key
        (`signature`, default FILE.sig) and match it byte for byte; this is checked over the
        whole file before anything is written, and the bytes imported are checked again to be
        those (see `bundle_import.import_bundle`'s `expect`).
        """
        path = Path(src).expanduser()
        expect = None
        if require_signature is not None:
            signed = await bundle.in_thread(
                _verify_signed,
                path,
                Path(require_signature).expanduser(),
                Path(signature).expanduser() if signature is not None else None,
                on_progress=on_progress,
            )
            expect = (signed.sha256, signed.size)
        result = await bundle.in_thread(
            bundle_import.import_bundle,
            path,
            self.models_dir(models_dir),
            on_progress=on_progress,
            expect=expect,
        )
        emit(on_progress, Progress("done", f"Imported {result.name}", result.total, result.total))
        return result


def _verify_signed(
    path: Path,
    pub: Path,
    sig: Path | None,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Signature:
    """The bundle's signature by `pub` holds for the whole file; else BundleError."""
    from safeguard_desktop.services import signing  # cryptography loads only when needed

    try:
        verified = signing.verify_file(
            path, pub, sig_path=sig, on_progress=on_progress, cancel=cancel
        )
    except signing.SignatureError as exc:
        raise BundleError(f"{exc} The bundle is refused; nothing was imported.") from None
    return verified.signature
