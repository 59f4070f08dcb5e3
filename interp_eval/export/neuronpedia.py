"""A run's latents, contexts, explanations and scores in the layout of Neuronpedia's exports.

Followed: hijohnnylin/neuronpedia at commit ebb8426fc550ad5d1f76d52c271a624af3c08a57:
- utils/neuronpedia-utils/neuronpedia_utils/export-data.py: the layout, exports/<modelId>/<sourceId>/ with
  model.jsonl, release.jsonl, source.jsonl, sourceset.jsonl and features/, activations/, explanations/
  batch-<n>.jsonl.gz (1024 latents a batch), and exports/config/ with the explanation and score types;
- utils/neuronpedia-utils/neuronpedia_utils/convert-llamascope-arrow-to-neuronpedia-export.py and
  convert-saedashboard-to-neuronpedia-export.py: how a converter fills them (source id `<layer>-<sourceSet>`,
  maxValue/maxValueTokenIndex/minValue from the values, maxActApprox, gzip level 5);
- utils/neuronpedia-utils/neuronpedia_utils/db_models/{model,source_release,source_set,source,feature,activation,
  explanation}.py: the fields of each row, written in full as those converters write them (`dataclass.__dict__`);
- apps/webapp/prisma/schema.prisma: models Neuron, Activation, Explanation, ExplanationScore, ExplanationType,
  ExplanationModelType, ExplanationScoreType, ExplanationScoreModel (the rows of config/ and explanation_scores/,
  which have no dataclass);
- apps/webapp/app/api/admin/import/route.ts and apps/webapp/lib/db/import.ts: the importer reads model, sourceset,
  source (release optional), features/, activations/, explanations/ *.jsonl.gz, and the config from its own
  config path; it inserts the columns named by the first line's keys (unknown keys are ignored);
- apps/webapp/prisma/seed.ts: the bot user clkht01d40000jv08hvalcvly every instance has, our creatorId/authorId.

Mapping:
- each coder -> a Source `<layer>-<set>` of model `<modelId>` (the model its latents were mined on, latents.parquet's
  `mined_on`, else its cfg.json's model_name, else run.json's, as an id: lower case,
  [a-z0-9_-], e.g. smollm2-135m-instruct, random-smollm2-135m-instruct-0), in SourceSet `<set>` = the coder's
  name without its `layers.<n>.` (sae-layers.9.mlp-k32 -> source 9-sae-mlp-k32 of set sae-mlp-k32); one
  SourceRelease `interp-eval-<run folder>` for the run; Source.dataset = the mined corpus, num_tokens_in_prompt =
  the window length (every Activation is one window), num_prompts = the windows the mining pass cut; Model.dimension
  = the coder's d_in where its cfg.json says;
- each latent (every one in latents.parquet, dead ones too) -> a Neuron/feature: index (a string, as the schema
  has it), maxActApprox = max_activation over all mined tokens, frac_nonzero = frequency, sourceSetName;
- each activating context (`top` and `quantile` windows, once per latent and window) -> an Activation: tokens,
  values (the latent's activation per token), maxValue, maxValueTokenIndex (first maximum), minValue, dataIndex =
  the window_id, dataSource = the mined corpus; random negatives are left out (no place for non-activating text);
- each explanation -> an Explanation: description, typeName `interp-eval-<explainer>` (llm | token-table),
  explanationModelName = the explainer model, notes (prompt version, windows shown);
- each per-latent score of an exported explanation -> an ExplanationScore: value = balanced accuracy (detection,
  fuzzing; what Neuronpedia's own eleuther_fuzz / eleuther_recall scores hold), else the scorer's first metric
  (embedding: AUC, intruder: accuracy); explanationScoreTypeName `interp-eval-<scorer>`; explanationScoreModelName =
  the scorer's model; jsonDetails = JSON of all our per-latent metrics and counts. Neuronpedia's importer reads no
  score file: explanation_scores/ holds rows of the ExplanationScore table, to insert after the explanations;
- config/: the ExplanationType, ExplanationModelType, ExplanationScoreType and ExplanationScoreModel rows those
  name (the foreign keys of Explanation and ExplanationScore), for an instance that lacks them.

Fields we cannot fill, written as the converters write them (empty lists, null, false or the dataclass default):
Model: tlensId, layers, neuronsPerLayer (0), owner (""), website; Source: saelensConfig/Release/SaeId, hfRepoId,
hfFolderId (the weights are not exported: use --format sparsify or the run's coders/ folders), inferenceHosts;
Neuron: vector/hasVector/hookName (no steering vector), topkCosSim*, neuron_alignment_*, correlated_*, pos_/neg_str
and values (no logit lens), freq_/logits_hist_*, decoder_weights_dist; Activation: dfa*, lossValues,
logitContributions, binMin/binMax/binContains (our quantile bins' edges are not stored), qualifyingTokenIndex,
zIndices/zValues; Explanation: embedding, triggeredById. Three keys are the dataclasses' and not Prisma columns,
as in the converters' files: Source.inferenceHosts (a relation), Activation.zIndices (the importer splits it into
zKIndices/zQIndices), Explanation.triggeredById (Prisma: triggeredByUserId); the importer ignores the others.
Every file's keys, in order, are FIELDS below; ids are cuid-like hashes of the row's key, stable across re-exports.
Left out, each named in the summary: shuffled-control scores, scores of explanation-free scorers (example-embedding:
an ExplanationScore needs an explanation), failed explanations and explanations of an earlier mining run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import time
from collections import defaultdict
from functools import lru_cache
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ..artifacts import RunDir
from ..catalog import CONTEXTS, CONTROL_NONE, KIND_QUANTILE, KIND_TOP, LATENT_SCORES, LATENTS, METRICS, NO_EXPLAINER, WINDOWS
from ._run import (coder_description, coder_model, explanations, mine_settings, mined_models, mismatches, run_json, sampling, slug,
                   write_bytes)
from .formats import ExportSummary

NEURONPEDIA_COMMIT = "ebb8426fc550ad5d1f76d52c271a624af3c08a57"
CREATOR_ID = "clkht01d40000jv08hvalcvly"  # the bot user of apps/webapp/prisma/seed.ts (DEFAULT_CREATOR_USER_ID)
CREATOR_NAME = "interp-eval"
BATCH = 1024  # latents per batch file (export-data.py FEATURES_EXPLANATIONS_BATCH_SIZE, ACTIVATIONS_BATCH_SIZE)
_COUNTS = ("n", "failures", "n_activating", "n_negative", "n_probabilities", "tp", "fp", "tn", "fn")

# The keys of each file's rows, in the order written: db_models/*.py for the first seven, schema.prisma for the rest.
FIELDS: dict[str, tuple[str, ...]] = {
    "model": ("id", "instruct", "creatorId", "displayNameShort", "displayName", "tlensId", "dimension", "visibility",
              "defaultSourceSetName", "defaultSourceId", "inferenceEnabled", "layers", "neuronsPerLayer", "createdAt", "owner",
              "updatedAt", "website"),
    "release": ("name", "description", "creatorName", "creatorId", "visibility", "isNewUi", "featured", "descriptionShort", "urls",
                "creatorEmail", "creatorNameShort", "defaultSourceSetName", "defaultSourceId", "defaultUmapSourceIds", "createdAt"),
    "sourceset": ("modelId", "name", "creatorId", "hasDashboards", "visibility", "description", "type", "creatorName", "urls",
                  "creatorEmail", "releaseName", "defaultOfModelId", "defaultRange", "defaultShowBreaks", "showDfa", "showCorrelated",
                  "showHeadAttribution", "showUmap", "createdAt"),
    "source": ("id", "modelId", "setName", "creatorId", "hasDashboards", "inferenceEnabled", "inferenceHosts", "saelensConfig",
               "saelensRelease", "saelensSaeId", "hfRepoId", "hfFolderId", "visibility", "defaultOfModelId", "hasUmap",
               "hasUmapLogSparsity", "hasUmapClusters", "num_prompts", "num_tokens_in_prompt", "dataset", "notes", "createdAt"),
    "features": ("modelId", "layer", "index", "creatorId", "createdAt", "maxActApprox", "hasVector", "vector", "vectorLabel",
                 "vectorDefaultSteerStrength", "hookName", "topkCosSimIndices", "topkCosSimValues", "neuron_alignment_indices",
                 "neuron_alignment_values", "neuron_alignment_l1", "correlated_neurons_indices", "correlated_neurons_pearson",
                 "correlated_neurons_l1", "correlated_features_indices", "correlated_features_pearson", "correlated_features_l1",
                 "neg_str", "neg_values", "pos_str", "pos_values", "frac_nonzero", "freq_hist_data_bar_heights",
                 "freq_hist_data_bar_values", "logits_hist_data_bar_heights", "logits_hist_data_bar_values", "decoder_weights_dist",
                 "sourceSetName"),
    "activations": ("id", "tokens", "index", "layer", "modelId", "maxValue", "maxValueTokenIndex", "minValue", "values", "creatorId",
                    "dataSource", "dataIndex", "dfaValues", "dfaTargetIndex", "dfaMaxValue", "createdAt", "lossValues",
                    "logitContributions", "binMin", "binMax", "binContains", "qualifyingTokenIndex", "zIndices", "zValues"),
    "explanations": ("id", "modelId", "layer", "index", "description", "authorId", "embedding", "triggeredById", "typeName",
                     "explanationModelName", "notes", "createdAt"),
    "explanation_scores": ("id", "initiatedByUserId", "value", "explanationId", "explanationScoreTypeName",
                           "explanationScoreModelName", "jsonDetails", "createdAt"),
    "explanation_type": ("name", "displayName", "description", "featured", "isAttention", "settings", "url", "creatorName",
                         "creatorId", "createdAt", "updatedAt"),
    "explanation_model_type": ("name", "displayName", "description", "featured", "openRouterModelId", "url", "creatorName",
                               "createdAt", "updatedAt"),
    "explanation_score_type": ("name", "displayName", "description", "featured", "isAttention", "scoreDescription", "scorerModel",
                               "settings", "url", "creatorName", "creatorId", "createdAt", "updatedAt"),
    "explanation_score_model": ("name", "displayName", "description", "featured", "openRouterModelId", "url", "creatorName",
                                "createdAt", "updatedAt"),
}


_EMPTY = {kind: dict.fromkeys(fields) for kind, fields in FIELDS.items()}


def _row(kind: str, **values: Any) -> dict[str, Any]:
    """One row of `kind`: every field of FIELDS[kind], in order; a field not given is null."""
    row = {**_EMPTY[kind], **values}  # the template's keys keep their order; a key it lacks would be appended
    if len(row) != len(_EMPTY[kind]):
        raise ValueError(f"{kind}: no field(s) {sorted(set(values) - set(FIELDS[kind]))} in Neuronpedia's {kind} rows")
    return row


def _id(*parts: Any) -> str:
    """A stable 25-character cuid-like id (Neuronpedia's ids are cuids): the same row gets the same id on re-export."""
    return "c" + hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


def _float(x: Any) -> float | None:
    return None if x is None or pd.isna(x) or not math.isfinite(float(x)) else float(x)


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False, allow_nan=False).encode() + b"\n" for r in rows)


