"""Safeguard Desktop: review content with gpt-oss-safeguard on a local Ollama server.

The version lives only in pyproject.toml. ``__version__`` reads it from the installed
package's metadata, or, in a source checkout that was never installed, from the
pyproject.toml beside the package ("0+unknown" when neither can be read). It is computed
on first use, so importing the package costs nothing.
"""

from __future__ import annotations

import functools
from pathlib import Path

DISTRIBUTION = "safeguard-desktop"
UNKNOWN = "0+unknown"


@functools.cache
def app_version() -> str:
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return _source_version(Path(__file__).resolve().parent.parent / "pyproject.toml")


def _source_version(pyproject: Path) -> str:
    import tomllib

    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return UNKNOWN
    version = project.get("version") if project.get("name") == DISTRIBUTION else None
    return version if isinstance(version, str) and version else UNKNOWN


def __getattr__(name: str) -> str:
    if name == "__version__":
        return app_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
