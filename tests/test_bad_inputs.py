"""No input crashes a review: every bad input is a usage error (exit 2) in one line.

The corpus lives in tests/corpus/: `content/` holds files to import (each must be refused),
`bundles/` holds model-bundle indexes (each is packed as bundle.json of a .tar and must be
refused). Inputs too big to keep in git (JSON nested 100,000 deep, numbers of 5,000 digits)
and named pipes are made here. A file dropped into a corpus folder is run against every
importer and the CLI without further code; so is every importer listed in
`importers.EXTENSIONS`.

Stored data is compared before and after: the history (one review made beforehand) and the
models folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main
from safeguard_desktop.core.content import KINDS, Content, ContentError
from safeguard_desktop.core.importers import EXTENSIONS, import_file, parse_bytes
from tests.fake_ollama import FakeOllama, Scenario

CORPUS = Path(__file__).parent / "corpus"
DEEP = 100_000
DIGITS = 5_000
USAGE = 2


# --- the corpus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One bad input: `make(folder)` writes it and returns its path."""

    name: str
    make: Callable[[Path], Path]
    says: str  # what the one-line message must mention

    def __str__(self) -> str:
        return self.name


def _stored(path: Path) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        target = folder / path.name
        shutil.copyfile(path, target)
        return target

    return make


