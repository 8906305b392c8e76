"""`python -m tests.fake_ollama serve` runs the fake Ollama server in the foreground."""

from __future__ import annotations

import sys

from .standalone import main

if __name__ == "__main__":
    sys.exit(main())
