"""Files that cannot be written and folders that are not empty: one line, a non-zero exit, nothing changed; and the
temporary files a killed process leaves are removed by the next run of a stage."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interp_eval.artifacts import RunDir
from interp_eval.cli import app

runner = CliRunner()
ROOT = os.geteuid() == 0  # root writes through permission bits; a read-only bind is what stops it


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tiny_run):
    return tiny_run


def _one_line_failure(result) -> str:
    assert result.exit_code != 0, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_export_into_a_non_empty_folder_refuses_without_overwrite(trained, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("a user's file")
    before = _tree(out)
    err = _one_line_failure(runner.invoke(app, ["export", str(out), "--run", str(trained), "--format", "sparsify"]))
    assert "not empty" in err and "--overwrite" in err
    assert _tree(out) == before


def test_export_with_overwrite_replaces_each_coder_folder_whole(trained, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["export", str(out), "--run", str(trained), "--format", "sparsify"])
    assert r.exit_code == 0, r.output
    coder = next(p for p in out.iterdir() if p.is_dir())
    stale = coder / "layers.7.mlp"  # an earlier export's hookpoint folder, which mine --coder would read
    stale.mkdir()
    (stale / "cfg.json").write_text("{}")
    r = runner.invoke(app, ["export", str(out), "--run", str(trained), "--format", "sparsify", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert not stale.exists() and (coder / "layers.3.mlp" / "cfg.json").exists()


def _read_only(path: Path):
    """Make `path` read-only for this process: permission bits, or (as root) a read-only bind mount."""
    if not ROOT:
        path.chmod(stat.S_IRUSR | stat.S_IXUSR)
        return lambda: path.chmod(stat.S_IRWXU)
    r = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if r.returncode != 0 or subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", str(path)], capture_output=True)
        pytest.skip("cannot make a folder read-only here (root without mount rights)")
    return lambda: subprocess.run(["umount", str(path)], check=True)


def test_export_into_an_unwritable_folder_is_one_line(trained, tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    undo = _read_only(out)
    try:
        for target in (out, out / "sub"):
            err = _one_line_failure(runner.invoke(app, ["export", str(target), "--run", str(trained), "--format", "sparsify"]))
            assert str(out) in err and ("writ" in err or "permission" in err.lower())
    finally:
        undo()
    assert not any(out.iterdir())


@pytest.mark.parametrize("stage", ["train", "mine", "report"])
def test_a_read_only_run_directory_is_one_line_and_unchanged(trained, tmp_path, stage):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = _tree(run)
    args = {
        "train": ["train", "--run", str(run), "--coder", "sae", "--hookpoint", "layers.3.mlp", "--k", "8", "--expansion", "2",
                  "--tokens", "4096", "--name", "another"],
        "mine": ["mine", "--run", str(run), "--tokens", "1024"],
        "report": ["report", "--run", str(run)],
    }[stage]
    undo = _read_only(run)
    try:
        err = _one_line_failure(runner.invoke(app, args))
        assert str(run) in err
    finally:
        undo()
    assert _tree(run) == before


def test_stale_temporary_files_of_a_killed_process_are_removed(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "coders" / ".sae.tmp-999999999").mkdir(parents=True)
    dead = [run / ".latents.parquet.tmp-999999999", run / "checkpoints" / ".sae.pt.tmp-999999999",
            run / "explain.parts" / "x.parquet.999999999.tmp"]
    for p in dead:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    alive = run / f".windows.parquet.tmp-{os.getpid()}"  # a live process's file is left alone
    alive.write_bytes(b"writing")
    keep = run / "notes.tmp.txt"
    keep.write_text("not ours")
    assert RunDir(run).remove_stale_tmp() == 4
    assert not any(p.exists() for p in dead) and not (run / "coders" / ".sae.tmp-999999999").exists()
    assert alive.exists() and keep.exists()