def _written(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        target = folder / name
        target.write_bytes(data)
        return target

    return make


def _fifo(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        target = folder / name
        os.mkfifo(target)
        return target

    return make


def _says(name: str) -> str:
    return "lone surrogate" if "surrogate" in name else "impossible size"


DEEP_LIST = b"[" * DEEP + b"]" * DEEP
DEEP_OBJECT = b'{"a": ' * DEEP + b"1" + b"}" * DEEP
LONG_INT = b"9" * DIGITS

CONTENT = [
    *(
        Item(p.name, _stored(p), "lone surrogate" if "key" not in p.name else "no usable field")
        for p in sorted((CORPUS / "content").iterdir())
    ),
    Item("deep-list.json", _written("deep-list.json", DEEP_LIST), "too deeply"),
    Item("deep-object.json", _written("deep-object.json", DEEP_OBJECT), "too deeply"),
    Item("deep-line.jsonl", _written("deep-line.jsonl", b'{"text": "ok"}\n' + DEEP_LIST), "line 2"),
    Item(
        "long-int.json",
        _written("long-int.json", b'{"text": "fine", "id": ' + LONG_INT + b"}"),
        "5,000 digits",
    ),
    Item(
        "long-negative-int.json", _written("long-negative.json", b"[-" + LONG_INT + b"]"), "5,000"
    ),
    Item(
        "long-int.jsonl",
        _written("long-int.jsonl", b'{"text": "fine"}\n{"text": "x", "judged": ' + LONG_INT + b"}"),
        "digits",
    ),
    Item("fifo.json", _fifo("fifo.json"), "not a regular file"),
]

# Pasted as a chat (the JSON reading of pasted text) and on the command line.
TEXTS = {
    "lone-surrogate": ("message", "Buy now \ud800 at example.test", "lone surrogate"),
    "half-an-emoji": ("message", "nice \ud83d", "lone surrogate"),
    "undecodable-bytes": ("message", os.fsdecode(b"caf\xe9 \xff"), "not UTF-8 (\\xe9"),
    "chat-escape": ("chat", '[{"role": "user", "content": "hi \\udfff"}]', "lone surrogate"),
    "chat-deep": ("chat", "[" * DEEP, "too deeply"),
    "chat-deep-object": ("chat", DEEP_OBJECT.decode(), "too deeply"),
    "chat-long-int": (
        "chat",
        '{"messages": [{"role": "user", "content": "hi"}], "judged": ' + LONG_INT.decode() + "}",
        "5,000 digits",
    ),
    "completion-surrogate": ("completion", "Prompt: hi\nCompletion: \udbff", "lone surrogate"),
}


def _index_item(path: Path) -> Item:
    return Item(path.name, _bundle(path.read_bytes()), _says(path.name))


def _bundle(index: bytes, *members: tuple[str, bytes]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        target = folder / "model.tar"
        with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in (("bundle.json", index), *members):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return target

    return make


MANIFEST_PATH = "manifests/registry.ollama.ai/library/tiny/1b"
BAD_MANIFEST = b'{"config": {"digest": "sha256:' + b"b" * 64 + b'", "size": 1e309}, "layers": []}'
MANIFEST_INDEX = json.dumps(
    {
        "format": "safeguard-desktop-model-bundle",
        "format_version": 1,
        "name": "tiny:1b",
        "manifest": MANIFEST_PATH,
        "manifest_sha256": hashlib.sha256(BAD_MANIFEST).hexdigest(),
        "blobs": [],
    }
).encode()

BUNDLES = [
    *(_index_item(p) for p in sorted((CORPUS / "bundles").iterdir())),
    Item("index-deep", _bundle(DEEP_LIST), "not valid JSON"),
    Item("index-long-int", _bundle(b'{"format": ' + LONG_INT + b"}"), "not valid JSON"),
    Item(
        "manifest-size-1e309",
        _bundle(MANIFEST_INDEX, (MANIFEST_PATH, BAD_MANIFEST)),
        "impossible size Infinity; make the bundle again",
    ),
    Item("fifo", _fifo("model.tar"), "not a regular file"),
]


# --- running the CLI --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _reset_data_dir() -> Iterator[None]:
    yield
    paths.set_data_dir(None)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(token_rate=50_000) as server:
        yield server


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, fake: FakeOllama) -> Path:
    """A data folder whose history holds one review."""
    data = tmp_path_factory.mktemp("seeded") / "data"
    argv = ["--data-dir", str(data), *classify_argv(fake, "--text", "Hello, see you tomorrow")]
    code = main(argv)
    paths.set_data_dir(None)
    assert code == 0
    return data


@pytest.fixture
def data(tmp_path: Path, seeded: Path) -> Path:
    folder = tmp_path / "data"
    shutil.copytree(seeded, folder)
    return folder


def history_rows(data: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the history, read-only."""
    uri = f"file:{data / 'history.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f'SELECT * FROM "{t}"').fetchall() for t in sorted(tables)}


def run_cli(capsys: pytest.CaptureFixture[str], data: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(data), *argv])
    paths.set_data_dir(None)
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code: int, out: str, err: str, says: str) -> None:
    """Exit 2 and one line on stderr that says what is wrong (never "unexpected error")."""
    lines = err.strip().splitlines()
    assert code == USAGE, err
    assert len(lines) == 1, err
    assert lines[0].startswith("safeguard-desktop: ")
    assert "unexpected error" not in err and "Traceback" not in err
    assert says in lines[0], lines[0]
    assert out == ""


def classify_argv(fake: FakeOllama, *extra: str) -> list[str]:
    return ["classify", "--policy", "spam-scams", "--host", fake.url, *extra]


# --- every importer meets every item --------------------------------------------------------


def _storable(item: Content) -> None:
    """What the history writes: every text field encodes as UTF-8."""
    json.dumps(item.to_dict(), ensure_ascii=False).encode("utf-8")
    item.render().encode("utf-8")


@pytest.mark.parametrize("ext", EXTENSIONS)
@pytest.mark.parametrize("item", CONTENT, ids=str)
def test_every_importer_refuses_or_reads_storable_text(
    tmp_path: Path, item: Item, ext: str
) -> None:
    """Whatever the extension, an item is either refused in one line or read as storable text."""
    path = item.make(tmp_path)
    data = path.read_bytes() if path.is_file() else None
    for kind in (None, *KINDS):
        try:
            if data is None:
                items = import_file(path, kind=kind)
            else:
                items = parse_bytes(data, f"item{ext}", kind=kind)
        except ContentError as exc:
            message = str(exc)
            assert message and "\n" not in message
            message.encode("utf-8")  # printable as is, even when it quotes the input
        else:
            for content in items:
                _storable(content)


@pytest.mark.parametrize("item", CONTENT, ids=str)
def test_import_file_refuses_each_item_in_one_line(tmp_path: Path, item: Item) -> None:
    with pytest.raises(ContentError) as caught:
        import_file(item.make(tmp_path))
    message = str(caught.value)
    assert "\n" not in message and item.says in message


# --- the CLI ------------------------------------------------------------------------------------


@pytest.mark.parametrize("item", CONTENT, ids=str)
def test_classify_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake: FakeOllama, data: Path, item: Item
) -> None:
    before = history_rows(data)
    chats = len(fake.requests_to("/api/chat"))
    code, out, err = run_cli(capsys, data, *classify_argv(fake, "--file", str(item.make(tmp_path))))
    assert_usage_error(code, out, err, item.says)
    assert history_rows(data) == before
    assert len(fake.requests_to("/api/chat")) == chats  # nothing reached the model


@pytest.mark.parametrize("item", [i for i in CONTENT if "fifo" not in i.name], ids=str)
def test_classify_file_item_pasted_as_a_chat_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake: FakeOllama, data: Path, item: Item
) -> None:
    """The same bytes through `--text --kind chat`, the JSON reading of pasted text."""
    text = item.make(tmp_path).read_text(encoding="utf-8")
    before = history_rows(data)
    code, out, err = run_cli(capsys, data, *classify_argv(fake, "--kind", "chat", "--text", text))
    assert_usage_error(code, out, err, "")
    assert history_rows(data) == before


@pytest.mark.parametrize(("kind", "text", "says"), TEXTS.values(), ids=list(TEXTS))
def test_classify_text_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
    fake: FakeOllama,
    data: Path,
    kind: str,
    text: str,
    says: str,
) -> None:
    before = history_rows(data)
    code, out, err = run_cli(capsys, data, *classify_argv(fake, "--kind", kind, "--text", text))
    assert_usage_error(code, out, err, says)
    assert history_rows(data) == before


def test_undecodable_bytes_in_text_name_the_byte_and_the_way_out(
    capsys: pytest.CaptureFixture[str], fake: FakeOllama, data: Path
) -> None:
    text = os.fsdecode(b"Buy \xff now")  # what Python makes of a raw byte in argv
    code, out, err = run_cli(capsys, data, *classify_argv(fake, "--text", text))
    assert (code, out) == (USAGE, "")
    assert err == (
        "safeguard-desktop: --text holds bytes that are not UTF-8 (\\xff at character 5); "
        "set the terminal to UTF-8, or save the content to a file and use --file.\n"
    )


def test_undecodable_file_name_is_read_and_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake: FakeOllama, data: Path
) -> None:
    """A file whose name is not UTF-8 is still a file: it imports, its name is shown escaped."""
    folder = os.fsencode(tmp_path)
    with open(folder + b"/spam \xff.txt", "wb") as fh:
        fh.write(b"Buy now at example.test, limited offer!")
    name = os.fsdecode(folder + b"/spam \xff.txt")
    code, out, err = run_cli(capsys, data, *classify_argv(fake, "--file", name, "--json"))
    assert code == 0, err
    result = json.loads(out)
    assert result["verdict"]["violation"] is True
    assert result["review_id"] == 2


@pytest.mark.parametrize("action", ["show", "pull", "rm", "warm", "unload"])
def test_undecodable_model_name_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], fake: FakeOllama, data: Path, action: str
) -> None:
    name = os.fsdecode(b"gpt-oss\xff")
    with pytest.raises(SystemExit) as caught:
        main(["--data-dir", str(data), "models", action, name, "--host", fake.url])
    paths.set_data_dir(None)
    err = capsys.readouterr().err
    assert caught.value.code == USAGE
    assert "'gpt-oss\\udcff' is not UTF-8 text" in err.splitlines()[-1]


@pytest.mark.parametrize("item", BUNDLES, ids=str)
def test_models_import_bundle_refuses_each_item(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: Path, item: Item
) -> None:
    models = tmp_path / "models"
    (models / "blobs").mkdir(parents=True)
    (models / "blobs" / "sha256-kept").write_bytes(b"an installed blob")
    before = sorted(str(p.relative_to(models)) for p in models.rglob("*"))
    bundle = item.make(tmp_path)
    code, out, err = run_cli(
        capsys, data, "models", "import-bundle", str(bundle), "--models-dir", str(models)
    )
    assert_usage_error(code, out, err, item.says)
    assert sorted(str(p.relative_to(models)) for p in models.rglob("*")) == before


def test_models_import_refuses_a_named_pipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake: FakeOllama, data: Path
) -> None:
    """Opening a FIFO waits for a writer forever: it is refused before it is opened."""
    pipe = _fifo("model.gguf")(tmp_path)
    code, out, err = run_cli(
        capsys, data, "models", "import", str(pipe), "--name", "mine:1b", "--host", fake.url
    )
    assert_usage_error(code, out, err, "not a regular file (a pipe, device or socket)")
    assert not fake.requests_to("/api/create")


def test_models_export_refuses_a_manifest_with_an_impossible_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    models = tmp_path / "models"
    (models / MANIFEST_PATH).parent.mkdir(parents=True)
    (models / MANIFEST_PATH).write_bytes(BAD_MANIFEST)
    target = tmp_path / "out.tar"
    code, out, err = run_cli(
        capsys, data, "models", "export", "tiny:1b", str(target), "--models-dir", str(models)
    )
    assert_usage_error(code, out, err, "impossible size Infinity; re-pull the model")
    assert not target.exists() and not (tmp_path / "out.tar.part").exists()


# --- model output -------------------------------------------------------------------------------


def test_escaped_lone_surrogate_in_the_answer_is_stored_and_printed(
    capsys: pytest.CaptureFixture[str], fake: FakeOllama, data: Path
) -> None:
    """The model writes "\\ud800" inside its JSON: the verdict keeps U+FFFD in its place."""
    fake.script(
        Scenario(
            thinking="Selling at a link.",
            content='{"violation": 1, "rationale": "sells \\ud800 at a link"}',
        )
    )
    code, out, err = run_cli(capsys, data, *classify_argv(fake, "--text", "Buy now"))
    assert code == 0, err
    assert "Rationale: sells \ufffd at a link" in out
    assert "Saved as review #2." in out
    code, out, err = run_cli(capsys, data, "history", "show", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["verdict"]["rationale"] == "sells \ufffd at a link"


def test_lone_surrogates_streamed_by_the_server_are_printed_escaped(
    capsys: pytest.CaptureFixture[str], fake: FakeOllama, data: Path
) -> None:
    fake.script(Scenario(thinking="odd \udc00 thought", content="1"))
    code, out, err = run_cli(capsys, data, *classify_argv(fake, "--text", "Buy", "--no-history"))
    assert code == 0, err
    assert "odd \ufffd thought" in out  # replaced where the stream is read
    assert "VIOLATION" in out


def test_lone_surrogates_streamed_by_the_server_do_not_stop_the_review(
    capsys: pytest.CaptureFixture[str], fake: FakeOllama, data: Path
) -> None:
    fake.script(Scenario(thinking="odd \udc00 thought", content='{"violation": 1} \ud800'))
    code, out, err = run_cli(capsys, data, *classify_argv(fake, "--text", "Buy"))
    assert "unexpected error" not in err
    assert code == 0, err
    assert "VIOLATION" in out
