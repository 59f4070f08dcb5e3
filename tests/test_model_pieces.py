"""Carrying a file in pieces (subject/pieces.py, bench/device_model.py): split here, gather there once
per transfer, join with every sha256 checked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from interp_eval.errors import UserError
from interp_eval.subject import pieces

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    f = tmp_path / "model.gguf"
    f.write_bytes(os.urandom(1_000_003))
    return f


def _transfer(folder: Path, dest: Path) -> Path:
    """What one device call carries: one piece folder, at a path of its own."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(folder, dest / folder.name)
    return dest


def test_pieces_gathered_one_transfer_at_a_time_rejoin_to_the_same_bytes(blob: Path, tmp_path: Path):
    folders = pieces.split(blob, tmp_path / "out", max_bytes=300_000)
    assert [f.name for f in folders] == ["1", "2", "3", "4"]
    assert all((f / pieces.MANIFEST).exists() for f in folders)
    assert max(p.stat().st_size for f in folders for p in f.iterdir() if p.name != pieces.MANIFEST) <= 300_000
    stash = tmp_path / "stash"
    left = None
    for i, f in enumerate(folders):
        left = pieces.gather(_transfer(f, tmp_path / "carried"), stash)
        assert len(left) == len(folders) - i - 1
        with pytest.raises(UserError, match="pieces missing") if left else _no_error():
            pieces.join(stash, tmp_path / "joined.gguf")
    assert left == []
    assert (tmp_path / "joined.gguf").read_bytes() == blob.read_bytes()
    # a second gather of a piece already stashed changes nothing
    assert pieces.gather(_transfer(folders[0], tmp_path / "carried"), stash) == []


class _no_error:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_torn_piece_is_refused_by_name_and_never_stashed(blob: Path, tmp_path: Path):
    folders = pieces.split(blob, tmp_path / "out", max_bytes=600_000)
    piece = next(p for p in folders[1].iterdir() if p.name != pieces.MANIFEST)
    piece.write_bytes(piece.read_bytes()[:-10])
    with pytest.raises(UserError, match=f"{piece.name}: its sha256 does not match"):
        pieces.gather(folders[1], tmp_path / "stash")
    assert not (tmp_path / "stash" / piece.name).exists()


def test_pieces_of_another_file_do_not_mix_into_a_stash(blob: Path, tmp_path: Path):
    other = tmp_path / "other.gguf"
    other.write_bytes(os.urandom(5000))
    a = pieces.split(blob, tmp_path / "a", max_bytes=600_000)
    b = pieces.split(other, tmp_path / "b", max_bytes=4000)
    pieces.gather(a[0], tmp_path / "stash")
    with pytest.raises(UserError, match="another file"):
        pieces.gather(b[0], tmp_path / "stash")


def test_a_stashed_piece_altered_later_is_caught_at_join(blob: Path, tmp_path: Path):
    stash = tmp_path / "stash"
    pieces.split(blob, tmp_path / "out", 600_000)
    assert pieces.gather(tmp_path / "out", stash) == []
    victim = sorted(p for p in stash.iterdir() if p.name != pieces.MANIFEST)[0]
    data = bytearray(victim.read_bytes())
    data[0] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(UserError, match=victim.name):
        pieces.join(stash, tmp_path / "joined")


def test_no_manifest_and_bad_sizes_are_one_line_errors(tmp_path: Path, blob: Path):
    with pytest.raises(UserError, match="no pieces manifest"):
        pieces.gather(tmp_path / "nothing", tmp_path / "stash")
    with pytest.raises(UserError, match="must be positive"):
        pieces.split(blob, tmp_path / "out", 0)
    with pytest.raises(UserError, match="no such file"):
        pieces.split(tmp_path / "absent", tmp_path / "out", 10)


def test_device_model_script_reports_missing_pieces_and_fails_only_when_asked(blob: Path, tmp_path: Path):
    folders = pieces.split(blob, tmp_path / "out", max_bytes=600_000)
    cmd = [sys.executable, str(ROOT / "bench" / "device_model.py"), "gather", "--from", str(folders[0]),
           "--stash", str(tmp_path / "stash")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and "stashed 1 of 2 pieces" in r.stdout and "model.gguf.2-of-2" in r.stdout
    r = subprocess.run(cmd + ["--require-complete"], capture_output=True, text=True)
    assert r.returncode == 1
    r = subprocess.run(cmd[:4] + [str(tmp_path / "none")] + cmd[5:], capture_output=True, text=True)
    assert r.returncode == 0  # nothing new carried: the stash is as it was
    r = subprocess.run(cmd[:4] + [str(tmp_path / "none")] + cmd[5:6] + [str(tmp_path / "empty")], capture_output=True,
                       text=True)
    assert r.returncode == 1 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_packaged_gguf_carried_in_pieces_converts_to_the_same_weights(tmp_path: Path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from interp_eval.subject.model import packaged_gguf, packaged_model_dir

    folders = pieces.split(packaged_gguf(), tmp_path / "out", max_bytes=34 * 2**20)
    assert len(folders) == 3
    env = {**os.environ, "INTERP_EVAL_CACHE": str(tmp_path / "cache")}
    for f in folders:
        r = subprocess.run([sys.executable, str(ROOT / "bench" / "device_model.py"), "gather", "--from", str(f),
                            "--stash", str(tmp_path / "stash")], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
    assert "converted to" in r.stdout
    ours = load_file(next((tmp_path / "cache" / "models").glob("*/*.safetensors")))
    ref = load_file(next(packaged_model_dir().glob("*.safetensors")))
    assert ours.keys() == ref.keys()
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
