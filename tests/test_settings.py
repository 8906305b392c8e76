"""Settings registry, host resolution and the keyring wrapper."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import keyring
import pytest

from safeguard_desktop import secrets
from safeguard_desktop.engine.endpoint import (
    Endpoint,
    is_loopback,
    normalize_host,
    resolve_host,
    token_warning,
)
from safeguard_desktop.settings import REGISTRY, Settings, SettingsError
from tests.keyrings import MemoryKeyring


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("", "http://127.0.0.1:11434"),
        ("127.0.0.1:11500", "http://127.0.0.1:11500"),
        (":5000", "http://127.0.0.1:5000"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("https://gpu.example.org", "https://gpu.example.org:443"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_host_values_read_like_ollama(raw: str, url: str) -> None:
    assert normalize_host(raw) == url


def test_host_precedence_cli_then_env_then_setting() -> None:
    assert resolve_host("h1:1", "h2:2", "h3:3") == "http://h1:1"
    assert resolve_host(None, "h2:2", "h3:3") == "http://h2:2"
    assert resolve_host(None, "", "h3:3") == "http://h3:3"


def test_token_over_plain_http_to_remote_host_warns() -> None:
    assert token_warning("http://10.1.2.3:11434", "tok") is not None
    assert token_warning("https://10.1.2.3:443", "tok") is None
    assert token_warning("http://127.0.0.1:11434", "tok") is None
    assert token_warning("http://10.1.2.3:11434", None) is None
    assert is_loopback("http://localhost:1") and not is_loopback("http://example.org:1")
    assert Endpoint("http://x:1", token="abc").headers() == {"Authorization": "Bearer abc"}
    assert "abc" not in repr(Endpoint("http://x:1", token="abc"))


def test_settings_round_trip_private_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    s = Settings(path)
    assert s["num_ctx"] >= 8192 and s["effort"] == "medium"
    s.set("num_ctx", "32768")
    s.set("manage_server", "off")
    s.save()
    again = Settings(path)
    assert again["num_ctx"] == 32768 and again["manage_server"] is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_bad_values_refused_with_a_reason(tmp_path: Path) -> None:
    s = Settings(tmp_path / "s.json")
    with pytest.raises(SettingsError, match="low, medium, high"):
        s.set("effort", "max")
    with pytest.raises(SettingsError, match="at least"):
        s.set("num_ctx", 100)
    with pytest.raises(SettingsError, match="keyring"):
        s.set("remote_token", "secret")


def test_broken_settings_file_keeps_defaults_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text("{not json", encoding="utf-8")
    s = Settings(path)
    assert s["model"] == "gpt-oss-safeguard:20b"
    assert s.load_problem and str(path) in s.load_problem


def test_token_never_written_to_settings(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"remote_token": "leak", "model": "x"}), encoding="utf-8")
    s = Settings(path)
    assert s["remote_token"] == "" and s["model"] == "x"
    s.save()
    assert "leak" not in path.read_text(encoding="utf-8")
    assert all(setting.help for setting in REGISTRY)


def test_keyring_wrapper_stores_and_refuses_without_backend() -> None:
    previous = keyring.get_keyring()
    try:
        # conftest selects the null backend: no keyring available
        with pytest.raises(secrets.SecretStoreUnavailable, match="No system keyring"):
            secrets.set_token("http://h:1", "t")
        mem = MemoryKeyring()
        keyring.set_keyring(mem)
        secrets.set_token("https://h:443", "tok")
        assert secrets.get_token("https://h:443") == "tok"
        secrets.delete_token("https://h:443")
        assert secrets.get_token("https://h:443") is None
    finally:
        keyring.set_keyring(previous)


def test_wrong_values_in_the_file_are_named_not_dropped_silently(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"model": ["a"], "num_ctx": 10, "effort": "high"}), "utf-8")
    s = Settings(path)
    assert s["effort"] == "high" and s["model"] == "gpt-oss-safeguard:20b"
    assert s.load_problem and "model" in s.load_problem and "num_ctx" in s.load_problem


def test_saving_over_an_unreadable_file_keeps_a_copy(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text("{half written", encoding="utf-8")
    s = Settings(path)
    s.set("effort", "low")
    s.save()
    assert (tmp_path / "settings.json.broken").read_text(encoding="utf-8") == "{half written"
    assert Settings(path)["effort"] == "low"
