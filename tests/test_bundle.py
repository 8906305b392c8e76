"""Air-gapped bundles: export a model folder to one .tar, import it elsewhere, all or nothing."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from safeguard_desktop.engine.bundle import INDEX, export_bundle, manifest_entry
from safeguard_desktop.engine.bundle_import import import_bundle
from safeguard_desktop.engine.errors import BundleError, OperationCancelled
from safeguard_desktop.engine.progress import Progress
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings

pytest_plugins = ["tests.server_fixtures"]

NAME = "tiny-guard:1b"
MANIFEST = "manifests/registry.ollama.ai/library/tiny-guard/1b"


def make_models_dir(root: Path, name_path: str = MANIFEST, big: int = 0) -> dict[str, bytes]:
    """An Ollama-like models folder with one model: a config blob and two layers."""
    contents = [
        b'{"model_format":"gguf","model_family":"gptoss"}',
        b"GGUF" + b"\x01" * (5000 + big),
        b"{{ .Prompt }}",
    ]
    blobs = {}
    layers = []
    for i, data in enumerate(contents):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "blobs" / digest.replace(":", "-")).write_bytes(data)
        if i:
            layers.append(
                {
                    "mediaType": "application/vnd.ollama.image.model",
                    "digest": digest,
                    "size": len(data),
                }
            )
    config = next(iter(blobs))
    manifest = {
        "schemaVersion": 2,
        "config": {"digest": config, "size": len(blobs[config])},
        "layers": layers,
    }
    path = root / name_path
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    return blobs


def snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    make_models_dir(source)
    bundle = tmp_path / "tiny.tar"
    export_bundle(source, NAME, bundle, app_version="9.9")
    return bundle


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A models folder that already holds another model (which must stay as it is)."""
    root = tmp_path / "target"
    make_models_dir(root, "manifests/registry.ollama.ai/library/other/latest", big=1)
    return root


