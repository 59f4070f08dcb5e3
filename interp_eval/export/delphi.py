"""A run's explanations and scores in delphi's results layout, so delphi's own analysis reads them.

Followed: EleutherAI/delphi at commit 3c2e139378b56ca02a632697b541a11aebf03855:
- delphi/__main__.py: `run` writes RESULTS/run_config.json, RESULTS/explanations/, RESULTS/scores/<scorer>/;
  `process_cache` writes each explanation to explanations/<latent>.txt as `orjson.dumps(str)` and each score
  to scores/<scorer>/<latent>.txt as `orjson.dumps(list of per-example records)` ('/' in the name -> '--');
- delphi/latents/latents.py: a latent's name `<module_name>_latent<latent_index>`;
- delphi/scorers/classifier/sample.py (`ClassifierOutput`) and classifier.py: the record of one example,
  str_tokens, activations, distance, activating, prediction (bool or null when the scorer failed),
  probability (P(1) from logprobs, or null), correct (prediction == activating, or null);
- delphi/latents/samplers.py `split_quantiles`: examples sorted by activation, descending, so quantile 0 holds
  the highest; delphi/latents/constructors.py: random non-activating examples have distance -1.0;
- delphi/latents/cache.py `save_firing_counts`: RESULTS/log/hookpoint_firing_counts.pt, `torch.save` of
  {hookpoint: int64 tensor of per-latent counts of tokens with activation > 0};
- delphi/log/result_analysis.py: `load_data(scores_path, modules)` reads every folder under scores/ with the
  record fields above, finds a module's files by the glob `*<module>*`, reads the counts from
  scores_path.parent/log/; `log_results` reads run_config.json's constructor_cfg.min_examples;
  `frequency_weighted_f1` is the per-module firing-count-weighted mean of per-latent F1, then the mean over modules.

Layout. One delphi results folder per coder and explainer: OUT/<coder>/<explainer>/ (explainer `llm` or
`token-table`) holding run_config.json, explanations/<hookpoint>_latent<i>.txt, scores/detection/ and
scores/fuzz/ (our `fuzzing`) <hookpoint>_latent<i>.txt, and log/hookpoint_firing_counts.pt. The module is the
coder's hookpoint (`layers.9.mlp`), as delphi names it. Why a folder per coder rather than the coder's name as
the module: one results folder holds one explanation per latent and module, and `load_data` finds a module's
files by substring, so `sae-layers.9.mlp-k32` would also pick up every file of `sae-layers.9.mlp-k32-randmodel`;
two coders at the same hookpoint could not share a folder under delphi's own names either. Per folder, delphi's
frequency-weighted F1 is then the score over one coder, the grouping of our score_summary.

Records. One per prediction row of the real explanation (control `none`), in the order the windows were shown:
str_tokens the window's tokens; activations the latent's activation per token (contexts.parquet); distance: for
an activating window delphi's quantile, (n_quantiles - 1) - our decile (our 0 is the lowest), null for binary
coders (no activation order); -1.0 for a random negative; activating = label == 1; prediction, probability and
correct as delphi's. Left out, each named in the summary: the shuffled-explanation controls (delphi has no
control), scorers whose records are not classifier records (embedding, example-embedding, intruder: delphi's
`load_data` reads every folder under scores/ as classifier records and would fail on them), failed explanations
and explanations of an earlier mining run.

Frequency-weighted F1: delphi's per-latent F1 is 0 where ours is NaN (every prediction failed, or no positive
label and no positive prediction), and such latents keep their weight in delphi's mean; ours leaves them out
(scoring/metrics.py `frequency_weighted`). On latents with a finite F1 both are sum_i F1_i c_i / sum_i c_i.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..artifacts import RunDir
from ..catalog import CONTEXTS, CONTROL_NONE, LATENTS, PREDICTIONS, SPLIT_TEST, WINDOWS
from ..errors import UserError
from ._run import coder_model, explanations, mine_settings, mined_models, sampling, write_bytes
from .formats import ExportSummary

DELPHI_COMMIT = "3c2e139378b56ca02a632697b541a11aebf03855"
SCORER_DIRS = {"detection": "detection", "fuzzing": "fuzz"}  # our classifier scorers -> delphi's scorer names
RANDOM_NEGATIVE_DISTANCE = -1.0  # delphi/latents/constructors.py, random_non_activating_windows
RECORD_FIELDS = ("str_tokens", "activations", "distance", "activating", "prediction", "probability", "correct")
_PRED_COLUMNS = ["coder", "latent", "scorer", "explainer", "control", "window_id", "label", "prediction", "probability",
                 "quantile", "prompt_index", "position"]


def latent_name(hookpoint: str, latent: int) -> str:
    """delphi's file stem of a latent: `<module>_latent<i>`, with '/' written '--' as its scorer output does."""
    return f"{hookpoint}_latent{int(latent)}".replace("/", "--")


