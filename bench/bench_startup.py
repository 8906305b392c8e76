"""Cold start to the main window shown, and idle memory, against a bare PySide6 QMainWindow.

Each repeat starts two fresh processes, one after the other: `safeguard-desktop` (the GUI,
with `--data-dir` a temporary folder whose history already holds reviews, attached to a fake
Ollama running in its own process, `python -m tests.fake_ollama serve`, as a user's Ollama
is), and a bare script that shows an empty QMainWindow of the app's size. Both run the same
few lines first: a hook that, when the child shows a QMainWindow, puts an event filter on
its window; the window's first expose event is "shown". (An application-wide event filter,
as this bench used before, sees every event of every object in Python: about 290 before
the app's first frame against 30 for the bare window, some 20 ms that no user pays;
`--event-filter` measures that way.) Nothing of Qt is loaded before the child asks for it,
so each imports in its own order. The bench measures from just before it spawns the process
to the child's "shown" line on its stdout (the interpreter's own start counts, for both).
For the app it also reports when its content editor first has the focus ("ready": the
workspace, built behind the shown frame, takes typing). Then the child stays idle for
`--settle` seconds (the app's start-up work runs meanwhile: health check, token lookup),
reports its resident memory (VmRSS) and exits.

One unmeasured warm-up run of each comes first: it writes the bytecode caches (into a
temporary PYTHONPYCACHEPREFIX, as a pip install has them compiled) and warms the file cache.
The keyring is left to its own backend detection, as on a user's machine.

Ratios app / bare per repeat, then min / median / max over the repeats; "met" is judged on
the median. Targets: start <= 1.5x, memory <= 2x.

    python3 bench/bench_startup.py [--repeats 3] [--settle 3] [--reviews 200] [--event-filter]

Offscreen unless a display is set (QT_QPA_PLATFORM=offscreen: layout and painting into a
backing store still happen, nothing reaches a screen).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fake_process import REPO, LoadMeter, child_env, fake_ollama, spread, stop_process

START_TARGET = 1.5
MEMORY_TARGET = 2.0
CHILD_SECONDS = 120.0  # bound on one child (a hang, not a timing claim)

# What both children run first: a hook that, once PySide6.QtWidgets is imported (by the
# child itself, in its own order), watches the window of a QMainWindow from its show() on
# with an event filter for its first expose ("shown"; `--event-filter`: an application-wide
# filter, which sees every event of every object), then, after the settle time, reports the
# resident memory. Nothing of Qt is imported before the child asks for it:
# PySide6 makes every module imported after it slower (it reads each one's source), so the
# order is the child's own.
PRELUDE = """
import importlib.abc, importlib.util, os, sys

SETTLE_MS = int(sys.argv[1])
EVENT_FILTER = os.environ.get("BENCH_STARTUP_EVENT_FILTER") == "1"


