"""Bad input on the command line: one clear line on stderr, a non-zero exit, nothing half-written."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interp_eval.cli import app

runner = CliRunner()


def _fails(args, match):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert match in err, err
    return result


def test_unknown_hookpoint(tmp_path):
    _fails(["train", "--run", str(tmp_path / "r"), "--hookpoint", "layers.99.mlp", "--tokens", "1024"], "layers.N.mlp, blocks.N.hook_mlp_out")
    assert not (tmp_path / "r" / "coders").exists()


def test_k_larger_than_latents(tmp_path):
    _fails(["train", "--run", str(tmp_path / "r"), "--k", "10000", "--expansion", "1", "--tokens", "1024"], "larger than the number of latents")


def test_unknown_coder_and_name_for_several(tmp_path):
    _fails(["train", "--run", str(tmp_path), "--coder", "jumprelu"], "--coder jumprelu")
    _fails(["train", "--run", str(tmp_path), "--coder", "sae", "--coder", "bae", "--name", "x"], "--name names one coder")


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    _fails(["train", "--run", str(tmp_path / "r"), "--dataset", str(tmp_path / "empty.txt"), "--tokens", "1024"], "split is empty")


def test_console_script_and_shim_agree():
    root = Path(__file__).parents[1]
    out = subprocess.run([sys.executable, str(root / "cli.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "train" in out.stdout