def _json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _none_if_nan(x: Any) -> Any:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) or x is pd.NA else x


def _predictions(rd: RunDir, summary: ExportSummary) -> pd.DataFrame:
    """The prediction rows delphi has a place for: the real explanation's, of the classifier scorers."""
    if not rd.has(PREDICTIONS):
        summary.skipped.append(f"no {PREDICTIONS.name}: no scores exported (run `interp-eval score`)")
        return pd.DataFrame(columns=_PRED_COLUMNS)
    pred = rd.read(PREDICTIONS, columns=_PRED_COLUMNS)
    controls = pred["control"] != CONTROL_NONE
    if controls.any():
        summary.skipped.append(f"{int(controls.sum())} prediction rows of the shuffled-explanation control (delphi has no control)")
    pred = pred[~controls]
    for scorer, g in pred[~pred["scorer"].isin(list(SCORER_DIRS))].groupby("scorer"):
        summary.skipped.append(f"scorer {scorer} ({g[['coder', 'latent']].drop_duplicates().shape[0]} latents): not a classifier "
                               "scorer, and delphi's result analysis reads every scores/ folder as classifier records")
    return pred[pred["scorer"].isin(list(SCORER_DIRS))].reset_index(drop=True)


def _window_data(rd: RunDir, pred: pd.DataFrame) -> tuple[dict[int, list[str]], dict[tuple[str, int, int], list[float]]]:
    """Tokens per window and activations per (coder, latent, window) of the predicted test windows."""
    if pred.empty:
        return {}, {}
    for table in (WINDOWS, CONTEXTS):
        if not rd.has(table):
            raise UserError(f"{table.name} not found in {rd.root}: the scores' windows cannot be written without it "
                            "(run `interp-eval mine`)")
    win = rd.read(WINDOWS, columns=["window_id", "tokens"], where={"window_id": sorted(set(pred["window_id"].astype(int)))})
    tokens = {int(w): [str(t) for t in toks] for w, toks in zip(win["window_id"], win["tokens"])}
    ctx = rd.read(CONTEXTS, columns=["coder", "latent", "window_id", "activations"],
                  where={"coder": sorted(set(pred["coder"])), "split": [SPLIT_TEST]})
    acts = {(c, int(l), int(w)): [float(a) for a in v] for c, l, w, v in zip(ctx["coder"], ctx["latent"], ctx["window_id"], ctx["activations"])}
    return tokens, acts


def _records(g: pd.DataFrame, coder: str, tokens: dict, acts: dict, n_quantiles: int) -> list[dict] | None:
    """delphi's per-example records of one latent's predictions (None when a window's tokens or activations are missing)."""
    out = []
    for r in g.sort_values(["prompt_index", "position", "window_id"], na_position="last").itertuples(index=False):
        w, latent = int(r.window_id), int(r.latent)
        if w not in tokens or (coder, latent, w) not in acts:
            return None
        activating = int(r.label) == 1
        q = _none_if_nan(r.quantile)
        distance = (n_quantiles - 1 - int(q) if q is not None else None) if activating else RANDOM_NEGATIVE_DISTANCE
        p = _none_if_nan(r.prediction)
        prediction = None if p is None else bool(int(p))
        prob = _none_if_nan(r.probability)
        out.append({"str_tokens": tokens[w], "activations": acts[(coder, latent, w)], "distance": distance,
                    "activating": activating, "prediction": prediction, "probability": None if prob is None else float(prob),
                    "correct": None if prediction is None else prediction == activating})
    return out


