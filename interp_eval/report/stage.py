"""The `report` stage: tables (Markdown + CSV), the paper's claims judged, plots, and one self-contained HTML page.

Reads whatever the earlier stages wrote (see inputs.py); a missing artifact leaves its parts out with
a note. Writes into RUN/results/ (or `out_dir`):

- `coders.csv` / `coders.md`: one row per coder: FVU, CE loss increase, L0, dead and ultra-high-
  frequency fractions, detection/fuzzing F1 and balanced accuracy (mean, 95% CI), frequency-weighted
  F1, embedding AUC, coverage, LLM calls and cost;
- `scorers.csv` / `scorers.md`: per coder, scorer and explainer: the headline metric, its control and the
  scorer's power with its 95% interval (a scorer without power judges no claim);
- `explanations.csv` / `explanations.md`: per coder and explainer: explained latents, distinct
  explanations, diversity (distinct / explained) and copies of the explainer's few-shot answers;
- `llm_usage.csv` / `llm_usage.md`: LLM calls, tokens and cost per stage and model;
- `claims.md`: the paper's five qualitative claims, each reproduced / not reproduced / not measurable
  (`claims.csv`: each verdict in one row, for comparing two runs: bench/verdict_agreement.py);
- `fvu_curve.csv` / `fvu_curve.md`: per coder, the smoothed training FVU at 25/50/75/100% of its tokens and
  whether it flattened (fvu_curves.py);
- `seeds.csv` / `seed_comparisons.csv` / `seeds.md`: per group of coders differing only by seed, the spread over
  seeds, and whether binary-vs-continuous differences exceed it (seeds.py);
- `plots/*.png`; `report.html` (tables, claims, plots and a feature browser; opens from disk).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from ..artifacts import atomic_path, config_hash
from ..catalog import RESULTS_DIR
from ..config_fields import NOT_AN_OPTION
from ..errors import UserError
from ..mining.outputs import mismatch_lines
from .browser import BrowserConfig, build_browser
from .claims import claims_markdown, evaluate_claims, pairs_note
from .fvu_curves import FVU_CURVE_NOTE, fvu_curve_display, fvu_curve_table, fvu_curves
from .html import png_data_uri, write_html
from .inputs import load_run
from .plots import make_plots
from .seeds import COMPARISON_NOTE, SEEDS_NOTE, comparison_display, seed_comparisons, seed_display, seed_table
from .tables import EXPLANATION_NOTE, POWER_NOTE, USAGE_NOTE, RANDOM_MODEL_NOTE, explanation_table, random_model_display, random_model_table, coder_table, display_table, scorer_display, scorer_table, to_markdown, usage_display, usage_table


@dataclass
class ReportConfig:
    uhf_threshold: float = 0.01
    """Firing rate above which a latent counts as ultra-high-frequency (claim 4)."""
    top_quantiles: int = 2
    """Activation deciles counted as 'high activations' for claim 3 (2: deciles 8-9)."""
    seed: int = 0
    """Bootstrap seed."""
    plots: bool = True
    """Write the PNG plots (--no-plots skips them)."""
    browser: BrowserConfig = field(default_factory=BrowserConfig, metadata=NOT_AN_OPTION)
    """The HTML feature browser (its own options)."""

    def __post_init__(self):
        if not 0 < self.uhf_threshold < 1:
            raise UserError(f"--uhf-threshold {self.uhf_threshold}: give a firing rate between 0 and 1 (e.g. 0.01)")
        if not 1 <= self.top_quantiles <= 9:
            raise UserError(f"--top-quantiles {self.top_quantiles}: give 1-9 deciles")


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _write_table(written: dict[str, Path], out: Path, name: str, title: str, note: str, table: pd.DataFrame,
                 shown: pd.DataFrame) -> None:
    """`name`.csv (the table) and `name`.md (a title, its note and the table as shown), recorded in `written`."""
    written[f"{name}_csv"] = _write_csv(out / f"{name}.csv", table)
    written[f"{name}_md"] = _write_text(out / f"{name}.md", f"# {title}\n\n{note}\n\n{to_markdown(shown)}")


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


CODER_TABLE_NOTE = (
    "One row per coder. FVU, CE loss increase (nats, spliced - clean), L0, dead and ultra-high-frequency (UHF) "
    "fractions come from the reconstruction eval (recon_eval.parquet; dead/UHF fall back to the mining pass). "
    "Scores are means over scored latents with a bootstrap 95% interval; freq-weighted F1 is the paper's "
    "sum_i F1_i c_i / sum_i c_i per hookpoint (c_i: firing count). Coverage: latents scored / too rare to "
    "explain / dead / failed (explanation or scoring) of all latents. LLM calls and cost: explain + score."
)


def run_report_stage(run: str | Path, cfg: ReportConfig | None = None, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write the report of a run directory; returns {name: path} of every file written."""
    cfg = cfg or ReportConfig()
    data = load_run(run)
    rd = data.rd
    out = Path(out_dir) if out_dir is not None else rd.path(RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    command = f"interp-eval report --run {rd.root}" + (f" --out {out}" if out_dir is not None else "")
    written: dict[str, Path] = {}

    table = coder_table(data)
    shown = display_table(table)
    warnings = mismatch_lines(data.latents) if data.has("latents") else []  # coders mined on a model they were not trained on
    written["coders_csv"] = _write_csv(out / "coders.csv", table)
    md = [f"# Coders: {rd.root.name}", "", f"Made by `{command}` on {generated}.", "", *[f"**Warning:** {w}.\n" for w in warnings],
          CODER_TABLE_NOTE, "", to_markdown(shown)]
    if data.notes:
        md += ["", "Left out:", *[f"- {n}" for n in data.notes]]
    written["coders_md"] = _write_text(out / "coders.md", "\n".join(md) + "\n")

    power = scorer_table(data)
    power_shown = scorer_display(power)
    randoms = random_model_table(data, seed=cfg.seed)
    randoms_shown = random_model_display(randoms)
    if len(power):
        written["scorers_csv"] = _write_csv(out / "scorers.csv", power)
        md = f"# Scorers and their power: {rd.root.name}\n\n{POWER_NOTE}\n\n{to_markdown(power_shown)}"
        if len(randoms):
            written["random_model_csv"] = _write_csv(out / "random_model.csv", randoms)
            md += f"\n## Trained vs random-model coders\n\n{RANDOM_MODEL_NOTE}\n\n{to_markdown(randoms_shown)}"
        written["scorers_md"] = _write_text(out / "scorers.md", md)

    expl = explanation_table(data)
    if len(expl):
        _write_table(written, out, "explanations", f"Explanations: {rd.root.name}", EXPLANATION_NOTE, expl, expl.astype(str))

    usage = usage_table(data)
    if len(usage):
        _write_table(written, out, "llm_usage", f"LLM usage: {rd.root.name}", USAGE_NOTE, usage, usage_display(usage))

    claims = evaluate_claims(data, table, uhf_threshold=cfg.uhf_threshold, top_quantiles=cfg.top_quantiles, seed=cfg.seed)
    note = pairs_note(data)
    written["claims_md"] = _write_text(out / "claims.md", claims_markdown(claims, note))
    written["claims_csv"] = _write_csv(out / "claims.csv", pd.DataFrame(
        [{"claim": c.number, "text": c.claim, "verdict": c.verdict, "borderline": c.borderline, "comparisons": len(c.cells)}
         for c in claims]))

    curve = fvu_curve_table(data)
    curve_shown = fvu_curve_display(curve)
    if len(curve):
        _write_table(written, out, "fvu_curve", f"Training length: {rd.root.name}", FVU_CURVE_NOTE, curve, curve_shown)

    seeds = seed_table(data)
    seeds_shown = seed_display(seeds)
    seed_comp = seed_comparisons(data, seeds)
    seed_comp_shown = comparison_display(seed_comp)
    if len(seeds):
        written["seeds_csv"] = _write_csv(out / "seeds.csv", seeds)
        written["seed_comparisons_csv"] = _write_csv(out / "seed_comparisons.csv", seed_comp)
        written["seeds_md"] = _write_text(out / "seeds.md", f"# Across-seed spread: {rd.root.name}\n\n{SEEDS_NOTE}\n\n{to_markdown(seeds_shown)}"
                                          f"\n## Binary vs continuous against the seed spread\n\n{COMPARISON_NOTE}\n\n"
                                          f"{to_markdown(seed_comp_shown) if len(seed_comp) else 'No matched pairs.'}")

    plots = [*make_plots(data, out / "plots"), fvu_curves(data, out / "plots")] if cfg.plots else []
    for p in plots:
        if p.path is not None:
            written[f"plot_{p.name}"] = p.path

    browser, browser_notes = build_browser(data, cfg.browser)
    payload = {
        "meta": {"run": str(rd.root.resolve()), "run_name": rd.root.name, "generated": generated, "command": command},
        "notes": [*data.notes, *browser_notes],
        "warnings": warnings,
        "pairs_note": note,
        "claims": [c.to_dict() for c in claims],
        "tables": [
            {"id": "coders", "title": "Coders", "note": CODER_TABLE_NOTE, "columns": list(shown.columns), "rows": shown.astype(str).values.tolist()},
            *([{"id": "scorers", "title": "Scorers and their measured power", "note": POWER_NOTE,
                "columns": list(power_shown.columns), "rows": power_shown.astype(str).values.tolist()}] if len(power) else []),
            *([{"id": "random_model", "title": "Trained vs random-model coders", "note": RANDOM_MODEL_NOTE,
                "columns": list(randoms_shown.columns), "rows": randoms_shown.astype(str).values.tolist()}] if len(randoms) else []),
            *([{"id": "explanations", "title": "Explanations: diversity per coder and explainer", "note": EXPLANATION_NOTE,
                "columns": list(expl.columns), "rows": expl.astype(str).values.tolist()}] if len(expl) else []),
            *([{"id": "llm_usage", "title": "LLM usage by stage and model", "note": USAGE_NOTE,
                "columns": list(usage_display(usage).columns), "rows": usage_display(usage).values.tolist()}] if len(usage) else []),
            *([{"id": "fvu_curve", "title": "Training length: has FVU flattened?", "note": FVU_CURVE_NOTE,
                "columns": list(curve_shown.columns), "rows": curve_shown.values.tolist()}] if len(curve) else []),
            *([{"id": "seeds", "title": "Across-seed spread", "note": SEEDS_NOTE,
                "columns": list(seeds_shown.columns), "rows": seeds_shown.values.tolist()},
               {"id": "seed_comparisons", "title": "Binary vs continuous against the seed spread", "note": COMPARISON_NOTE,
                "columns": list(seed_comp_shown.columns), "rows": seed_comp_shown.values.tolist()}] if len(seeds) else []),
        ],
        "plots": [{"name": p.name, "title": p.title, "note": p.note, "src": png_data_uri(p.path) if p.path else None} for p in plots],
        "browser": browser,
    }
    written["html"] = write_html(out / "report.html", payload)

    def rel(p: Path) -> str:
        try:
            return str(p.resolve().relative_to(rd.root.resolve()))
        except ValueError:
            return str(p)

    rd.mark_complete("report", config_hash(asdict(cfg)), [rel(p) for p in written.values()])
    return written
