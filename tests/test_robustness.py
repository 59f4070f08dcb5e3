"""The failure scenarios of issue 13, driven through the CLI where a user would meet them.

Each section builds one kind of failure (a re-run stopped half-way, bad input, a crash between coders, ...)
on the real packaged model and corpus at tiny size, then checks what a user sees (one line on stderr and
exit code 2, naming what to re-run) and that nothing finished was lost or changed (file hashes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from interp_eval.artifacts import RunDir
from interp_eval.catalog import WINDOWS
from interp_eval.cli import app
from interp_eval.errors import UserError
from interp_eval.explain.stage import ExplainConfig, run_explain_stage
from interp_eval.mining import MineConfig, run_mine_stage
from interp_eval.scoring.stage import read_explanations
from mining_helpers import MINE_KW, make_run_coders

runner = CliRunner()
EXPLAIN = ["explain", "--explainer", "token-table"]  # no LLM: the refusals come before any explainer runs
SCORE = ["score", "--scorer", "detection"]


def _cli(args: list, run: Path):
    return runner.invoke(app, [str(a) for a in [args[0], "--run", run, *args[1:]]])


def _ok(args: list, run: Path):
    result = _cli(args, run)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _refused(args: list, run: Path, match: str) -> str:
    """The command stops with exit code 2 and one line on stderr containing `match`."""
    result = _cli(args, run)
    err = result.stderr.strip()
    assert result.exit_code == 2, (result.output, err)
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert match in err, err
    return err


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _manifest(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "manifest.jsonl").read_text().splitlines()]


def _stop_after(n: int):
    def hook(done: int) -> None:
        if done == n:
            raise KeyboardInterrupt
    return hook


RE_MINE = {**MINE_KW, "seed": 4}  # another mining config of the same run


@pytest.fixture(scope="module")
def mined_src(tmp_path_factory, subject) -> Path:
    """A run with two coders, mined once (tests copy it)."""
    run = tmp_path_factory.mktemp("robust") / "run"
    make_run_coders(run)
    run_mine_stage(run, MineConfig(**MINE_KW), subject=subject)
    return run


@pytest.fixture
def mined(tmp_path, mined_src) -> Path:
    run = tmp_path / "run"
    shutil.copytree(mined_src, run)  # copy2 keeps the coders' mtimes, so their fingerprints (and the config hash) hold
    return run


# -- stale or mixed artifacts: every reader checks which run wrote the mining files (defect 1) -------------------
def test_an_unfinished_remine_makes_explain_and_score_refuse(mined, subject):
    _ok(EXPLAIN, mined)
    with pytest.raises(KeyboardInterrupt):
        run_mine_stage(mined, MineConfig(**RE_MINE), subject=subject, on_batch=_stop_after(1))
    for args in (EXPLAIN, SCORE):
        _refused(args, mined, "re-run `interp-eval mine`")
    assert not run_mine_stage(mined, MineConfig(**RE_MINE), subject=subject)["skipped"]
    _ok(EXPLAIN, mined)


def test_a_mixed_set_of_mining_files_is_refused(mined, subject):
    """A crash between the renames of a re-mine: its new contexts.parquet beside the old windows and latents."""
    old = {name: (mined / name).read_bytes() for name in ("windows.parquet", "latents.parquet")}
    run_mine_stage(mined, MineConfig(**RE_MINE), subject=subject)
    for name, blob in old.items():
        (mined / name).write_bytes(blob)
    lines = (mined / "manifest.jsonl").read_text().splitlines()
    (mined / "manifest.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # it crashed before its manifest line
    for args in (EXPLAIN, SCORE):
        _refused(args, mined, "re-run `interp-eval mine`")
    assert not run_mine_stage(mined, MineConfig(**RE_MINE), subject=subject)["skipped"]
    _ok(EXPLAIN, mined)


def test_score_leaves_out_explanations_of_an_earlier_mining(mined, subject):
    _ok(EXPLAIN, mined)
    assert len(read_explanations(RunDir(mined))) > 0
    run_mine_stage(mined, MineConfig(**RE_MINE), subject=subject)
    assert read_explanations(RunDir(mined)).empty  # explained from windows the new mining does not have
    _refused(SCORE, mined, "run `interp-eval explain` first")


def test_the_catalog_reads_a_one_run_table_only_from_the_last_finished_run(tmp_path):
    """The rule of catalog.py's "Which run wrote a file", on windows.parquet."""
    rows = pa.Table.from_pylist([{"window_id": 0, "context": 0, "position": 0, "token_ids": [1, 2], "tokens": ["a", "b"]}],
                                schema=WINDOWS.schema)
    hand = RunDir(tmp_path / "hand")
    hand.root.mkdir()
    pq.write_table(rows, hand.path(WINDOWS))
    assert len(hand.read(WINDOWS)) == 1  # no stamp, no manifest line: a hand-made input

    rd = RunDir(tmp_path / "run", run_id="r1")
    rd.write(WINDOWS, rows)
    with pytest.raises(UserError, match="did not finish"):
        rd.read(WINDOWS)
    rd.mark_complete("mine", "h1", [WINDOWS.name], run="r1")
    assert len(rd.read(WINDOWS)) == 1
    rd.mark_started("mine", "h2", "r2")
    with pytest.raises(UserError, match="has not finished"):
        rd.read(WINDOWS)
    RunDir(rd.root, run_id="r2").write(WINDOWS, rows)
    rd.mark_complete("mine", "h2", [WINDOWS.name], run="r2")
    assert len(rd.read(WINDOWS)) == 1
    pq.write_table(rows, rd.path(WINDOWS))  # replaced by a file without the run's stamp
    with pytest.raises(UserError, match="not from the last finished"):
        rd.read(WINDOWS)
    with pytest.raises(ValueError, match="run_id"):
        RunDir(rd.root).write(WINDOWS, rows)  # a stage that writes a one_run table must say which run it is


