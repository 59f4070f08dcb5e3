"""sparsify folders in and out, against encodings EleutherAI sparsify itself produced.

tests/fixtures/sparsify/ was written by bench/make_sparsify_fixtures.py in sparsify's own environment
(its README names the versions): each `<variant>/layers.1.mlp/` is a coder saved by sparsify (or by our
`save_sparsify`, the `ours_*` ones), and `<variant>/expected.safetensors` holds sparsify's encoding of
`inputs.safetensors` (as a dense code) and its decode. No sparsify is needed here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from interp_eval.artifacts import RunDir
from interp_eval.cli import app
from interp_eval.coders.coder import CoderConfig, SparseCoder
from interp_eval.coders.discover import coder_folders, fingerprint
from interp_eval.coders.load import load_any_coder
from interp_eval.coders.saelens import save_coder
from interp_eval.coders.sparsify import load_sparsify, save_sparsify
from interp_eval.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures" / "sparsify"
HOOKPOINT = "layers.1.mlp"
X = load_file(str(FIXTURES / "inputs.safetensors"))["x"]
FAST = {"sae_topk", "sae_topk_old_cfg", "tc_skip", "sae_topk_binary", "tc_topk_binary", "ours_sae", "ours_tc", "ours_bae", "ours_btc"}
DENSE = {"sae_groupmax", "sae_binary"}
TRANSCODERS = {"tc_skip", "tc_topk_binary", "ours_tc", "ours_btc"}
BINARY = {"sae_topk_binary", "tc_topk_binary", "sae_binary", "ours_bae", "ours_btc"}


def _dense_code(coder, x: torch.Tensor) -> torch.Tensor:
    """The coder's code of x as the stages get it (encode_sparse), scattered into [N, d_sae]."""
    code = coder.encode_sparse(x)
    return torch.zeros(x.shape[0], coder.d_sae).scatter_(-1, code.indices, code.values.float())


def _perturbed(kind: str, activation: str, seed: int, d: int = 16, latents: int = 32, k: int = 4, hookpoint: str = HOOKPOINT) -> SparseCoder:
    coder = SparseCoder(CoderConfig(kind, activation, d, latents, k, hookpoint=hookpoint, model_name="m"), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in coder.named_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * (0.5 if name == "log_threshold" else 0.2))
    return coder


RESID = "resid_sae_topk"  # written by sparsify at the block output `layers.1`, at the packaged model's width


def test_fixtures_cover_every_variant():
    assert {p.name for p in FIXTURES.iterdir() if p.is_dir()} == FAST | DENSE | {RESID}


# --------------------------------------------------------------------------- a sparsify coder at layers.N
def test_a_sparsify_coder_at_the_block_output_encodes_as_sparsify_does():
    coder = load_any_coder(FIXTURES / RESID / "layers.1")
    x = load_file(str(FIXTURES / "inputs_resid.safetensors"))["x"]
    expected = load_file(str(FIXTURES / RESID / "expected.safetensors"))
    assert coder.hookpoint == "layers.1" and coder.site == "output" and coder.d_in == 576 and coder.ours is not None
    torch.testing.assert_close(_dense_code(coder, x), expected["dense"], atol=1e-5, rtol=0)
    code = coder.encode_sparse(x)
    torch.testing.assert_close(coder.ours.decode(code, x), expected["decoded"], atol=1e-5, rtol=0)


def test_a_sparsify_root_at_the_block_output_runs_mine_explain_score_and_report(tmp_path, subject):
    """`--coder ROOT` for sparsify's default kind of hookpoint (the block output, `layers.N`): mined on the packaged
    model from the residual stream (firing counts equal to encoding the block's output directly), then explained by
    the token table, scored by both embedding scorers and reported."""
    import pandas as pd
    from mining_helpers import MINE_KW, brute_force

    from interp_eval.explain.stage import ExplainConfig, run_explain_stage
    from interp_eval.mining import MineConfig, run_mine_stage
    from interp_eval.report import ReportConfig, run_report_stage
    from interp_eval.scoring import run_score_stage
    from interp_eval.scoring.stage import ScoreConfig

    root = tmp_path / "sp-resid"
    shutil.copytree(FIXTURES / RESID, root)
    (root / "expected.safetensors").unlink()
    run = tmp_path / "run"
    run_mine_stage(run, MineConfig(coders=(root,), **MINE_KW), subject=subject)
    lat = pd.read_parquet(run / "latents.parquet").sort_values("latent")
    assert set(lat["coder"]) == {"sp-resid.layers.1"} and set(lat["hookpoint"]) == {"layers.1"}
    want = brute_force(subject, load_any_coder(root / "layers.1"), MINE_KW)["acts"]
    assert (lat["firing_count"].to_numpy() == (want > 0).sum(0)).all() and lat["firing_count"].sum() > 0
    run_explain_stage(run, ExplainConfig(explainer="token-table"))
    run_score_stage(run, ScoreConfig(scorers=("example-embedding", "embedding")))
    scores = pd.read_parquet(run / "latent_scores.parquet")
    assert set(scores["scorer"]) == {"example-embedding", "embedding"} and set(scores["coder"]) == {"sp-resid.layers.1"}
    written = run_report_stage(run, ReportConfig(plots=False))
    assert "sp-resid.layers.1" in written["coders_md"].read_text()


