"""`interp-eval export --format neuronpedia | delphi` on a small hand-built scored run (no model pass, no LLM).

The run: run_builders.build_mined_run (latent i of every coder fires on one word; the firing counts differ a lot
between latents), scoring_helpers' explanations, made-up detection/fuzzing/embedding predictions with a shuffled
control, and the score stage's own aggregates (scoring/aggregate.py) with --freq-adjust, so score_summary holds our
frequency-weighted F1 as `interp-eval score --freq-adjust` writes it.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from run_builders import build_mined_run
from scoring_helpers import write_explanations

from interp_eval.artifacts import RunDir
from interp_eval.catalog import CONTEXTS, LATENT_SCORES, PREDICTIONS, SCORE_SUMMARY
from interp_eval.cli import app
from interp_eval.export.neuronpedia import FIELDS
from interp_eval.scoring import aggregate

CODERS = ("sae-layers.9.mlp-k8", "bae-layers.9.mlp-k8", "sae-layers.9.mlp-k8-randmodel")
RANDOM_MODEL = "random:smollm2-135m-instruct:0"
N_LATENTS = 6  # the last is too_rare: latents 0-4 are explained and scored
FAILED = ("sae-layers.9.mlp-k8", 2)  # every fuzzing prediction of this latent failed: F1 NaN for us, 0 for delphi
runner = CliRunner()


# -- the run -------------------------------------------------------------------------------------------------

def _predictions(run: Path, truth: dict) -> pd.DataFrame:
    ctx = pd.read_parquet(run / "contexts.parquet")
    quant = {(c, int(l), int(w)): q for c, l, w, q in zip(ctx["coder"], ctx["latent"], ctx["window_id"], ctx["quantile"])}
    rng = np.random.default_rng(3)
    rows = []
    base = {"explainer": "llm", "similarity": None, "answer": None, "attempts": 1, "model": "fake-model", "prompt_version": "v1",
            "explanation_sha": "0" * 12, "windows_per_prompt": 5, "seed": 0}
    for scorer in ("detection", "fuzzing", "embedding"):
        for (coder, latent, window), label in sorted(truth.items()):
            if latent >= N_LATENTS - 1:
                continue  # too_rare: not explained, so not scored
            err = 0.05 + 0.1 * latent  # a different F1 per latent, so the weighting matters
            for control, source in (("none", latent), ("shuffled", (latent + 1) % (N_LATENTS - 1))):
                if control == "shuffled" and (scorer == "embedding" or latent > 1):
                    continue
                failed = scorer == "fuzzing" and control == "none" and (coder, latent) == FAILED
                pred = None if failed or scorer == "embedding" else (label if rng.random() > err else 1 - label)
                q = quant.get((coder, latent, window))
                rows.append({**base, "coder": coder, "latent": latent, "scorer": scorer, "control": control, "source_latent": source,
                             "window_id": window, "label": label, "prediction": pred,
                             "probability": None if pred is None or latent == 4 else float(np.clip(0.2 + 0.6 * pred + rng.normal(0, 0.1), 0, 1)),
                             "similarity": float(rng.random() + 0.5 * label) if scorer == "embedding" else None,
                             "parse_ok": not failed, "failure": "parse: no list" if failed else None,
                             "quantile": None if q is None or pd.isna(q) else int(q), "prompt_index": len(rows) % 3,
                             "position": len(rows) % 5 + 1})
    df = pd.DataFrame(rows)
    return df.astype({"similarity": "float64", "probability": "float64", "quantile": "Int8", "label": "int8", "prediction": "Int8",
                      "answer": "Int32"})


def _add_top_windows(run: Path) -> None:
    """`top`/`display` copies of the explanation windows (each window then appears twice for its latent)."""
    ctx = pd.read_parquet(run / "contexts.parquet")
    top = ctx[ctx["split"] == "explain"].copy()
    top["kind"], top["split"], top["quantile"] = "top", "display", None
    ctx = pd.concat([ctx, top], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(ctx, schema=CONTEXTS.schema, preserve_index=False), run / "contexts.parquet")


def build_scored_run(run: Path, tokenizer) -> None:
    info = build_mined_run(run, tokenizer, coders=CODERS, n_latents=N_LATENTS, n_explain=8, n_test=10, n_negative=10)
    _add_top_windows(run)
    expl = write_explanations(run)
    (run / "run.json").write_text(json.dumps({"created": 1.7e9, "stages": {"mine": {
        "model": "smollm2-135m-instruct", "tokens": 64000, "corpus": {"dataset": "bbc-news", "ctx_len": 16},
        "sampling": {"window": 16, "n_quantiles": 10, "min_examples": 200, "n_explain": 8, "n_test": 10, "n_negative": 10}}}}))
    folder = run / "coders" / CODERS[2]  # only the random-model coder has a folder: the others fall back to run.json's model
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps({"metadata": {"model_name": RANDOM_MODEL, "hook_name": "layers.9.mlp",
                                                              "interp_eval": {"coder": {"kind": "sae", "activation": "topk", "k": 8, "d_in": 576}}}}))
    rd = RunDir(run)
    pred = _predictions(run, info["truth"])
    latents = pd.read_parquet(run / "latents.parquet")
    scores = aggregate.latent_scores(pred, latents, expl)
    rd.write(PREDICTIONS, pred)
    rd.write(LATENT_SCORES, scores)
    rd.write(SCORE_SUMMARY, aggregate.summary(scores, pred, latents, expl, freq_adjust=True, n_boot=20))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from interp_eval.subject.model import packaged_model_dir

    return AutoTokenizer.from_pretrained(packaged_model_dir())


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, tokenizer) -> Path:
    run = tmp_path_factory.mktemp("export") / "run"
    build_scored_run(run, tokenizer)
    return run


def _export(run: Path, out: Path, fmt: str) -> str:
    result = runner.invoke(app, ["export", str(out), "--run", str(run), "--format", fmt])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("exported ") and f"in {fmt} layout" in result.stdout, result.stdout
    return result.stdout


# -- Neuronpedia ---------------------------------------------------------------------------------------------
# The fields and types of each row, written from hijohnnylin/neuronpedia@ebb8426f (utils/neuronpedia-utils/
# neuronpedia_utils/db_models/*.py for the first seven; apps/webapp/prisma/schema.prisma for the rest).
# "?" = may be null; "datetime" = an ISO 8601 string.

S, F, I, B, D = "str", "float", "int", "bool", "datetime"
LS, LF, LI = "list[str]", "list[float]", "list[int]"
SPEC: dict[str, dict[str, str]] = {
    "model": {"id": S, "instruct": B, "creatorId": S, "displayNameShort": S, "displayName": S, "tlensId": S + "?", "dimension": I + "?",
              "visibility": S, "defaultSourceSetName": S + "?", "defaultSourceId": S + "?", "inferenceEnabled": B, "layers": I,
              "neuronsPerLayer": I, "createdAt": D, "owner": S, "updatedAt": D, "website": S + "?"},
    "release": {"name": S, "description": S, "creatorName": S, "creatorId": S, "visibility": S, "isNewUi": B, "featured": B,
                "descriptionShort": S + "?", "urls": LS, "creatorEmail": S + "?", "creatorNameShort": S + "?",
                "defaultSourceSetName": S + "?", "defaultSourceId": S + "?", "defaultUmapSourceIds": LS, "createdAt": D},
    "sourceset": {"modelId": S, "name": S, "creatorId": S, "hasDashboards": B, "visibility": S, "description": S, "type": S,
                  "creatorName": S, "urls": LS, "creatorEmail": S + "?", "releaseName": S + "?", "defaultOfModelId": S + "?",
                  "defaultRange": I, "defaultShowBreaks": B, "showDfa": B, "showCorrelated": B, "showHeadAttribution": B,
                  "showUmap": B, "createdAt": D},
    "source": {"id": S, "modelId": S, "setName": S, "creatorId": S, "hasDashboards": B, "inferenceEnabled": B, "inferenceHosts": LS,
               "saelensConfig": S + "?", "saelensRelease": S + "?", "saelensSaeId": S + "?", "hfRepoId": S + "?", "hfFolderId": S + "?",
               "visibility": S, "defaultOfModelId": S + "?", "hasUmap": B, "hasUmapLogSparsity": B, "hasUmapClusters": B,
               "num_prompts": I + "?", "num_tokens_in_prompt": I + "?", "dataset": S + "?", "notes": S + "?", "createdAt": D},
    "features": {"modelId": S, "layer": S, "index": S, "creatorId": S + "?", "createdAt": D, "maxActApprox": F + "?", "hasVector": B,
                 "vector": LF, "vectorLabel": S + "?", "vectorDefaultSteerStrength": F + "?", "hookName": S + "?",
                 "topkCosSimIndices": LI, "topkCosSimValues": LF, "neuron_alignment_indices": LI, "neuron_alignment_values": LF,
                 "neuron_alignment_l1": LF, "correlated_neurons_indices": LI, "correlated_neurons_pearson": LF,
                 "correlated_neurons_l1": LF, "correlated_features_indices": LI, "correlated_features_pearson": LF,
                 "correlated_features_l1": LF, "neg_str": LS, "neg_values": LF, "pos_str": LS, "pos_values": LF, "frac_nonzero": F,
                 "freq_hist_data_bar_heights": LF, "freq_hist_data_bar_values": LF, "logits_hist_data_bar_heights": LF,
                 "logits_hist_data_bar_values": LF, "decoder_weights_dist": LF, "sourceSetName": S + "?"},
    "activations": {"id": S, "tokens": LS, "index": S, "layer": S, "modelId": S, "maxValue": F, "maxValueTokenIndex": I, "minValue": F,
                    "values": LF, "creatorId": S, "dataSource": S + "?", "dataIndex": S + "?", "dfaValues": LF, "dfaTargetIndex": I + "?",
                    "dfaMaxValue": F + "?", "createdAt": D, "lossValues": LF, "logitContributions": S + "?", "binMin": F + "?",
                    "binMax": F + "?", "binContains": F + "?", "qualifyingTokenIndex": I + "?", "zIndices": "list[list[int]]?",
                    "zValues": LF + "?"},
    "explanations": {"id": S, "modelId": S, "layer": S, "index": S, "description": S, "authorId": S, "embedding": LF + "?",
                     "triggeredById": S + "?", "typeName": S + "?", "explanationModelName": S + "?", "notes": S + "?", "createdAt": D},
    "explanation_scores": {"id": S, "initiatedByUserId": S, "value": F, "explanationId": S, "explanationScoreTypeName": S,
                           "explanationScoreModelName": S, "jsonDetails": S, "createdAt": D},
    "explanation_type": {"name": S, "displayName": S, "description": S, "featured": B, "isAttention": B, "settings": S + "?",
                         "url": S + "?", "creatorName": S, "creatorId": S, "createdAt": D, "updatedAt": D},
    "explanation_model_type": {"name": S, "displayName": S, "description": S, "featured": B, "openRouterModelId": S + "?",
                               "url": S + "?", "creatorName": S, "createdAt": D, "updatedAt": D},
    "explanation_score_type": {"name": S, "displayName": S, "description": S, "featured": B, "isAttention": B,
                               "scoreDescription": S + "?", "scorerModel": S + "?", "settings": S + "?", "url": S + "?",
                               "creatorName": S, "creatorId": S, "createdAt": D, "updatedAt": D},
    "explanation_score_model": {"name": S, "displayName": S, "description": S, "featured": B, "openRouterModelId": S + "?",
                                "url": S + "?", "creatorName": S, "createdAt": D, "updatedAt": D},
}


def _is(value, kind: str) -> bool:
    if kind.endswith("?"):
        return value is None or _is(value, kind[:-1])
    if kind.startswith("list["):
        return isinstance(value, list) and all(_is(v, kind[5:-1]) for v in value)
    if kind == D:
        return isinstance(value, str) and bool(pd.Timestamp(value))
    if kind == F:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return type(value) is {"str": str, "int": int, "bool": bool}[kind]


def _rows(path: Path) -> list[dict]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def _np_files(out: Path) -> dict[str, list[dict]]:
    """kind -> all rows of that kind under out (the kind is the file name, or the folder of batch files)."""
    rows: dict[str, list[dict]] = {}
    for path in sorted(out.rglob("*.jsonl*")):
        kind = path.parent.name if path.name.startswith("batch-") else path.name.split(".")[0]
        rows.setdefault(kind, []).extend(_rows(path))
    return rows


def test_neuronpedia_files_carry_exactly_the_documented_fields(scored_run, tmp_path):
    out = tmp_path / "np"
    line = _export(scored_run, out, "neuronpedia")
    assert "shuffled-explanation control" in line or "left out" in line
    assert FIELDS.keys() == SPEC.keys()
    rows = _np_files(out)
    assert set(rows) == set(SPEC), sorted(rows)
    for kind, spec in SPEC.items():
        assert tuple(spec) == FIELDS[kind], kind  # the module writes the fields the test expects, in Neuronpedia's order
        for row in rows[kind]:
            assert list(row) == list(spec), (kind, list(row))
            bad = {k: row[k] for k, t in spec.items() if not _is(row[k], t)}
            assert not bad, (kind, bad)


def test_neuronpedia_layout_and_values(scored_run, tmp_path):
    out = tmp_path / "np"
    _export(scored_run, out, "neuronpedia")
    base = "smollm2-135m-instruct"
    sources = {p.parent.relative_to(out).as_posix() for p in out.rglob("source.jsonl")}
    assert sources == {f"{base}/9-sae-mlp-k8", f"{base}/9-bae-mlp-k8", "random-smollm2-135m-instruct-0/9-sae-mlp-k8-randmodel"}
    src = out / base / "9-sae-mlp-k8"
    assert sorted(p.name for p in src.iterdir()) == ["activations", "explanation_scores", "explanations", "features", "model.jsonl",
                                                      "release.jsonl", "source.jsonl", "sourceset.jsonl"]
    assert _rows(src / "source.jsonl")[0]["setName"] == _rows(src / "sourceset.jsonl")[0]["name"] == "sae-mlp-k8"

    rd = RunDir(scored_run)
    lat = pd.read_parquet(scored_run / "latents.parquet").query("coder == 'sae-layers.9.mlp-k8'")
    feats = {r["index"]: r for r in _rows(src / "features" / "batch-0.jsonl.gz")}
    assert sorted(feats, key=int) == [str(i) for i in lat["latent"]]  # every latent, too_rare ones too
    for r in lat.itertuples():
        assert feats[str(r.latent)]["maxActApprox"] == pytest.approx(r.max_activation)
        assert feats[str(r.latent)]["frac_nonzero"] == pytest.approx(r.frequency)
        assert feats[str(r.latent)]["layer"] == "9-sae-mlp-k8"

    acts = _rows(src / "activations" / "batch-0.jsonl.gz")
    ctx = rd.read(CONTEXTS).query("coder == 'sae-layers.9.mlp-k8' and kind != 'random_negative'")
    assert len(acts) == len(ctx.drop_duplicates(["latent", "window_id"]))  # one per latent and window: top copies merged
    assert len({a["id"] for a in acts}) == len(acts)
    for a in acts:
        assert len(a["tokens"]) == len(a["values"]) and a["maxValue"] > 0
        assert a["values"][a["maxValueTokenIndex"]] == a["maxValue"] == max(a["values"]) and a["minValue"] == min(a["values"])

    expl = {(r["index"], r["typeName"]): r for r in _rows(src / "explanations" / "batch-0.jsonl.gz")}
    assert expl[("3", "interp-eval-llm")]["description"] == "the word 'and' (sae-layers.9.mlp-k8)"
    scores = _rows(src / "explanation_scores" / "batch-0.jsonl.gz")
    ids = {r["id"] for r in expl.values()}
    assert scores and all(s["explanationId"] in ids for s in scores)
    ours = pd.read_parquet(scored_run / "latent_scores.parquet").query("coder == 'sae-layers.9.mlp-k8' and control == 'none'")
    by_id = {r["id"]: int(r["index"]) for r in expl.values()}
    for s in scores:
        scorer = s["explanationScoreTypeName"].removeprefix("interp-eval-")
        assert scorer in ("detection", "fuzzing", "embedding")
        row = ours[(ours["latent"] == by_id[s["explanationId"]]) & (ours["scorer"] == scorer)].iloc[0]
        assert s["value"] == pytest.approx(row["auc" if scorer == "embedding" else "balanced_accuracy"])
        assert json.loads(s["jsonDetails"])["n"] == row["n"]
    # the fully failed fuzzing latent has no balanced accuracy: no score row, and the summary says so
    assert not [s for s in scores if by_id[s["explanationId"]] == FAILED[1] and s["explanationScoreTypeName"] == "interp-eval-fuzzing"]
    config = {p.stem for p in (out / "config").iterdir()}
    assert config == {"explanation_type", "explanation_model_type", "explanation_score_type", "explanation_score_model"}
    assert {r["name"] for r in _rows(out / "config" / "explanation_score_type.jsonl")} == {
        "interp-eval-detection", "interp-eval-fuzzing", "interp-eval-embedding"}


# -- delphi --------------------------------------------------------------------------------------------------

DELPHI_RECORD = {"str_tokens": LS, "activations": LF, "distance": F + "?", "activating": B, "prediction": B + "?",
                 "probability": F + "?", "correct": B + "?"}  # delphi/scorers/classifier/sample.py ClassifierOutput


def delphi_frequency_weighted_f1(results: Path, scorer: str, modules: list[str]) -> tuple[float, dict[int, float]]:
    """delphi's frequency-weighted F1 of one scorer, written from EleutherAI/delphi@3c2e1393 delphi/log/result_analysis.py
    (load_data, compute_confusion, compute_classification_metrics, frequency_weighted_f1), on a delphi results folder.

    Per latent: the records with a prediction; tp/fp/fn from prediction and activating; precision tp/(tp+fp), recall
    tp/positives, each 0 on an empty denominator; F1 2PR/(P+R), 0 when P+R = 0. Per module: sum F1 * count / sum count
    with the counts of log/hookpoint_firing_counts.pt; then the mean over modules. Also returns the per-latent F1."""
    counts = torch.load(results / "log" / "hookpoint_firing_counts.pt", weights_only=True)
    per_module, f1s = [], {}
    for module in modules:
        weights, scores = [], []
        for path in sorted((results / "scores" / scorer).glob(f"*{module}*")):
            latent = int(path.stem.split("latent")[-1])
            valid = [r for r in json.loads(path.read_bytes()) if r["prediction"] is not None]
            tp = sum(r["prediction"] and r["activating"] for r in valid)
            fp = sum(r["prediction"] and not r["activating"] for r in valid)
            pos = sum(r["activating"] for r in valid)
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / pos if pos else 0.0
            f1s[latent] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            weights.append(float(counts[module][latent]))
            scores.append(f1s[latent])
        if sum(weights):
            per_module.append(float(np.dot(scores, weights) / sum(weights)))
    return float(np.mean(per_module)), f1s


def test_delphi_layout_and_records(scored_run, tmp_path):
    out = tmp_path / "delphi"
    line = _export(scored_run, out, "delphi")
    assert "left out" in line
    assert sorted(p.name for p in out.iterdir()) == sorted(CODERS)
    results = out / "sae-layers.9.mlp-k8" / "llm"
    assert sorted(p.name for p in results.iterdir()) == ["explanations", "log", "run_config.json", "scores"]
    assert sorted(p.name for p in (results / "scores").iterdir()) == ["detection", "fuzz"]  # no embedding, no control
    cfg = json.loads((results / "run_config.json").read_text())
    assert cfg["hookpoints"] == ["layers.9.mlp"] and cfg["constructor_cfg"]["min_examples"] == 200
    assert cfg["scorers"] == ["detection", "fuzz"]
    assert json.loads((results / "explanations" / "layers.9.mlp_latent1.txt").read_text()) == "the word 'of' (sae-layers.9.mlp-k8)"

    counts = torch.load(results / "log" / "hookpoint_firing_counts.pt", weights_only=True)
    lat = pd.read_parquet(scored_run / "latents.parquet").query("coder == 'sae-layers.9.mlp-k8'")
    assert list(counts) == ["layers.9.mlp"] and counts["layers.9.mlp"].dtype == torch.int64
    assert counts["layers.9.mlp"].tolist() == lat.sort_values("latent")["firing_count"].tolist()

    pred = pd.read_parquet(scored_run / "predictions.parquet").query(
        "coder == 'sae-layers.9.mlp-k8' and scorer == 'detection' and control == 'none' and latent == 1")
    records = json.loads((results / "scores" / "detection" / "layers.9.mlp_latent1.txt").read_bytes())
    assert len(records) == len(pred)
    for r in records:
        assert list(r) == list(DELPHI_RECORD) and all(_is(r[k], t) for k, t in DELPHI_RECORD.items()), r
        assert r["correct"] == (r["prediction"] == r["activating"])
        assert (r["distance"] == -1.0) == (not r["activating"])  # random negatives; activating: 9 - our decile
        assert len(r["str_tokens"]) == len(r["activations"])
        assert (max(r["activations"]) > 0) == r["activating"]
    deciles = sorted(pred.loc[pred["label"] == 1, "quantile"].astype(int))
    assert sorted(r["distance"] for r in records if r["activating"]) == sorted(9 - q for q in deciles)
    binary = json.loads((out / "bae-layers.9.mlp-k8" / "llm" / "scores" / "fuzz" / "layers.9.mlp_latent0.txt").read_bytes())
    assert {r["distance"] for r in binary if r["activating"]} == {None}  # binary coders: no activation order


def test_delphi_frequency_weighted_f1_reproduces_ours(scored_run, tmp_path):
    """Where every scored latent has a finite F1 (detection here), delphi's definition on the export equals our
    score_summary.freq_weighted_f1; where a latent's F1 is NaN for us (all its predictions failed), delphi counts it
    as F1 = 0 with its full weight, and the two differ by exactly that."""
    out = tmp_path / "delphi"
    _export(scored_run, out, "delphi")
    summary = pd.read_parquet(scored_run / "score_summary.parquet").set_index(["coder", "scorer", "explainer"])
    scores = pd.read_parquet(scored_run / "latent_scores.parquet").query("control == 'none'")
    checked = 0
    for coder in CODERS:
        results = out / coder / "llm"
        for ours_name, theirs_name in (("detection", "detection"), ("fuzzing", "fuzz")):
            delphi, f1s = delphi_frequency_weighted_f1(results, theirs_name, ["layers.9.mlp"])
            ours = summary.loc[(coder, ours_name, "llm"), "freq_weighted_f1"]
            g = scores[(scores["coder"] == coder) & (scores["scorer"] == ours_name)].set_index("latent")
            assert sorted(f1s) == sorted(g.index)
            for latent, f1 in f1s.items():  # per latent: the same F1 where ours is finite, 0 where ours is NaN
                assert f1 == pytest.approx(0.0 if np.isnan(g.at[latent, "f1"]) else g.at[latent, "f1"], abs=1e-12)
            finite = g["f1"].notna()
            if finite.all():
                assert delphi == pytest.approx(ours, rel=1e-9), (coder, ours_name)
            else:
                assert (coder, ours_name) == (FAILED[0], "fuzzing")
                c = g["firing_count"].astype(float)
                assert delphi == pytest.approx(ours * c[finite].sum() / c.sum(), rel=1e-9)
                assert delphi < ours
            checked += 1
    assert checked == 6


# -- bad input -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["neuronpedia", "delphi"])
def test_run_without_latents_is_one_line(tmp_path, fmt):
    (tmp_path / "run").mkdir()
    result = runner.invoke(app, ["export", str(tmp_path / "out"), "--run", str(tmp_path / "run"), "--format", fmt])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "latents.parquet not found" in err, err


def test_mined_only_run(tmp_path, tokenizer):
    run = tmp_path / "run"
    build_mined_run(run, tokenizer, coders=("sae-x",), n_latents=3, n_windows=600)
    result = runner.invoke(app, ["export", str(tmp_path / "d"), "--run", str(run), "--format", "delphi"])
    assert result.exit_code == 2 and "no explanations or detection/fuzzing scores" in result.stderr, result.output
    line = _export(run, tmp_path / "np", "neuronpedia")  # features and activations; no explanations, no scores
    assert "no explanations.parquet" in line and "no latent_scores.parquet" in line
    rows = _np_files(tmp_path / "np")
    assert len(rows["features"]) == 3 and rows["activations"] and "explanations" not in rows