def entries(bundle: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(bundle) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


def write_tar(path: Path, items: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_names_map_to_manifest_paths() -> None:
    assert manifest_entry("gpt-oss-safeguard:20b") == (
        "manifests/registry.ollama.ai/library/gpt-oss-safeguard/20b"
    )
    assert manifest_entry("someone/model") == "manifests/registry.ollama.ai/someone/model/latest"
    assert manifest_entry("hf.co/org/m:q4") == "manifests/hf.co/org/m/q4"
    for bad in ("../etc:x", "a/b/c/d:1", "", "x:../y"):
        with pytest.raises(BundleError):
            manifest_entry(bad)


def test_round_trip_gives_identical_files(tmp_path: Path) -> None:
    source = tmp_path / "source"
    make_models_dir(source)
    bundle = tmp_path / "out" / "tiny.tar"
    bundle.parent.mkdir()
    events: list[Progress] = []

    written = export_bundle(source, NAME, bundle, app_version="9.9", on_progress=events.append)

    assert (written.blobs, written.path) == (3, bundle)
    assert [p.name for p in bundle.parent.iterdir()] == ["tiny.tar"]  # no .part left
    members = entries(bundle)
    assert members[0][0].name == INDEX
    index = json.loads(members[0][1])
    assert index["name"] == NAME and index["manifest"] == MANIFEST and index["app_version"] == "9.9"
    assert sorted(b["size"] for b in index["blobs"]) == sorted(
        p.stat().st_size for p in (source / "blobs").iterdir()
    )
    assert events[-1].completed == written.total

    result = import_bundle(bundle, tmp_path / "fresh")

    assert snapshot(tmp_path / "fresh") == snapshot(source)
    assert (result.name, result.blobs, result.skipped) == (NAME, 3, 0)


def test_import_keeps_blobs_already_present(exported: Path, target: Path) -> None:
    before = snapshot(target)
    result = import_bundle(exported, target)
    after = snapshot(target)
    assert result.skipped >= 1  # the template blob is shared with the other model
    assert all(after[k] == v for k, v in before.items())
    assert MANIFEST in after and not any(k.endswith(".partial") for k in after)


def test_async_import_through_the_service(
    settings: Settings, exported: Path, tmp_path: Path
) -> None:
    events: list[Progress] = []

    async def go() -> str:
        async with Session.open(settings, with_history=False).models() as service:
            result = await service.import_bundle(
                exported, models_dir=tmp_path / "m", on_progress=events.append
            )
            return result.name

    assert asyncio.run(go()) == NAME
    assert (tmp_path / "m" / MANIFEST).is_file()
    assert events[-1].phase == "done"


# -- refused bundles leave the folder untouched ---------------------------------------------
def corrupt_flip_byte(bundle: Path) -> None:
    data = bytearray(bundle.read_bytes())
    offset = data.index(b"GGUF" + b"\x01" * 100) + 50
    data[offset] ^= 0xFF
    bundle.write_bytes(bytes(data))


def corrupt_truncate(bundle: Path) -> None:
    data = bundle.read_bytes()
    bundle.write_bytes(data[: data.index(b"GGUF" + b"\x01" * 100) + 1000])


def corrupt_traversal(bundle: Path) -> None:
    items = [(m.name, d) for m, d in entries(bundle)]
    write_tar(bundle, [*items[:2], ("../escaped", b"x"), *items[2:]])


def corrupt_absolute(bundle: Path) -> None:
    items = [(m.name, d) for m, d in entries(bundle)]
    write_tar(bundle, [*items, ("/tmp/absolute-evil", b"x")])


def corrupt_missing_blob(bundle: Path) -> None:
    items = [(m.name, d) for m, d in entries(bundle)]
    write_tar(bundle, items[:-1])


def corrupt_unlisted_reference(bundle: Path) -> None:
    """Index and tar agree, but the manifest references a blob that is not in the bundle."""
    items = [(m.name, d) for m, d in entries(bundle)]
    index = json.loads(items[0][1])
    manifest = json.loads(items[1][1])
    manifest["layers"].append({"digest": "sha256:" + "a" * 64, "size": 1})
    raw = json.dumps(manifest).encode()
    index["manifest_sha256"] = hashlib.sha256(raw).hexdigest()
    write_tar(bundle, [(INDEX, json.dumps(index).encode()), (items[1][0], raw), *items[2:]])


def corrupt_not_a_tar(bundle: Path) -> None:
    bundle.write_bytes(b"\x89PNG not a tar at all" * 100)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (corrupt_flip_byte, "fails its checksum"),
        (corrupt_truncate, "truncated|ends early|damaged"),
        (corrupt_traversal, "unexpected entry '../escaped'"),
        (corrupt_absolute, "unexpected entry '/tmp/absolute-evil'"),
        (corrupt_missing_blob, "is missing"),
        (corrupt_unlisted_reference, "manifest and index disagree"),
        (corrupt_not_a_tar, "not a model bundle"),
    ],
)
def test_damaged_bundle_is_refused_and_changes_nothing(
    exported: Path, target: Path, tmp_path: Path, damage: object, message: str
) -> None:
    damage(exported)  # type: ignore[operator]
    before = snapshot(target)
    with pytest.raises(BundleError, match=message):
        import_bundle(exported, target)
    assert snapshot(target) == before
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/absolute-evil").exists()


def test_damaged_bundle_into_an_empty_folder_leaves_no_folder(
    exported: Path, tmp_path: Path
) -> None:
    corrupt_flip_byte(exported)
    with pytest.raises(BundleError):
        import_bundle(exported, tmp_path / "new-models")
    assert not (tmp_path / "new-models").exists()


def test_cancelled_import_cleans_up(tmp_path: Path) -> None:
    source = tmp_path / "source"
    make_models_dir(source, big=3 * 1024 * 1024)  # several 1 MiB pieces
    bundle = tmp_path / "big.tar"
    export_bundle(source, NAME, bundle)
    cancel = threading.Event()
    with pytest.raises(OperationCancelled):
        import_bundle(bundle, tmp_path / "m", on_progress=lambda _: cancel.set(), cancel=cancel)
    assert not (tmp_path / "m").exists()


# -- export failures -------------------------------------------------------------------------
def test_export_of_a_missing_model_says_what_to_do(tmp_path: Path) -> None:
    make_models_dir(tmp_path / "m")
    with pytest.raises(BundleError, match=r"not in .* `models list`.*--models-dir"):
        export_bundle(tmp_path / "m", "absent:1b", tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()


def test_export_refuses_a_corrupt_source_blob(tmp_path: Path) -> None:
    blobs = make_models_dir(tmp_path / "m")
    victim = next(d for d, data in blobs.items() if data.startswith(b"GGUF"))
    path = tmp_path / "m" / "blobs" / victim.replace(":", "-")
    path.write_bytes(b"GGUF" + b"\x02" * (path.stat().st_size - 4))
    with pytest.raises(BundleError, match="corrupt"):
        export_bundle(tmp_path / "m", NAME, tmp_path / "x.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
