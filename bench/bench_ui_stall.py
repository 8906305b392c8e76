"""How long can a streaming review stall the Qt event loop?

Runs the app's main window (review view) against a FakeOllama that streams 4,000 reasoning
tokens at 1,000 tokens/s and measures the longest gap between ticks of a 5 ms QTimer while
the answer streams: once with the window visible (layout + painting), once hidden. Prints
both, an idle baseline measured in the same run, and the ratios. Target: under 50 ms.

    python bench/bench_ui_stall.py            # offscreen unless a display is set
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.pop("OLLAMA_HOST", None)

from safeguard_desktop import paths  # noqa: E402
from safeguard_desktop.engine.endpoint import Endpoint  # noqa: E402
from safeguard_desktop.qt import QApplication, QTimer, qasync  # noqa: E402
from safeguard_desktop.services.session import Session  # noqa: E402
from safeguard_desktop.settings import Settings  # noqa: E402
from safeguard_desktop.ui.async_utils import MainThreadGC, install_asyncgen_hooks  # noqa: E402
from safeguard_desktop.ui.main_window import MainWindow  # noqa: E402
from safeguard_desktop.ui.theme import apply_theme  # noqa: E402
from tests.fake_ollama import FakeOllama, Scenario, tokenize  # noqa: E402

TOKENS = 4000
RATE = 1000.0
TICK_MS = 5
SENTENCES = (
    'The content says "buy now" and links to a shop the reader never asked about.',
    "Rule SC2.a covers ads unrelated to the conversation they appear in.",
    "The sender has no relationship with the recipient, so it is unsolicited.",
    "Nothing suggests a scam that asks for money or credentials, so SC4 does not apply.",
)


def reasoning_text(tokens: int) -> str:
    parts: list[str] = []
    i = 0
    while len(tokenize(" ".join(parts))) < tokens:
        parts.append(SENTENCES[i % len(SENTENCES)])
        if i % 7 == 6:
            parts.append("\n\n")
        i += 1
    return "".join(tokenize(" ".join(parts))[:tokens])


class TickRecorder:
    """Timestamps of a 5 ms QTimer; the longest gap is the longest loop stall."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> None:
        self.ticks.clear()
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return [b - a for a, b in zip(self.ticks, self.ticks[1:], strict=False)]


async def one_run(
    window: MainWindow, fake: FakeOllama, text: str, visible: bool
) -> dict[str, float]:
    review = window.review
    if visible:
        window.show()
    else:
        window.hide()
    await asyncio.sleep(0.3)
    fake.script(Scenario(thinking=text, content='{"violation": 1, "rule_ids": ["SC2.a"]}'))
    review.editor.set_text("Buy now! Limited offer at example.shop")
    recorder = TickRecorder()
    recorder.start()
    started = time.perf_counter()
    review.classify()
    while review.running:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    gaps = recorder.stop()
    shown = len(review.reasoning.toPlainText())
    assert review.verdict.state == "violation", review.verdict.problem.text()
    return {
        "max_ms": max(gaps) * 1000,
        "p99_ms": statistics.quantiles(gaps, n=100)[98] * 1000,
        "ticks": len(gaps),
        "seconds": elapsed,
        "chars": shown,
    }


async def idle_run() -> float:
    recorder = TickRecorder()
    recorder.start()
    await asyncio.sleep(2.0)
    return max(recorder.stop()) * 1000


async def main(fake: FakeOllama) -> None:
    install_asyncgen_hooks(asyncio.get_running_loop())
    settings = Settings()
    ctx = Session.create(settings, Endpoint(url=fake.url, timeout=60))
    window = MainWindow(ctx, monitor_interval_ms=5000)
    window.resize(1360, 860)
    window.start()
    text = reasoning_text(TOKENS)
    idle = await idle_run()
    visible = await one_run(window, fake, text, visible=True)
    hidden = await one_run(window, fake, text, visible=False)
    fake.stop()  # before the client closes its idle connections
    await window.shutdown()
    window.deleteLater()
    platform = QApplication.platformName()
    print(
        f"UI stall while streaming {TOKENS} tokens at {RATE:.0f} tokens/s "
        f"(platform {platform}, {TICK_MS} ms timer)"
    )
    print(f"  idle baseline      longest gap {idle:7.1f} ms")
    for name, r in (("window visible", visible), ("window hidden", hidden)):
        print(
            f"  {name:<18} longest gap {r['max_ms']:7.1f} ms   p99 {r['p99_ms']:5.1f} ms   "
            f"{r['ticks']} ticks in {r['seconds']:.2f} s, {r['chars']} chars shown"
        )
    print(
        f"  ratio visible/hidden: {visible['max_ms'] / hidden['max_ms']:.2f}   "
        f"visible/idle: {visible['max_ms'] / idle:.2f}"
    )
    verdict = "OK" if visible["max_ms"] < 50 else "ABOVE TARGET"
    print(f"  target: longest stall under 50 ms with the window visible -> {verdict}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        paths.set_data_dir(tmp)
        app = QApplication(sys.argv[:1])
        apply_theme(app, follow=False)
        collector = MainThreadGC(parent=app)
        collector.start()
        with FakeOllama(token_rate=RATE) as server:
            qasync.run(main(server))
        collector.stop()