# -- a failed stage keeps the last good one: inputs are checked before the run changes (defect 2) ---------------
def _flags(kw: dict) -> list[str]:
    return [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def test_a_failed_mine_on_bad_input_changes_nothing(mined, subject, tmp_path):
    first = run_explain_stage(mined, ExplainConfig(explainer="token-table"))
    before = _digest(mined)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _refused(["mine", *_flags({**RE_MINE, "dataset": empty})], mined, "held-out split is empty")
    assert _digest(mined) == before
    assert run_mine_stage(mined, MineConfig(**MINE_KW), subject=subject)["skipped"]
    again = run_explain_stage(mined, ExplainConfig(explainer="token-table"))
    assert again["already_done"] == first["selected"] > 0


TINY_TRAIN = ["train", "--coder", "sae", "--hookpoint", "layers.1.mlp", "--expansion", "1", "--tokens", "2048",
              "--batch-size", "256", "--checkpoint-every", "4", "--ctx-len", "64", "--eval-tokens", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained_src(tmp_path_factory) -> Path:
    """A run with one tiny coder trained (and its activation cache, which the coders below reuse)."""
    run = tmp_path_factory.mktemp("robust") / "trained"
    _ok([*TINY_TRAIN, "--k", "8"], run)
    return run


@pytest.fixture
def trained(tmp_path, trained_src) -> Path:
    run = tmp_path / "trained"
    shutil.copytree(trained_src, run)
    return run


def test_a_failed_train_on_bad_input_changes_nothing(trained, tmp_path):
    before = _digest(trained)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _refused([*TINY_TRAIN, "--k", "8", "--dataset", empty], trained, "split is empty")
    assert _digest(trained) == before


def _tree(folder: Path) -> dict[str, str]:
    """Every path under `folder` (folders too: an activation cache starts as an empty folder), files by sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def test_more_tokens_than_the_train_split_are_refused_before_caching(trained):
    """The packaged train split holds 827,904 tokens at ctx 256: asking for more stops at once, not after caching
    all it has. --tokens counts distinct training tokens (--epochs repeats them), so --epochs does not lift it."""
    before = _tree(trained)
    args = [*TINY_TRAIN, "--ctx-len", "256", "--eval-tokens", "1024"]  # the last value of an option given twice counts
    started = time.perf_counter()
    err = _refused([*args, "--k", "8", "--tokens", "1000000", "--epochs", "4"], trained, "the train split holds 827904 tokens")
    took = time.perf_counter() - started
    assert "--tokens 1000000" in err and "--epochs" in err, err
    assert took < 30, f"refused after {took:.1f} s: it must come before the model's forward passes"
    assert _tree(trained) == before


# -- train records each coder as it is saved: a crash in the next one keeps it (defect 3) ----------------------
def test_a_crash_while_training_the_second_coder_keeps_the_first(trained):
    args = [*TINY_TRAIN, "--k", "4", "--k", "6"]
    first, second = trained / "coders" / "sae-layers.1.mlp-k4", trained / "coders" / "sae-layers.1.mlp-k6"
    bad = trained / "checkpoints" / f"{second.name}.pt"
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(b"not a checkpoint")  # the second coder's training stops on it, after the first was saved
    _refused(args, trained, "unreadable")
    assert first.is_dir() and not second.exists()
    saved = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in first.iterdir()}
    bad.unlink()
    _ok(args, trained)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in first.iterdir()} == saved  # not retrained
    assert second.is_dir()
    done = [e["stage"] for e in _manifest(trained) if e["status"] == "complete"]
    assert done.count(f"train:{first.name}") == 1 and done.count(f"train:{second.name}") == 1


# -- the list of bad inputs: one line, non-zero exit, the run directory unchanged -----------------------
def _coder_copy(run: Path, name: str) -> Path:
    """A copy of one of the run's coders outside the run, to be damaged."""
    dst = run.parent / f"bad-{name}"
    shutil.copytree(run / "coders" / "sae0", dst)
    return dst


def _wrong_width(run: Path) -> Path:
    """A well-formed coder that reads 64-wide activations: the subject model's MLP is 576 wide."""
    from interp_eval.coders.coder import CoderConfig, SparseCoder
    from interp_eval.coders.saelens import save_coder
    from mining_helpers import MODEL_NAME

    dst = run.parent / "bad-width"
    save_coder(SparseCoder(CoderConfig("sae", "topk", 64, 128, 8, hookpoint="layers.0.mlp", model_name=MODEL_NAME), seed=1), dst)
    return dst


def _not_a_coder(run: Path) -> Path:
    dst = run.parent / "bad-notacoder"
    dst.mkdir()
    (dst / "notes.txt").write_text("not a coder")
    return dst


def _corrupt_weights(run: Path) -> Path:
    dst = _coder_copy(run, "weights")
    for f in dst.glob("*.safetensors"):
        f.write_bytes(b"\x00garbage" * 10)
    return dst


def _truncated_latents(run: Path) -> Path:
    path = run / "latents.parquet"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return run


BAD_INPUTS = {
    # name: (command builder (run, prepared path) -> args, preparation, text the one line must hold)
    "missing run dir": (lambda run, p: ["explain", "--run", run / "nope", "--explainer", "token-table"], None, "not found"),
    "truncated parquet": (lambda run, p: ["explain", "--run", run, "--explainer", "token-table"], _truncated_latents,
                          "latents.parquet"),
    "wrong hookpoint": (lambda run, p: ["train", "--run", run, "--hookpoint", "layers.99.mlp", "--tokens", "1024"], None,
                        "layers.99.mlp"),
    "d_in of coder vs model": (lambda run, p: ["mine", "--run", run, "--coder", p, "--tokens", "1024"], _wrong_width, "576"),
    "not a coder": (lambda run, p: ["mine", "--run", run, "--coder", p, "--tokens", "1024"], _not_a_coder, "bad-notacoder"),
    "corrupt safetensors": (lambda run, p: ["mine", "--run", run, "--coder", p, "--tokens", "1024"], _corrupt_weights,
                            "bad-weights"),
    "claude without a key": (lambda run, p: ["explain", "--run", run, "--model", "claude", "--latents", "1"], None,
                             "ANTHROPIC_API_KEY"),
    "unknown model": (lambda run, p: ["explain", "--run", run, "--model", "no-such-model-xyz", "--latents", "1"], None,
                      "no-such-model-xyz"),
    "k larger than latents": (lambda run, p: ["train", "--run", run, "--k", "10000", "--expansion", "1", "--tokens", "1024"],
                              None, "larger than the number of latents"),
    "negative tokens": (lambda run, p: ["train", "--run", run, "--tokens", "-5"], None, "--tokens"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_each_bad_input_is_one_line_and_changes_nothing(case, mined, monkeypatch):
    build, prepare, match = BAD_INPUTS[case]
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    path = prepare(mined) if prepare else None
    before = _digest(mined)
    result = runner.invoke(app, [str(a) for a in build(mined, path)])
    err = result.stderr.strip()
    assert result.exit_code != 0, (case, result.output)
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in result.output, (case, err)
    assert match in err, (case, err)
    assert _digest(mined) == before, case
