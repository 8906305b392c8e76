"""The Review tab's effort follows the same rule as the CLI: chosen, else policy, else setting."""

from __future__ import annotations

from pathlib import Path

from safeguard_desktop import paths
from safeguard_desktop.settings import Settings
from tests.fake_ollama import FakeOllama
from tests.gui_fixtures import *  # noqa: F403

POLICY = """---
id: {id}
{effort}---
# Pets

## Violates (1)
- PT2.a Insults aimed at a pet.

## Does not violate (0)
- PT0.a Anything else.
"""


def write_policy(name: str, effort: str | None) -> Path:
    path = paths.user_policies_dir() / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = f"effort: {effort}\n" if effort else ""
    path.write_text(POLICY.format(id=name, effort=line), encoding="utf-8")
    return path


def test_effort_is_the_policys_else_the_settings_unless_chosen(
    qtbot, make_main_window, fake_ollama: FakeOllama, gui_settings: Settings
) -> None:
    gui_settings.set("effort", "low")
    write_policy("pets-high", "high")
    write_policy("pets-plain", None)
    win = make_main_window(fake_ollama.url)
    review = win.review
    picker = review.effort_picker

    assert review.policy_panel.select("pets-high")
    assert picker.currentText() == "high"
    policy = review.policy_panel.current_policy()
    assert review.options(policy).effort_for(policy) == "high"

    assert review.policy_panel.select("pets-plain")
    assert picker.currentText() == "low"  # not the previous policy's "high"
    plain = review.policy_panel.current_policy()
    assert review.options(plain).effort is None  # nothing chosen: the session decides
    assert review.options(plain).effort_for(plain) == "low"

    assert review.cycle_effort() == "medium"  # Ctrl+E: a choice for this review
    assert review.options(plain).effort_for(plain) == "medium"

    assert review.policy_panel.select("pets-high")
    assert picker.currentText() == "high"  # the choice does not carry to another policy