def _created(rd: RunDir) -> str:
    ts = run_json(rd).get("created")
    when = datetime.fromtimestamp(float(ts) if isinstance(ts, (int, float)) else time.time(), tz=timezone.utc)
    return when.replace(tzinfo=None).isoformat(timespec="seconds")


def _layer_and_set(coder: str, hookpoint: str) -> tuple[str, str]:
    """(layer, source set) of a coder: `layers.9.mlp` -> '9'; the set is the coder name with `layers.9.` cut out."""
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", str(hookpoint))
    if not m:
        return slug(hookpoint), slug(coder)
    name = coder.replace(hookpoint, m.group(2)) if hookpoint in coder else coder
    return m.group(1), slug(name)


@lru_cache(maxsize=None)
def _score_metric(scorer: str) -> str:
    """The metric an ExplanationScore's value holds: balanced accuracy where the scorer has it, else its first metric."""
    from ..scoring.registry import preferred_metric

    return preferred_metric(scorer, "balanced_accuracy")


class _Writer:
    def __init__(self, out: Path, summary: ExportSummary):
        self.out, self.summary = out, summary

    def jsonl(self, rel: Path, rows: list[dict], gz: bool = False) -> None:
        data = _jsonl(rows)
        if gz:
            data, rel = gzip.compress(data, compresslevel=5, mtime=0), rel.with_name(rel.name + ".gz")
        write_bytes(self.out / rel, data)
        self.summary.files.append(rel)

    def batches(self, folder: Path, kind: str, rows: list[tuple[int, dict]]) -> None:
        """rows (latent, row) into folder/batch-<latent // BATCH>.jsonl.gz, as export-data.py batches them."""
        by: dict[int, list[dict]] = defaultdict(list)
        for latent, row in rows:
            by[latent // BATCH].append(row)
        for b in sorted(by):
            self.jsonl(folder / kind / f"batch-{b}.jsonl", by[b], gz=True)


def _contexts(rd: RunDir, summary: ExportSummary) -> pd.DataFrame | None:
    if not (rd.has(CONTEXTS) and rd.has(WINDOWS)):
        summary.skipped.append(f"no {CONTEXTS.name} or {WINDOWS.name}: no activations exported (run `interp-eval mine`)")
        return None
    ctx = rd.read(CONTEXTS, columns=["coder", "latent", "window_id", "kind", "activations", "max_activation"],
                  where={"kind": [KIND_TOP, KIND_QUANTILE]})
    ctx = ctx.sort_values(["coder", "latent", "max_activation", "window_id"], ascending=[True, True, False, True], kind="stable")
    ctx = ctx.drop_duplicates(["coder", "latent", "window_id"]).reset_index(drop=True)
    win = rd.read(WINDOWS, columns=["window_id", "tokens"], where={"window_id": sorted(set(ctx["window_id"].astype(int)))})
    tokens = {int(w): [str(t) for t in toks] for w, toks in zip(win["window_id"], win["tokens"])}
    missing = ~ctx["window_id"].astype(int).isin(list(tokens))
    if missing.any():
        summary.skipped.append(f"{int(missing.sum())} contexts whose window is not in {WINDOWS.name}")
    ctx = ctx[~missing].copy()
    ctx["tokens"] = [tokens[int(w)] for w in ctx["window_id"]]
    return ctx


def _scores(rd: RunDir, summary: ExportSummary) -> pd.DataFrame | None:
    if not rd.has(LATENT_SCORES):
        summary.skipped.append(f"no {LATENT_SCORES.name}: no explanation scores exported (run `interp-eval score`)")
        return None
    sc = rd.read(LATENT_SCORES)
    controls = sc["control"] != CONTROL_NONE
    if controls.any():
        summary.skipped.append(f"{int(controls.sum())} scores of the shuffled-explanation control")
    free = ~controls & (sc["explainer"] == NO_EXPLAINER)
    for scorer, g in sc[free].groupby("scorer"):
        summary.skipped.append(f"scorer {scorer} ({len(g)} latents): reads no explanation, and an ExplanationScore belongs to one")
    return sc[~controls & ~free].reset_index(drop=True)


def export(rd: RunDir, out: Path) -> ExportSummary:
    out = Path(out)
    summary = ExportSummary(out)
    w = _Writer(out, summary)
    lat = rd.read(LATENTS, columns=["coder", "latent", "hookpoint", "frequency", "max_activation"])
    expl, notes = explanations(rd)
    summary.skipped += notes
    ctx = _contexts(rd, summary)
    scores = _scores(rd, summary)
    created = _created(rd)
    mine, samp = mine_settings(rd), sampling(rd)
    dataset = (mine.get("corpus") or {}).get("dataset")
    release = slug(f"interp-eval-{rd.root.resolve().name}")
    types: dict[str, dict[str, dict]] = defaultdict(dict)  # config file -> name -> row

    mined, trained_elsewhere = mined_models(rd), mismatches(rd)
    used: dict[tuple[str, str], str] = {}
    for coder, cl in lat.groupby("coder", sort=True):
        hookpoint = str(cl["hookpoint"].iloc[0])
        model_name = coder_model(rd, coder, mined) or "unknown-model"
        model_id = slug(model_name)
        layer, set_name = _layer_and_set(coder, hookpoint)
        source_id = f"{layer}-{set_name}"
        if (model_id, source_id) in used:
            summary.skipped.append(f"coder {coder}: its source {model_id}/{source_id} is already coder {used[(model_id, source_id)]}'s")
            continue
        used[(model_id, source_id)] = coder
        folder = Path(model_id) / source_id
        desc = coder_description(rd, coder)
        what = " ".join(str(desc[k]) for k in ("kind", "activation") if k in desc) + (f" k={desc['k']}" if "k" in desc else "")

        w.jsonl(folder / "model.jsonl", [_row(
            "model", id=model_id, instruct="instruct" in model_id or model_id.endswith("-it"), creatorId=CREATOR_ID,
            displayNameShort=model_name, displayName=model_name, dimension=desc.get("d_in"), visibility="PUBLIC",
            inferenceEnabled=False, layers=0, neuronsPerLayer=0, createdAt=created, owner="", updatedAt=created)])
        w.jsonl(folder / "release.jsonl", [_row(
            "release", name=release, description=f"interp-eval run {rd.root.resolve().name}", creatorName=CREATOR_NAME,
            creatorId=CREATOR_ID, visibility="PUBLIC", isNewUi=False, featured=False,
            descriptionShort=f"interp-eval run {rd.root.resolve().name}", urls=[], creatorNameShort=CREATOR_NAME,
            defaultUmapSourceIds=[], createdAt=created)])
        w.jsonl(folder / "sourceset.jsonl", [_row(
            "sourceset", modelId=model_id, name=set_name, creatorId=CREATOR_ID, hasDashboards=True, visibility="PUBLIC",
            description=f"interp-eval {what or 'coder'} ({set_name})".replace("  ", " "), type="", creatorName=CREATOR_NAME,
            urls=[], releaseName=release, defaultRange=1, defaultShowBreaks=True, showDfa=False, showCorrelated=False,
            showHeadAttribution=False, showUmap=False, createdAt=created)])
        window, ctx_len, tokens = samp.get("window"), (mine.get("corpus") or {}).get("ctx_len"), mine.get("tokens")
        windows_mined = int(tokens) // int(ctx_len) * (int(ctx_len) // int(window)) if window and ctx_len and tokens else None
        w.jsonl(folder / "source.jsonl", [_row(
            "source", id=source_id, modelId=model_id, setName=set_name, creatorId=CREATOR_ID, hasDashboards=True,
            inferenceEnabled=False, inferenceHosts=[], visibility="PUBLIC", hasUmap=False, hasUmapLogSparsity=False,
            hasUmapClusters=False,
            num_prompts=windows_mined, num_tokens_in_prompt=int(window) if window else None, dataset=dataset,
            notes=f"interp-eval coder {coder} at {hookpoint}" + (f" ({what})" if what else "")
            + (f"; trained on {trained_elsewhere[coder]}, run on {model_name} (--allow-model-mismatch)" if coder in trained_elsewhere else ""),
            createdAt=created)])

        w.batches(folder, "features", [(int(r.latent), _row(
            "features", modelId=model_id, layer=source_id, index=str(int(r.latent)), creatorId=CREATOR_ID, createdAt=created,
            maxActApprox=_float(r.max_activation) or 0.0, hasVector=False, vector=[], vectorDefaultSteerStrength=10.0,
            topkCosSimIndices=[], topkCosSimValues=[], neuron_alignment_indices=[], neuron_alignment_values=[],
            neuron_alignment_l1=[], correlated_neurons_indices=[], correlated_neurons_pearson=[], correlated_neurons_l1=[],
            correlated_features_indices=[], correlated_features_pearson=[], correlated_features_l1=[], neg_str=[],
            neg_values=[], pos_str=[], pos_values=[], frac_nonzero=_float(r.frequency) or 0.0, freq_hist_data_bar_heights=[],
            freq_hist_data_bar_values=[], logits_hist_data_bar_heights=[], logits_hist_data_bar_values=[],
            decoder_weights_dist=[], sourceSetName=set_name)) for r in cl.sort_values("latent").itertuples()])

        if ctx is not None:
            rows = []
            for r in ctx[ctx["coder"] == coder].itertuples():
                values = [float(v) for v in r.activations.tolist()]
                if not values:
                    continue
                top = max(values)
                rows.append((int(r.latent), _row(
                    "activations", id=_id(model_id, source_id, int(r.latent), "window", int(r.window_id)), tokens=r.tokens,
                    index=str(int(r.latent)), layer=source_id, modelId=model_id, maxValue=top,
                    maxValueTokenIndex=values.index(top), minValue=min(values), values=values, creatorId=CREATOR_ID,
                    dataSource=dataset, dataIndex=str(int(r.window_id)), dfaValues=[], createdAt=created, lossValues=[])))
            w.batches(folder, "activations", rows)

        ex = expl[expl["coder"] == coder]
        ids: dict[tuple[int, str], str] = {}
        rows = []
        for r in ex.sort_values(["latent", "explainer"]).itertuples():
            key = (int(r.latent), str(r.explainer))
            ids[key] = _id(model_id, source_id, key[0], "explanation", key[1])
            type_name = f"interp-eval-{r.explainer}"
            model = None if pd.isna(r.explainer_model) else str(r.explainer_model)
            types["explanation_type"][type_name] = _row(
                "explanation_type", name=type_name, displayName=f"interp-eval {r.explainer} explainer",
                description=f"interp-eval's `{r.explainer}` explainer (prompt {r.prompt_version})", featured=False,
                isAttention=False, creatorName=CREATOR_NAME, creatorId=CREATOR_ID, createdAt=created, updatedAt=created)
            if model:
                types["explanation_model_type"][model] = _row(
                    "explanation_model_type", name=model, displayName=model, description=f"{model} (as interp-eval named it)",
                    featured=False, creatorName=CREATOR_NAME, createdAt=created, updatedAt=created)
            rows.append((key[0], _row(
                "explanations", id=ids[key], modelId=model_id, layer=source_id, index=str(key[0]), description=str(r.explanation),
                authorId=CREATOR_ID, typeName=type_name, explanationModelName=model,
                notes=f"interp-eval {r.explainer} explainer, prompt {r.prompt_version}, {r.n_windows} windows shown",
                createdAt=created)))
        w.batches(folder, "explanations", rows)

        if scores is not None:
            rows, unexplained, no_value = [], 0, 0
            for r in scores[scores["coder"] == coder].sort_values(["latent", "scorer", "explainer"]).to_dict("records"):
                key = (int(r["latent"]), str(r["explainer"]))
                metric = _score_metric(r["scorer"])
                value = _float(r[metric])
                unexplained += key not in ids
                no_value += key in ids and value is None
                if key not in ids or value is None:
                    continue
                type_name, model = f"interp-eval-{r['scorer']}", str(r["model"]) if r["model"] else "unknown"
                types["explanation_score_type"][type_name] = _row(
                    "explanation_score_type", name=type_name, displayName=f"interp-eval {r['scorer']}",
                    description=f"interp-eval's `{r['scorer']}` scorer", featured=False, isAttention=False,
                    scoreDescription=f"{metric} of the scorer's predictions on the latent's test windows", creatorName=CREATOR_NAME,
                    creatorId=CREATOR_ID, createdAt=created, updatedAt=created)
                types["explanation_score_model"][model] = _row(
                    "explanation_score_model", name=model, displayName=model, description=f"{model} (as interp-eval named it)",
                    featured=False, creatorName=CREATOR_NAME, createdAt=created, updatedAt=created)
                details = {"value_metric": metric, **{m: _float(r[m]) for m in METRICS},
                           **{c: None if pd.isna(r[c]) else int(r[c]) for c in _COUNTS}, "prompt_version": r["prompt_version"]}
                rows.append((key[0], _row(
                    "explanation_scores", id=_id(ids[key], "score", r["scorer"]), initiatedByUserId=CREATOR_ID, value=value,
                    explanationId=ids[key], explanationScoreTypeName=type_name, explanationScoreModelName=model,
                    jsonDetails=json.dumps(details, allow_nan=False), createdAt=created)))
            if unexplained:
                summary.skipped.append(f"{coder}: {unexplained} scores of explanations not exported")
            if no_value:
                summary.skipped.append(f"{coder}: {no_value} scores without a value (every window failed, or a class is missing)")
            w.batches(folder, "explanation_scores", rows)

    for kind in ("explanation_type", "explanation_model_type", "explanation_score_type", "explanation_score_model"):
        if types[kind]:
            w.jsonl(Path("config") / f"{kind}.jsonl", [types[kind][k] for k in sorted(types[kind])])
    return summary
