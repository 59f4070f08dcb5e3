"""Measure a scorer's power in several formats: own explanations vs the shuffled control, with its CI.

A faster or cheaper scoring format that loses its power is a regression; this bench is how a format
is chosen. For each format it copies the run's mining and explanation tables into a scratch run,
scores the first N explained latents of each coder with their own explanations and with the shuffled
control (a seeded derangement), and prints the headline metric, the control, the power with its
bootstrap 95% interval over latents, and seconds per scored window (steering: per trial, its generation included).

    python bench/scorer_power.py --run runs/demo --model local --latents 6 --formats 1 5
    python bench/scorer_power.py --run runs/demo --latents 5 --formats 1 1x16 1x8   # 1 a prompt, cut to 16 / 8 tokens
    python bench/scorer_power.py --run runs/demo --model claude --scorer fuzzing --formats 5
    python bench/scorer_power.py --run runs/demo --formats 1x16 --negatives random neighbours similar  # hard negatives
    python bench/scorer_power.py --run runs/demo --scorer steering --steering-scale 2 4 --latents 20  # steering scales

Not run in CI (the offline model scores windows slowly; README has the measured seconds a window).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from interp_eval.artifacts import RunDir
from interp_eval.catalog import CONTEXTS, EXPLANATIONS, LATENT_SCORES, LATENTS, MANIFEST, PREDICTIONS, RUN_JSON, WINDOWS
from interp_eval.llm import LLMConfig
from interp_eval.scoring import run_score_stage
from interp_eval.scoring.registry import get_scorer
from interp_eval.scoring.stage import ScoreConfig

COPIED = (LATENTS, WINDOWS, CONTEXTS, EXPLANATIONS, MANIFEST, RUN_JSON)  # what scoring reads of the run


def parse_format(text: str) -> tuple[int, int | None]:
    """"5" = 5 whole windows a prompt; "1x16" = 1 window a prompt, cut to 16 tokens around its peak."""
    wpp, _, cut = text.partition("x")
    return int(wpp), int(cut) if cut else 0


def measure(run: Path, llm_cfg: LLMConfig, scorer: str, fmt: str, latents: int, explainers, n_test: int, scratch: Path,
            negatives: str = "random", steering_scale: float | None = None) -> list[dict]:
    wpp, cut = parse_format(fmt)
    label = f"{wpp} a prompt" + (f", {cut} tokens" if cut else ", whole windows") + f", {negatives} negatives"
    extra = {}
    if steering_scale is not None:  # steering reads no window: its format is the scale
        label, extra = f"scale {steering_scale:g}", {"steering_scale": steering_scale}
    work = scratch / f"{scorer}-{fmt}-{negatives}-{steering_scale}"
    work.mkdir(parents=True)
    for entry in COPIED:
        if (run / entry.name).exists():
            shutil.copy2(run / entry.name, work / entry.name)
    t = time.perf_counter()
    cfg = ScoreConfig(scorers=(scorer,), latents=latents, windows_per_prompt=wpp, explainers=explainers,
                      n_activating=n_test, n_negative=n_test, window_tokens=cut, negatives=negatives, **extra)
    out = run_score_stage(work, cfg, llm_cfg)
    seconds = time.perf_counter() - t
    scored_windows = len(RunDir(work).read(PREDICTIONS, columns=["latent"]))
    rows = []
    for r in out["summary"]:
        rows.append({"format": label, "coder": r["coder"], "explainer": r["explainer"], "metric": r["power_metric"],
                     "own": r["power_own"], "control": r["power_control"], "power": r["power"],
                     "ci": f"[{r['power_ci_low']:+.3f}, {r['power_ci_high']:+.3f}]", "latents": r["power_latents"],
                     "has_power": r["has_power"]})
    metric = rows[0]["metric"] if rows else "auc"
    p = pooled_power(RunDir(work).read(LATENT_SCORES), scorer if negatives == "random" else f"{scorer}@{negatives}", metric,
                     get_scorer(scorer).chance(cfg))
    rows.append({"format": label, "coder": "(all)", "explainer": ",".join(sorted({r["explainer"] for r in rows})), "metric": metric,
                 "own": p.own, "control": p.control, "power": p.power, "ci": f"[{p.ci_low:+.3f}, {p.ci_high:+.3f}]",
                 "latents": p.latents, "has_power": p.has_power,
                 "s/window": seconds / max(1, scored_windows)})
    return rows


def pooled_power(scores: pd.DataFrame, scorer: str, metric: str = "auc", chance: float | None = None):
    """Power pooled over coders (latent_scores rows of one scorer): every latent's own minus shuffled-control metric,
    paired per (coder, latent), or minus `chance` for a scorer measured against chance (the intruder), with its
    bootstrap 95% interval (controls.Power)."""
    from interp_eval.scoring.controls import chance_power, paired_power

    scores = scores[scores["scorer"] == scorer].assign(latent=lambda d: d["coder"] + ":" + d["latent"].astype(str))
    if chance is not None:
        return chance_power(scores[scores["control"] == "none"], metric, chance)
    return paired_power(scores[scores["control"] == "none"], scores[scores["control"] == "shuffled"], metric)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a run with mining tables and explanations.parquet")
    ap.add_argument("--model", default=None, help="scorer LLM (default: the offline local model)")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--scorer", default="detection")
    ap.add_argument("--formats", nargs="+", default=["1", "5"],
                    help="formats to compare: windows a prompt, optionally x tokens a window (1x16)")
    ap.add_argument("--latents", type=int, default=6, help="explained latents per coder")
    ap.add_argument("--n-test", type=int, default=10, help="activating and non-activating test windows per latent (each)")
    ap.add_argument("--explainer", action="append", default=None, help="only these explainers' explanations")
    ap.add_argument("--negatives", nargs="+", default=["random"], help="non-activating windows: random, neighbours, similar")
    ap.add_argument("--steering-scale", nargs="+", type=float, default=None, help="steering: the scales to compare")
    args = ap.parse_args()
    llm_cfg = LLMConfig(model=args.model, base_url=args.base_url)
    rows = []
    with tempfile.TemporaryDirectory(prefix="scorer-power-") as scratch:
        for fmt in args.formats:
            for negatives in args.negatives:
                for scale in args.steering_scale or [None]:
                    rows += measure(args.run, llm_cfg, args.scorer, fmt, args.latents, args.explainer, args.n_test, Path(scratch),
                                    negatives, scale)
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