# --------------------------------------------------------------------------- in: sparsify's encodings
@pytest.mark.parametrize("variant", sorted(FAST | DENSE))
def test_encoding_equals_sparsify(variant):
    coder = load_any_coder(FIXTURES / variant / HOOKPOINT)
    expected = load_file(str(FIXTURES / variant / "expected.safetensors"))
    assert coder.source == "sparsify"
    assert (coder.ours is not None) == (variant in FAST)  # topk and topk_binary take our k-sparse path
    torch.testing.assert_close(_dense_code(coder, X), expected["dense"], atol=1e-5, rtol=0)
    assert (expected["dense"] != 0).any(-1).all()  # every row has a code to compare
    if coder.ours is not None:
        decoded = coder.ours.decode(coder.ours.encode(X), X)
    else:
        decoded = coder.module.decode(coder.dense(X), X)
    torch.testing.assert_close(decoded, expected["decoded"], atol=1e-5, rtol=0)


def test_binary_fixtures_have_latents_below_their_threshold():
    """topk_binary codes where some of the k selected fall short of the threshold: the 'then 1 where positive' step matters."""
    for variant in ("sae_topk_binary", "tc_topk_binary", "ours_bae", "ours_btc"):
        per_row = (load_file(str(FIXTURES / variant / "expected.safetensors"))["dense"] != 0).sum(-1)
        assert per_row.min() < 4 and per_row.max() == 4, variant


@pytest.mark.parametrize("variant", sorted(FAST | DENSE))
def test_what_a_sparsify_folder_loads_as(variant):
    coder = load_sparsify(FIXTURES / variant / HOOKPOINT)
    assert coder.name == f"{variant}.{HOOKPOINT}" and coder.hookpoint == HOOKPOINT
    assert coder.site == ("input" if variant in TRANSCODERS else "output")
    assert coder.binary == (variant in BINARY)
    assert (coder.d_in, coder.d_sae, coder.model_name) == (16, 32, None)
    if coder.ours is not None:
        cfg = coder.ours.cfg
        assert cfg.kind == ("transcoder" if variant in TRANSCODERS else "sae")
        assert cfg.skip == (variant in TRANSCODERS)
        if variant in ("sae_topk_binary", "tc_topk_binary"):
            assert cfg.temperature == 2.0  # the binary branch's ste_temperature


def test_model_name_comes_from_the_roots_run_config(tmp_path):
    root = tmp_path / "my-sae"
    shutil.copytree(FIXTURES / "sae_topk", root)
    (root / "config.json").write_text(json.dumps({"model": "HuggingFaceTB/SmolLM2-135M", "hookpoints": [HOOKPOINT]}))
    assert load_sparsify(root / HOOKPOINT).model_name == "HuggingFaceTB/SmolLM2-135M"


# --------------------------------------------------------------------------- out: round trips
@pytest.mark.parametrize("kind, activation", [("sae", "topk"), ("sae", "binary"), ("transcoder", "topk"), ("transcoder", "binary")])
def test_round_trip_gives_identical_codes(tmp_path, kind, activation):
    ours = _perturbed(kind, activation, seed=7)
    save_sparsify(ours, tmp_path / HOOKPOINT)
    back = load_sparsify(tmp_path / HOOKPOINT)
    assert back.ours is not None
    for key in ("kind", "activation", "d_in", "d_sae", "k", "d_out", "skip", "normalize_decoder", "temperature", "hookpoint"):
        assert getattr(back.ours.cfg, key) == getattr(ours.cfg, key), key
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    a, b = ours.encode(x), back.ours.encode(x)
    assert torch.equal(a.values, b.values) and torch.equal(a.indices, b.indices)
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, back.ours.state_dict()[name]), name
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left over