def report(count):
    with open("/proc/self/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    print(f"rss {rss} events {count}", flush=True)
    os._exit(0)


def watched(QtWidgets):
    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtGui import QWindow

    def main_window_exposed():
        for widget in QtWidgets.QApplication.topLevelWidgets():
            if isinstance(widget, QtWidgets.QMainWindow):
                handle = widget.windowHandle()
                if handle is not None and handle.isExposed():
                    return True
        return False

    class Watch(QObject):
        events = 0  # events the filter saw before the window was shown
        done = False

        def eventFilter(self, obj, event):
            self.events += 1
            if (not self.done and event.type() == QEvent.Type.Expose
                    and isinstance(obj, QWindow) and main_window_exposed()):
                self.done = True
                obj.removeEventFilter(self)
                QtWidgets.QApplication.instance().removeEventFilter(self)
                print("shown", flush=True)
                QTimer.singleShot(SETTLE_MS, lambda: report(self.events))
            return False

    watch = Watch()
    show = QtWidgets.QWidget.show

    def watched_show(widget):  # a QMainWindow's window is watched from its show() on
        show(widget)
        handle = widget.windowHandle() if isinstance(widget, QtWidgets.QMainWindow) else None
        if handle is not None and not EVENT_FILTER:
            handle.installEventFilter(watch)

    QtWidgets.QWidget.show = watched_show

    editors = (QtWidgets.QPlainTextEdit, QtWidgets.QTextEdit)

    def focus_changed(old, new):
        if isinstance(new, editors):  # the app's content editor takes the keys: "ready"
            print("ready", flush=True)
            QtWidgets.QApplication.instance().focusChanged.disconnect(focus_changed)

    class QApplication(QtWidgets.QApplication):
        def __init__(self, *args):
            super().__init__(*args)
            if EVENT_FILTER:  # every event of the application, each seen in Python
                self.installEventFilter(watch)
            self.focusChanged.connect(focus_changed)

    QtWidgets.QApplication = QApplication


class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "PySide6.QtWidgets":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        inner = spec.loader

        class Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return inner.create_module(spec)

            def exec_module(self, module):
                inner.exec_module(module)
                watched(module)

        spec.loader = Loader()
        return spec


sys.meta_path.insert(0, Hook())
"""
BARE = (
    PRELUDE
    + """
from PySide6.QtWidgets import QApplication, QMainWindow

app = QApplication(sys.argv[:1])
window = QMainWindow()
window.resize(1360, 860)  # the app's size: the same backing store
window.show()
app.exec()
"""
)
APP = (
    PRELUDE
    + """
from safeguard_desktop.launch import main  # the `safeguard-desktop` command's code
sys.exit(main(["--data-dir", sys.argv[2], "--host", sys.argv[3]]))
"""
)


@dataclass(frozen=True)
class Run:
    shown_s: float
    rss_mib: float
    events: int
    ready_s: float | None = None  # the content editor has the focus (the app only)


def run_child(code: str, args: list[str], env: dict[str, str], log: Path) -> Run:
    """One child process; seconds from spawn to its "shown" line, then its idle memory."""
    with log.open("ab") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        assert proc.stdout is not None
        shown: float | None = None
        ready: float | None = None
        rss = events = 0
        deadline = time.monotonic() + CHILD_SECONDS
        try:
            for raw in proc.stdout:
                line = raw.decode().split()
                if line[:1] == ["shown"] and shown is None:
                    shown = time.perf_counter() - t0
                elif line[:1] == ["ready"] and ready is None:
                    ready = time.perf_counter() - t0
                elif line[:1] == ["rss"]:
                    rss, events = int(line[1]), int(line[3])
                    break
                if time.monotonic() > deadline:
                    break
            proc.wait(timeout=CHILD_SECONDS)
        finally:
            stop_process(proc)
    if shown is None or not rss:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"the child did not report (exit {proc.returncode}):\n{tail}")
    return Run(shown, rss / 1024, events, ready)


async def seed_history(data: Path, url: str, count: int) -> None:
    """`count` reviews in the history of `data`, made the app's way against the fake."""
    from safeguard_desktop import paths
    from safeguard_desktop.core.content import Content
    from safeguard_desktop.core.policy import resolve_policy
    from safeguard_desktop.engine.endpoint import Endpoint
    from safeguard_desktop.services.history_service import HistoryService
    from safeguard_desktop.services.session import Session
    from safeguard_desktop.settings import Settings

    paths.set_data_dir(data)
    history, problem = HistoryService.open_default()
    assert history is not None, problem
    session = Session.create(Settings(), Endpoint(url), history)
    policy = resolve_policy("harassment")
    reviewer = session.reviewer(session.review_options(source="gui"))
    lines = (
        "nobody at school wants you around, just disappear",
        "the meeting moved to Thursday at ten, bring the slides",
        "you are a pathetic loser and everyone laughs at you",
        "thanks for the recipe, the lemon cake came out great",
    )
    try:
        for i in range(count):
            text = f"{lines[i % len(lines)]} (report {i + 1})"
            await reviewer.review(policy, Content(kind="message", text=text))
    finally:
        await session.aclose()
        paths.set_data_dir(None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--settle", type=float, default=3.0, help="idle seconds before the RSS")
    ap.add_argument("--reviews", type=int, default=200, help="reviews in the history")
    ap.add_argument(
        "--event-filter",
        action="store_true",
        help="watch for the first frame with an application event filter (costs the app ~20 ms)",
    )
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    meter = LoadMeter()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        fake_env = {"FAKE_OLLAMA_TOKEN_RATE": "100000"}
        with fake_ollama(root / "fake-ollama.log", fake_env) as (url, _proc):
            asyncio.run(seed_history(data, url, args.reviews))
            # The host as the Settings or --host give it, not OLLAMA_HOST: with OLLAMA_HOST set
            # the app leaves the review client to the first review (app.warm_up), and most
            # users have none, so that would measure less than they get.
            env = child_env(root / "pycache")
            env["BENCH_STARTUP_EVENT_FILTER"] = "1" if args.event_filter else "0"
            settle = [str(int(args.settle * 1000))]
            log = root / "children.log"
            run_child(BARE, settle, env, log)  # warm-up: bytecode and file caches
            run_child(APP, [*settle, str(data), url], env, log)
            bare: list[Run] = []
            app: list[Run] = []
            for _ in range(args.repeats):
                bare.append(run_child(BARE, settle, env, log))
                app.append(run_child(APP, [*settle, str(data), url], env, log))
    start_ratio = [a.shown_s / b.shown_s for a, b in zip(app, bare, strict=True)]
    mem_ratio = [a.rss_mib / b.rss_mib for a, b in zip(app, bare, strict=True)]
    print(
        f"start-up: {args.repeats} repeats (min / median / max), history of {args.reviews} "
        f"reviews, fake Ollama in its own process, idle {args.settle:g} s before the memory"
    )
    print(f"  bare QMainWindow  shown s  {spread([r.shown_s for r in bare])}"
          f"   idle RSS MiB {spread([r.rss_mib for r in bare], '.1f')}")  # fmt: skip
    print(f"  safeguard-desktop shown s  {spread([r.shown_s for r in app])}"
          f"   idle RSS MiB {spread([r.rss_mib for r in app], '.1f')}")  # fmt: skip
    ready = [r.ready_s for r in app if r.ready_s is not None]
    if ready:
        print(f"  safeguard-desktop ready s  {spread(ready)}   (the whole workspace built, the "
              f"content editor focused: typing goes in)")  # fmt: skip
    for label, ratios, target in (
        ("start ratio app/bare: ", start_ratio, START_TARGET),
        ("memory ratio app/bare:", mem_ratio, MEMORY_TARGET),
    ):
        verdict = "met" if statistics.median(ratios) <= target else "NOT met"
        print(f"  {label} {spread(ratios, '.2f')}   (target <= {target}) {verdict} (median)")
    events = [r.events for r in app]
    bare_events = min(r.events for r in bare)
    how = "events the application filter saw" if args.event_filter else "events of the window"
    print(f"  ({how} before the window was shown: app {min(events)}-{max(events)}, "
          f"bare {bare_events}; the same watch in both)")  # fmt: skip
    print(f"  {meter.report()}")


if __name__ == "__main__":
    main()
