"""Safeguard Desktop: review content with gpt-oss-safeguard on a local Ollama server."""

__version__ = "0.1.0"