@pytest.mark.parametrize("variant", ["ours_sae", "ours_tc", "ours_bae", "ours_btc"])
def test_our_committed_exports_are_what_save_sparsify_writes_today(tmp_path, variant):
    """sparsify's stored encodings of these folders (checked above) hold for today's save_sparsify too."""
    folder = FIXTURES / variant / HOOKPOINT
    save_sparsify(load_sparsify(folder).ours, tmp_path / HOOKPOINT)
    assert json.loads((tmp_path / HOOKPOINT / "cfg.json").read_text()) == json.loads((folder / "cfg.json").read_text())
    now, then = load_file(str(tmp_path / HOOKPOINT / "sae.safetensors")), load_file(str(folder / "sae.safetensors"))
    assert now.keys() == then.keys() and all(torch.equal(now[k], then[k]) for k in now)


def test_binary_exports_carry_the_binary_branchs_fields():
    cfg = json.loads((FIXTURES / "ours_btc" / HOOKPOINT / "cfg.json").read_text())
    assert cfg["activation"] == "topk_binary" and cfg["ste"] == "sigmoid" and cfg["ste_temperature"] == 1.0
    assert cfg["transcode"] and cfg["skip_connection"] and cfg["num_latents"] == 32 and cfg["d_in"] == 16
    assert "log_threshold" in load_file(str(FIXTURES / "ours_btc" / HOOKPOINT / "sae.safetensors"))


# --------------------------------------------------------------------------- --coder PATH
def _root(tmp_path: Path) -> Path:
    root = tmp_path / "sp-root"
    for variant, hookpoint in (("sae_topk", "layers.10.mlp"), ("tc_skip", "layers.2.mlp"), ("sae_groupmax", "layers.1.mlp")):
        shutil.copytree(FIXTURES / variant / HOOKPOINT, root / hookpoint)
    (root / "best").mkdir()  # sparsify's checkpoints hold other folders too: not coders, ignored
    return root


def test_a_sparsify_root_expands_to_one_coder_per_hookpoint(tmp_path):
    root = _root(tmp_path)
    found = coder_folders(RunDir(tmp_path / "run"), [root])
    assert found == [(f"sp-root.layers.{i}.mlp", root / f"layers.{i}.mlp") for i in (1, 2, 10)]
    # the hookpoint folder alone gets the same name; a SAELens folder keeps its own
    ours = tmp_path / "slsae"
    save_coder(_perturbed("sae", "topk", 1), ours)
    assert coder_folders(RunDir(tmp_path / "run"), [root / "layers.2.mlp", ours]) == [
        ("sp-root.layers.2.mlp", root / "layers.2.mlp"), ("slsae", ours)]
    with pytest.raises(UserError, match="both named 'sp-root.layers.2.mlp'"):
        coder_folders(RunDir(tmp_path / "run"), [root, root / "layers.2.mlp"])
    assert len({fingerprint(f) for _, f in found}) == 3


def test_a_folder_of_neither_format_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as err:
        coder_folders(RunDir(tmp_path / "run"), [tmp_path / "empty"])
    assert "not a coder folder" in str(err.value) and "sae.safetensors" in str(err.value) and "\n" not in str(err.value)


def _damage(folder: Path, how: str) -> str:
    """Break a copied sparsify folder one way; returns the file the error must name."""
    cfg_path, weights = folder / "cfg.json", folder / "sae.safetensors"
    cfg = json.loads(cfg_path.read_text())
    tensors = load_file(str(weights))
    if how == "bad_json":
        cfg_path.write_text("{not json")
        return str(cfg_path)
    if how == "garbage_weights":
        weights.write_bytes(b"\x00" * 100)
        return str(weights)
    if how == "missing_tensor":
        del tensors["b_dec"]
    elif how == "extra_tensor":
        tensors["W_scale"] = torch.ones(3)
    elif how == "shape":
        cfg["num_latents"] = 48
    elif how == "no_d_in":
        del cfg["d_in"]
    elif how == "activation":
        cfg["activation"] = "jumprelu"
    elif how == "k":
        cfg["k"] = 33
    elif how == "groupmax_groups":
        cfg["activation"], cfg["k"] = "groupmax", 5
    cfg_path.write_text(json.dumps(cfg))
    save_file(tensors, str(weights))
    return str(weights if how in ("missing_tensor", "extra_tensor", "shape") else cfg_path)