def _run_config(rd: RunDir, coder: str, hookpoint: str, explainer_model: str | None, scorers: list[str], model: str | None) -> dict:
    """delphi's RunConfig fields (delphi/config.py) that a run of ours fills; the others are left out."""
    mine, samp = mine_settings(rd), sampling(rd)
    corpus = mine.get("corpus") or {}
    cfg: dict[str, Any] = {"model": model, "sparse_model": str(rd.coder_dir(coder)), "hookpoints": [hookpoint],
                           "explainer_model": explainer_model, "scorers": scorers, "name": coder}
    constructor = {"min_examples": samp.get("min_examples"), "n_non_activating": samp.get("n_negative"),
                   "example_ctx_len": samp.get("window"), "non_activating_source": "random"}
    sampler = {"n_examples_train": samp.get("n_explain"), "n_examples_test": samp.get("n_test"),
               "n_quantiles": samp.get("n_quantiles"), "train_type": "quantiles", "test_type": "quantiles"}
    cache = {"dataset_repo": corpus.get("dataset"), "cache_ctx_len": corpus.get("ctx_len"), "n_tokens": mine.get("tokens")}
    for name, part in (("constructor_cfg", constructor), ("sampler_cfg", sampler), ("cache_cfg", cache)):
        cfg[name] = {k: v for k, v in part.items() if v is not None}
    return {k: v for k, v in cfg.items() if v is not None}


def export(rd: RunDir, out: Path) -> ExportSummary:
    import torch

    out = Path(out)
    summary = ExportSummary(out)
    lat = rd.read(LATENTS, columns=["coder", "latent", "hookpoint", "firing_count"])
    expl, notes = explanations(rd)
    summary.skipped += notes
    pred = _predictions(rd, summary)
    if expl.empty and pred.empty:
        raise UserError(f"{rd.root}: no explanations or detection/fuzzing scores to export in delphi's layout "
                        "(run `interp-eval explain` and `interp-eval score` first)")
    tokens, acts = _window_data(rd, pred)
    n_quantiles = int(sampling(rd).get("n_quantiles") or 10)
    hookpoints = lat.groupby("coder")["hookpoint"].first().to_dict()
    mined = mined_models(rd)

    def rel(path: Path) -> None:
        summary.files.append(path.relative_to(out))

    keys = sorted(set(zip(expl["coder"], expl["explainer"])) | set(zip(pred["coder"], pred["explainer"])))
    for coder, explainer in keys:
        if coder not in hookpoints:
            summary.skipped.append(f"coder {coder}: not in {LATENTS.name} (no hookpoint, no firing counts)")
            continue
        hp = hookpoints[coder]
        folder = out / coder / explainer
        ex = expl[(expl["coder"] == coder) & (expl["explainer"] == explainer)]
        for latent, text in zip(ex["latent"], ex["explanation"]):
            rel(write_bytes(folder / "explanations" / f"{latent_name(hp, latent)}.txt", _json(str(text))))
        p = pred[(pred["coder"] == coder) & (pred["explainer"] == explainer)]
        scorers = []
        for scorer, sg in p.groupby("scorer", sort=True):
            scorers.append(SCORER_DIRS[scorer])
            for latent, g in sg.groupby("latent", sort=True):
                records = _records(g, coder, tokens, acts, n_quantiles)
                if records is None:
                    summary.skipped.append(f"{coder} latent {latent} {scorer}: a test window is missing from "
                                           f"{WINDOWS.name} or {CONTEXTS.name}")
                    continue
                rel(write_bytes(folder / "scores" / SCORER_DIRS[scorer] / f"{latent_name(hp, latent)}.txt", _json(records)))
        cl = lat[lat["coder"] == coder]
        counts = torch.zeros(int(cl["latent"].max()) + 1, dtype=torch.int64)
        counts[torch.tensor(cl["latent"].tolist())] = torch.tensor(cl["firing_count"].tolist(), dtype=torch.int64)
        (folder / "log").mkdir(parents=True, exist_ok=True)
        torch.save({hp: counts}, folder / "log" / "hookpoint_firing_counts.pt")
        rel(folder / "log" / "hookpoint_firing_counts.pt")
        model = ex["explainer_model"].dropna()
        cfg = _run_config(rd, coder, hp, str(model.iloc[-1]) if len(model) else None, scorers, coder_model(rd, coder, mined))
        rel(write_bytes(folder / "run_config.json", json.dumps(cfg, indent=4).encode()))
    return summary