@pytest.mark.parametrize("how", ["bad_json", "garbage_weights", "missing_tensor", "extra_tensor", "shape", "no_d_in",
                                 "activation", "k", "groupmax_groups"])
def test_a_broken_sparsify_folder_is_one_line_naming_the_file(tmp_path, how):
    folder = tmp_path / HOOKPOINT
    shutil.copytree(FIXTURES / "sae_topk" / HOOKPOINT, folder)
    named = _damage(folder, how)
    with pytest.raises(UserError) as err:
        load_any_coder(folder)
    message = str(err.value)
    assert named in message and "\n" not in message, message


def test_a_transcoder_wider_out_than_in_cannot_be_saved(tmp_path):
    coder = SparseCoder(CoderConfig("transcoder", "topk", 16, 32, 4, d_out=8))
    with pytest.raises(UserError, match="d_out = d_in"):
        save_sparsify(coder, tmp_path / HOOKPOINT)


# --------------------------------------------------------------------------- export --format sparsify
def test_export_command_writes_one_sparsify_root_per_coder(tmp_path):
    run = tmp_path / "run"
    coders = {"sae-a": _perturbed("sae", "topk", 3, hookpoint="layers.2.mlp"), "btc-b": _perturbed("transcoder", "binary", 4)}
    for name, coder in coders.items():
        save_coder(coder, RunDir(run).coder_dir(name))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["export", "--run", str(run), "--format", "sparsify", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 6 files in sparsify layout" in result.output
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(5))
    for name, coder in coders.items():
        hookpoint = coder.cfg.hookpoint
        assert sorted(p.name for p in (out / name).iterdir()) == ["config.json", hookpoint]
        assert json.loads((out / name / "config.json").read_text())["model"] == "m"
        [(found_name, folder)] = coder_folders(RunDir(tmp_path / "other"), [out / name])
        back = load_any_coder(folder, found_name)
        assert back.name == f"{name}.{hookpoint}" and back.model_name == "m" and back.binary == (name == "btc-b")
        a, b = coder.encode(x), back.ours.encode(x)
        assert torch.equal(a.values, b.values) and torch.equal(a.indices, b.indices)


def test_export_of_a_run_without_coders_is_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(app, ["export", "--run", str(tmp_path / "run"), "--format", "sparsify", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no coders to export" in result.output


# --------------------------------------------------------------------------- mine --coder SPARSIFY_ROOT
def test_mine_reads_a_sparsify_root_end_to_end(tmp_path, subject):
    """`interp-eval mine --coder ROOT`: a groupmax SAE (dense path) and a topk_binary skip transcoder (our path)."""
    import pandas as pd
    from mining_helpers import MINE_KW, brute_force

    from interp_eval.mining import MineConfig, run_mine_stage

    root = tmp_path / "sp-smollm"
    save_sparsify(_perturbed("transcoder", "binary", 5, d=576, latents=64, k=4, hookpoint="layers.1.mlp"), root / "layers.1.mlp")
    groupmax = root / "layers.0.mlp"
    groupmax.mkdir(parents=True)
    gen = torch.Generator().manual_seed(6)
    save_file({"encoder.weight": torch.randn(64, 576, generator=gen) / 24, "encoder.bias": torch.randn(64, generator=gen) * 0.1,
               "W_dec": torch.randn(64, 576, generator=gen) / 24, "b_dec": torch.randn(576, generator=gen) * 0.01},
              str(groupmax / "sae.safetensors"))
    (groupmax / "cfg.json").write_text(json.dumps({"activation": "groupmax", "num_latents": 64, "k": 8, "transcode": False, "d_in": 576}))
    run = tmp_path / "run"
    kw = {**MINE_KW, "tokens": 1024}  # 4 contexts, one batch: the point is the loading, test_mining checks the rest
    run_mine_stage(run, MineConfig(coders=(root,), **kw), subject=subject)  # what `--coder ROOT` asks for
    latents = pd.read_parquet(run / "latents.parquet")
    assert sorted(latents.coder.unique()) == ["sp-smollm.layers.0.mlp", "sp-smollm.layers.1.mlp"]
    for hookpoint in ("layers.0.mlp", "layers.1.mlp"):
        want = brute_force(subject, load_any_coder(root / hookpoint), kw)["acts"]
        got = latents[latents.coder == f"sp-smollm.{hookpoint}"].sort_values("latent")
        assert (got.firing_count.to_numpy() == (want > 0).sum(0)).all(), hookpoint
        assert got.firing_count.sum() > 0
