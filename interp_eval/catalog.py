"""The catalog of the run directory: every file a stage writes, its Parquet schema, its writer and its meaning.

This module is the contract between the stages. Each stage reads the tables of the stages before it
and writes its own, always through `RunDir.read` / `RunDir.write` (artifacts.py), which check a table
against its entry here on both sides: a file that lacks a column, or holds one of the wrong type,
stops the reader with one line naming the file and the command that rewrites it. Search this module
for a file name to find what it holds, which stage writes it and, with `grep -rn <CONSTANT>`, who
reads it. Adding an artifact is one `Table` entry; adding a column is one field of its schema (with a
default in `defaults` when files written before it must stay readable).

Stages and their files, in pipeline order:

    train    coders/<name>/ (SAELens folders), train_metrics.parquet, recon_eval.parquet
    mine     latents.parquet, windows.parquet, contexts.parquet
    explain  explanations.parquet                       + llm_usage.parquet (the LLM ledger)
    score    predictions.parquet, latent_scores.parquet, score_summary.parquet, score_by_quantile.parquet,
             score_by_frequency.parquet (--freq-adjust), window_embeddings.parquet
                                                        + llm_usage.parquet
    report   results/ (Markdown, CSV, PNG, report.html)

Every table keys its rows by `coder` (the coder's folder name) and `latent` (int64) where it has them.

Which run wrote a file. `manifest.jsonl` holds one line per finished stage run (per coder for train),
written after its files are in place (artifacts.py); a run that replaces an earlier run's files (mine
with a new config or --force) first writes a `started` line, once its inputs were checked. Tables
marked `one_run` (the three mining files) only make sense as one set from one run, so each such file
carries the id of the run that wrote it (Parquet key-value metadata `interp_eval.run`), the `run` its
manifest line records. `RunDir.read` (every reader) reads such a file only when:
  - the stage's latest manifest line is `complete` and records the file's id (the stage's own output), or
  - the stage has no manifest line and the file no id: a hand-made input (tests/run_builders.py writes
    Parquet directly), read as it is. So is an unstamped file under a line without `run` (older runs).
It refuses, in one line naming the command to re-run, a latest line that says `started` (a re-run
that did not finish: the files are not what was asked for) and an id the latest line does not record
(a run stopped between writing its files, so the set is mixed, or a file replaced by hand). Tables
that grow over several runs (explanations, predictions, the LLM ledger) carry no id: their rows say
what they were made from (`explanations.mine_config`, `predictions.explanation_sha`): explain explains
afresh, and score leaves out, a latent explained from an earlier mining run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import pyarrow as pa

# -- enumerations of the contract -------------------------------------------------------------------------
# The order of STATUSES, KINDS and SPLITS is the order of the int8 codes the mining pass keeps in memory.

STATUS_OK, STATUS_TOO_RARE, STATUS_DEAD = "ok", "too_rare", "dead"
STATUSES = (STATUS_OK, STATUS_TOO_RARE, STATUS_DEAD)  # latents.status

KIND_TOP, KIND_QUANTILE, KIND_NEGATIVE = "top", "quantile", "random_negative"
KIND_NEIGHBOUR, KIND_SIMILAR = "neighbour_negative", "similar_negative"  # hard negatives (mining/hard_negatives.py)
KINDS = (KIND_TOP, KIND_QUANTILE, KIND_NEGATIVE, KIND_NEIGHBOUR, KIND_SIMILAR)  # contexts.kind
NEGATIVES = {"random": KIND_NEGATIVE, "neighbours": KIND_NEIGHBOUR, "similar": KIND_SIMILAR}  # score --negatives -> kind
SPLIT_DISPLAY, SPLIT_EXPLAIN, SPLIT_TEST = "display", "explain", "test"
SPLITS = (SPLIT_DISPLAY, SPLIT_EXPLAIN, SPLIT_TEST)  # contexts.split

EXPLAINER_LLM, EXPLAINER_TOKEN_TABLE = "llm", "token-table"
# the output-centric explainers: the LLM reads the windows and the latent's output tokens, or the output tokens alone
EXPLAINER_LLM_OUTPUTS, EXPLAINER_OUTPUT = "llm-outputs", "output"
LLM_EXPLAINERS = (EXPLAINER_LLM, EXPLAINER_LLM_OUTPUTS, EXPLAINER_OUTPUT)  # explainers that ask an LLM
EXPLAINERS = (*LLM_EXPLAINERS, EXPLAINER_TOKEN_TABLE)  # explanations.explainer
NO_EXPLAINER = "none"  # the explainer column of scores by scorers that read no explanation
CONTROL_NONE, CONTROL_SHUFFLED = "none", "shuffled"
CONTROLS = (CONTROL_NONE, CONTROL_SHUFFLED)  # predictions.control: the score, or its shuffled control

METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc",  # per-latent metrics (scoring/metrics.py)
           "correlation", "correlation_firing")  # the simulation scorer's (scoring/simulation.py); null for the others
UNIFORM = "uniform"  # score_by_quantile.quantile of a binary coder's activating windows (no activation order)
UHF_THRESHOLDS = (0.01, 0.1)  # firing rates above which a latent counts as ultra-high-frequency


@dataclass(frozen=True)
class Table:
    """One Parquet file of the run directory.

    defaults: columns a file may lack, with the value they read as: columns added after files were
    written (so older runs stay readable), or written only in some configurations (None). Every
    other column of `schema` is required. A reader sees exactly the catalog's columns; a writer may
    write no column the catalog does not declare.
    """

    name: str
    stage: str  # the command that writes it: `interp-eval <stage>`
    meaning: str
    schema: pa.Schema
    defaults: Mapping[str, Any] = field(default_factory=dict)
    doc: str = ""  # the columns in detail, where the schema's names do not say enough
    one_run: bool = False  # written whole by one run of its stage, with the stage's other one_run tables (see the module)

    def __str__(self) -> str:
        return self.name

    @property
    def commands(self) -> str:
        """The command(s) that write it, for messages: `interp-eval explain` or `interp-eval score`."""
        return " or ".join(f"`interp-eval {s}`" for s in self.stage.split(" / "))

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    def empty(self) -> pa.Table:
        return self.schema.empty_table()


@dataclass(frozen=True)
class Folder:
    """A file or folder of the run directory that is not a Parquet table."""

    name: str
    stage: str
    meaning: str

    def __str__(self) -> str:
        return self.name


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema(list(fields))


_str, _i8, _i32, _i64, _f32, _f64, _bool = pa.string(), pa.int8(), pa.int32(), pa.int64(), pa.float32(), pa.float64(), pa.bool_()
_TOKENS = (("input_tokens", _i64), ("output_tokens", _i64), ("cache_read_tokens", _i64), ("cache_write_tokens", _i64))
_COST_PARTS = (("input_cost_usd", _f64), ("cache_read_cost_usd", _f64), ("cache_write_cost_usd", _f64), ("output_cost_usd", _f64))

# -- the run itself --------------------------------------------------------------------------------------------

RUN_JSON = Folder("run.json", "every stage", "config, package versions and seeds of each stage that ran")
MANIFEST = Folder("manifest.jsonl", "every stage", "one line per finished stage run (status complete, with the run id "
                  "its one_run files carry) or started re-run (status started); a stage counts as finished only once its "
                  "complete line is written, after its files were renamed into place")

# -- train -----------------------------------------------------------------------------------------------------

CODERS_DIR = Folder("coders", "train", "coders/<name>/: one SAELens folder per coder (cfg.json, sae_weights.safetensors, "
                    "sparsity.safetensors)")
ACTIVATIONS_DIR = Folder("activations", "train", "cached subject-model activations the coders train on")
CHECKPOINTS_DIR = Folder("checkpoints", "train, mine", "resume state of an unfinished training or mining pass")

TRAIN_METRICS = Table(
    "train_metrics.parquet", "train", "one row per (coder, logged training step): FVU, L0, dead fraction on the training batch",
    _schema(("coder", _str), ("step", _i64), ("tokens", _i64), ("fvu", _f64), ("l0", _f64), ("dead_fraction", _f64),
            ("lr", _f64), ("elapsed_s", _f64)),
)

RECON_EVAL = Table(
    "recon_eval.parquet", "train", "one row per coder: reconstruction on held-out tokens (FVU, CE loss spliced vs clean, L0, "
    "dead and ultra-high-frequency fractions)",
    _schema(("coder", _str), ("hookpoint", _str), ("kind", _str), ("activation", _str), ("k", _i64), ("d_sae", _i64),
            ("eval_tokens", _i64), ("fvu", _f64), ("l0", _f64), ("dead_fraction", _f64), ("ce_clean", _f64), ("ce_spliced", _f64),
            ("ce_loss_increase", _f64), ("accuracy_clean", _f64), ("accuracy_spliced", _f64), ("accuracy_decrease", _f64),
            *((f"uhf_fraction_{t:g}", _f64) for t in UHF_THRESHOLDS)),
    doc="kind: sae | transcoder; activation: topk | binary; accuracy_*: next-token accuracy of the subject model, clean and "
        "with the coder's reconstruction spliced in.",
)

# -- mine ------------------------------------------------------------------------------------------------------

_MINE_DOC = """\
One streaming pass of the subject model over `--tokens` held-out tokens (never a training token)
feeds every coder of the run at once. Each context (default 256 tokens) is cut into non-overlapping
windows of `--window` tokens (default 32); windows never cross a context boundary, and the last
`ctx_len % window` tokens of a context (none with the defaults) belong to no window, although they
still count towards the firing counts. A window is identified by
`window_id = context * (ctx_len // window) + position // window`.

Sampling uses seeded integer hashes of (window_id, latent) rather than a random-number stream, so
the result does not depend on batch size or on how torchrun ranks shard the tokens: a 2-process
run gives exactly the rows of a 1-process run.

Example (pandas): the explanation windows of latent 7 with their tokens::

    ctx = pd.read_parquet("RUN/contexts.parquet")
    win = pd.read_parquet("RUN/windows.parquet")
    ex = ctx.query("coder == 'sae-layers.9.mlp-k32' and latent == 7 and split == 'explain'")
    ex = ex.merge(win, on="window_id")
"""

LATENTS = Table(
    "latents.parquet", "mine", "one row per (coder, latent), every latent of every coder, none dropped: firing counts and status",
    _schema(("coder", _str), ("latent", _i64), ("hookpoint", _str), ("binary", _bool), ("firing_count", _i64), ("n_tokens", _i64),
            ("frequency", _f64), ("max_activation", _f32), ("n_windows", _i64), ("status", _str),
            ("trained_on", _str), ("mined_on", _str), ("model_mismatch", _bool),
            ("promotes", pa.list_(_str)), ("promote_logits", pa.list_(_f32)), ("suppresses", pa.list_(_str)),
            ("suppress_logits", pa.list_(_f32)), ("output_note", _str), ("neighbours", pa.list_(_i64))),
    # files from before --allow-model-mismatch, and from before output tokens
    defaults={"trained_on": None, "mined_on": None, "model_mismatch": False, "promotes": None, "promote_logits": None,
              "suppresses": None, "suppress_logits": None, "neighbours": None,
              "output_note": "mined before interp-eval recorded output tokens: mine again with --force"},
    doc="""\
| column         | type    | meaning                                                             |
|----------------|---------|---------------------------------------------------------------------|
| coder          | string  | coder name (its folder name)                                        |
| latent         | int64   | latent index                                                        |
| hookpoint      | string  | MLP hookpoint it reads, e.g. `layers.9.mlp`                          |
| binary         | bool    | binary coder (every activation is 0 or 1)                           |
| firing_count   | int64   | tokens with activation > 0 (the c_i of the frequency-weighted score) |
| n_tokens       | int64   | tokens seen                                                         |
| frequency      | float64 | firing_count / n_tokens                                             |
| max_activation | float32 | largest activation over all tokens (0 when dead)                    |
| n_windows      | int64   | windows in which the latent fires at least once                     |
| status         | string  | `ok`; `too_rare` (n_windows < min_examples, default 200: not to be explained, still sampled); `dead` (never fired) |
| trained_on     | string, null | the model the coder's folder says it was trained on (`metadata.model_name`; null when it names none) |
| mined_on       | string  | the model whose activations were mined: the subject model, or its random-model control `random:<model>:<seed>` |
| model_mismatch | bool    | trained_on names another model than mined_on: mined with `--allow-model-mismatch` (e.g. a base-model coder on the instruct subject); its results describe the coder on a model it was not trained on |
| promotes       | list<string>, null | the `--output-tokens` tokens the latent's decoder row raises most through the final norm and the unembedding (its output-centric view, subject/logit_lens.py), most raised first; null when `output_note` says why not |
| promote_logits | list<float32>, null | their logits (a residual of RMS 1 along the row, the zero vector's logits subtracted) |
| suppresses     | list<string>, null | the tokens it lowers most, most lowered first |
| suppress_logits| list<float32>, null | their logits (negative) |
| output_note    | string, null | why the latent has no output tokens (e.g. a coder writing to the MLP's normalised input; `--output-tokens 0`); null when it has them |
| neighbours     | list<int64>, null | the 10 other latents of the coder whose decoder rows are nearest by cosine, nearest first (the source of `neighbour_negative` windows) |
""" + "\n" + _MINE_DOC,
    one_run=True,
)

WINDOWS = Table(
    "windows.parquet", "mine", "every window referenced by contexts.parquet, each stored once, with its tokens",
    _schema(("window_id", _i64), ("context", _i64), ("position", _i32), ("token_ids", pa.list_(_i32)), ("tokens", pa.list_(_str))),
    doc="""\
| column    | type               | meaning                                                         |
|-----------|--------------------|-----------------------------------------------------------------|
| window_id | int64              | see latents.parquet's notes                                     |
| context   | int64              | index of the context in the held-out token stream               |
| position  | int32              | offset of the window's first token in its context               |
| token_ids | list<int32>        | the window's tokens                                             |
| tokens    | list<string>       | each token decoded on its own (`tokenizer.decode([id])`; a token holding part of a multi-byte character decodes to U+FFFD) |
""",
    one_run=True,
)

CONTEXTS = Table(
    "contexts.parquet", "mine", "one row per (coder, latent, sampled window): the windows that explain, test and display a latent",
    _schema(("coder", _str), ("latent", _i64), ("window_id", _i64), ("kind", _str), ("split", _str), ("quantile", _i8),
            ("rank", _i32), ("activations", pa.list_(pa.float32())), ("max_activation", _f32)),
    doc="""\
| column         | type          | meaning                                                       |
|----------------|---------------|---------------------------------------------------------------|
| coder          | string        |                                                               |
| latent         | int64         |                                                               |
| window_id      | int64         | join with `windows.parquet`                                   |
| kind           | string        | `top`, `quantile`, `random_negative`, `neighbour_negative` or `similar_negative` |
| split          | string        | `display`, `explain` or `test`                                |
| quantile       | int8, null    | activation decile 0 (lowest) - 9 of a `quantile` row; null for binary coders and other kinds (plain pandas reads it as float with NaN; `dtype_backend="numpy_nullable"` keeps Int8) |
| rank           | int32         | order within (coder, latent, kind, split): 0 = highest for `top` |
| activations    | list<float32> | the latent's activation at each token of the window           |
| max_activation | float32       | max of `activations` (0 for the three negative kinds)         |

Kinds, per latent:
- `top` / `display`: the `--n-top` (20) windows with the largest max activation, for the feature
  browser; never used as explainer or test data. Ties (always, for binary coders) are broken by a
  seeded hash, i.e. at random.
- `quantile` / `explain` and `quantile` / `test`: drawn from a uniform sample ("reservoir", default
  200) of the latent's activating windows. The sample, sorted by window max activation, is cut into
  10 equal-count bins (the `quantile` column); each bin gives n_explain/10 (4) explanation and
  n_test/10 (5) test windows, so 40 + 50 by default, over the same quantiles and disjoint by
  construction. A latent with fewer sampled windows than n_explain + n_test splits all of them in the
  same proportion, at least one of each once it has two. A bin's share that it cannot hold (a total
  below 10 lands in the upper bins; a small sample leaves bins empty or short) goes to the bins that
  can, highest first, so every latent gets its full counts (an `ok` latent with 2+ sampled windows
  has explanation and test windows whenever both counts are 1+). Binary coders have no activation order: their windows are sampled uniformly and
  `quantile` is null.
- `random_negative` / `test`: `--n-negative` (50) windows in which the latent fires at no token,
  taken from one uniform random pool of windows (`--negative-pool`, 500) whose full codes are kept,
  so "does not fire" is read from the recorded activations, not assumed. Dead latents get none
  (they have no rows at all).
- `neighbour_negative` / `test` (delphi's neighbour negatives): up to `--n-negative` pool windows where
  the latent fires at no token but one of its 10 nearest latents by decoder cosine (latents.parquet
  `neighbours`) fires, nearest neighbour first: text a vague explanation would also claim.
- `similar_negative` / `test`: up to `--n-negative` pool windows where the latent fires at no token, most
  similar (MiniLM cosine) to the mean embedding of the pool windows where it fires: text like its own,
  without it. None for a latent that fires in no pool window (raise `--negative-pool`), and none at all
  when the sentence embedder is not installed.
""",
    one_run=True,
)

# -- explain ---------------------------------------------------------------------------------------------------

EXPLANATIONS = Table(
    "explanations.parquet", "explain", "one row per (coder, latent, explainer): the explanation, or why there is none",
    _schema(("coder", _str), ("latent", _i64),
            ("explainer", _str),        # llm | llm-outputs | output | token-table
            ("explanation", _str),      # null when it failed
            ("explainer_model", _str), ("prompt_version", _str),
            ("n_windows", _i64),        # explanation windows shown
            ("parse_ok", _bool),
            ("failure", _str),          # why there is no explanation
            ("attempts", _i64),         # answers asked for (1 + corrective retries); its tokens and dollars are in llm_usage
            ("raw_answer", _str),       # the last answer as the LLM gave it
            ("mine_config", _str)),     # config hash of the mining run it explains: re-mined coders are explained afresh
    defaults={"explainer": EXPLAINER_LLM, "mine_config": None},
)

# -- score -----------------------------------------------------------------------------------------------------

_SCORE_KEY = (("coder", _str), ("latent", _i64), ("scorer", _str), ("explainer", _str), ("control", _str))
SCORE_KEY = tuple(name for name, _ in _SCORE_KEY)  # one score: predictions, latent_scores and the ledger's score calls
_OLD_SCORES = {"explainer": EXPLAINER_LLM, "control": CONTROL_NONE}  # rows from before explainers and controls existed

PREDICTIONS = Table(
    "predictions.parquet", "score", "one row per (coder, latent, scorer, explainer, control, test window; per trial for the "
    "intruder): the scorer's decision. Control rows (`shuffled`) never enter the scores",
    _schema(
        ("coder", _str), ("latent", _i64),
        ("scorer", _str),             # a registered scorer (scoring/registry.py)
        ("explainer", _str),          # which explainer's explanation was scored; "none" for explanation-free scorers
        ("control", _str),            # "none" (the score) or "shuffled" (scored with source_latent's explanation)
        ("source_latent", _i64),      # whose explanation / reference windows were used (= latent unless a control)
        ("window_id", _i64),
        ("label", _i8),               # 1 activating (quantile/test), 0 not (random_negative/test); intruder: 1
        ("prediction", _i8),          # the scorer's 0/1 (intruder: named the intruder); null when it failed or has none
        ("probability", _f64),        # P("1") from token logprobs; null without logprobs (Anthropic)
        ("similarity", _f64),         # embedding scorers: cosine similarity; else null
        ("answer", _i32),             # intruder: the position the LLM named; else null
        ("parse_ok", _bool),
        ("failure", _str),            # null, "parse: ...", or "llm: ..." (provider error after retries)
        ("attempts", _i32),           # answers asked for this window's prompt (1 + corrective retries)
        ("model", _str),
        ("quantile", _i8),            # activation decile of an activating window; null for binary coders / negatives
        ("prompt_version", _str),     # the scorer's version (prompt templates or code)
        ("explanation_sha", _str),    # first 12 hex of sha256(explanation or reference): a new one is scored anew
        ("prompt_index", _i32),       # which prompt of the latent (shuffled order)
        ("position", _i32),           # 1-based place of the window in that prompt (intruder: the true position)
        ("windows_per_prompt", _i32),
        ("seed", _i64),
        ("simulated", pa.list_(_f32)),  # simulation: the simulator's predicted activation per token of the window; else null
        ("actual", pa.list_(_f32)),     # simulation: the latent's true activation per token of the window; else null
    ),
    defaults={**_OLD_SCORES, "source_latent": None, "simulated": None, "actual": None},  # a null source_latent reads as the row's own latent (scoring)
)

LATENT_SCORES = Table(
    "latent_scores.parquet", "score", "one row per (coder, latent, scorer, explainer, control): the metrics over the windows "
    "that got a prediction (scoring/aggregate.py), the latent's firing rate and, for LLM scorers, its calls and dollars",
    _schema(
        *_SCORE_KEY, ("source_latent", _i64), ("model", _str), ("prompt_version", _str),
        ("n", _i64), ("failures", _i64), ("n_activating", _i64), ("n_negative", _i64),
        *((m, _f64) for m in METRICS), ("n_probabilities", _i64), ("tp", _i64), ("fp", _i64), ("tn", _i64), ("fn", _i64),
        ("hookpoint", _str), ("binary", _bool), ("frequency", _f64), ("firing_count", _i64),  # from latents.parquet
        ("explanation", _str), ("explainer_model", _str),  # from explanations.parquet (null for explanation-free scorers)
        ("calls", _f64), *_TOKENS, ("cost_usd", _f64),  # the ledger's calls of this row's key (null without LLM calls)
    ),
    defaults={**_OLD_SCORES, "source_latent": None, "explanation": None, "explainer_model": None, "calls": None,
              "correlation": None, "correlation_firing": None,
              **{t: None for t, _ in _TOKENS}, "cost_usd": None},
)

_POWER = (  # the scorer's power on the coder (scoring/controls.py)
    ("power_metric", _str),       # the headline metric: auc, else balanced_accuracy (intruder: accuracy)
    ("power_own", _f64), ("power_control", _f64),  # its mean over the paired latents: own explanations, control (or chance)
    ("power", _f64), ("power_ci_low", _f64), ("power_ci_high", _f64),  # own - control, bootstrap 95% interval over latents
    ("power_latents", _i64),      # latents paired with the control (0: no control)
    ("has_power", _bool),         # power_status == "has power"
    ("power_status", _str),       # "has power" (>= 20 paired latents, interval above zero) | "no measured power"
                                  # | "too few latents" (< 20 paired latents, whatever the interval)
    ("power_borderline", _bool),  # the call sits on the edge: |power_ci_low| < 0.1 x the interval's half-width
)

SCORE_SUMMARY = Table(
    "score_summary.parquet", "score", "one row per (coder, scorer, explainer): each metric's mean over latents with a bootstrap "
    "95% interval, its pooled value, the scorer's power against its control, coverage and ultra-high-frequency counts",
    _schema(
        ("coder", _str), ("scorer", _str), ("explainer", _str), ("model", _str),
        ("latents", _i64), ("dead", _i64), ("too_rare", _i64), ("explained", _i64), ("explain_failed", _i64),
        ("scored", _i64), ("score_failed", _i64), ("windows", _i64), ("window_failures", _i64),
        *((f"{m}_{s}", _i64 if s == "latents" else _f64) for m in METRICS for s in ("mean", "ci_low", "ci_high", "latents")),
        *((f"{m}_pooled", _f64) for m in METRICS),
        *_POWER, ("control_latents", _i64),
        *((f"uhf_over_{t:g}", _i64) for t in UHF_THRESHOLDS),
        ("freq_weighted_f1", _f64),  # the paper's sum_i F1_i c_i / sum_i c_i per hookpoint; NaN without --freq-adjust
        ("freq_weighted_metric", _str), ("freq_weighted", _f64),
    ),
    defaults={"power_status": None, "power_borderline": None,  # files from before the floor on latents: readers recompute them
              **{f"{m}_{s}": None for m in ("correlation", "correlation_firing")  # files from before the simulation scorer
                 for s in ("mean", "ci_low", "ci_high", "latents", "pooled")}},
)

SCORE_BY_QUANTILE = Table(
    "score_by_quantile.parquet", "score", "per (coder, scorer, explainer, activation decile '0'-'9' or 'uniform'): the activating "
    "windows, their recall and the mean AUC against the latent's negatives",
    _schema(("coder", _str), ("scorer", _str), ("explainer", _str), ("quantile", _str), ("windows", _i64), ("failures", _i64),
            ("recall", _f64), ("accuracy", _f64), ("mean_probability", _f64), ("auc_mean", _f64), ("auc_latents", _i64)),
)

SCORE_BY_FREQUENCY = Table(
    "score_by_frequency.parquet", "score --freq-adjust", "per (coder, scorer, explainer, floor(log10(frequency))): mean metrics "
    "of the latents in that firing-rate bin",
    _schema(("coder", _str), ("scorer", _str), ("explainer", _str), ("log10_frequency_bin", _f64), ("frequency_low", _f64),
            ("frequency_high", _f64), ("latents", _i64), ("firing_count", _i64),
            *((f"{m}_mean", _f64) for m in ("f1", "balanced_accuracy", "accuracy", "auc", "correlation"))),
    defaults={"correlation_mean": None},
)

WINDOW_EMBEDDINGS = Table(
    "window_embeddings.parquet", "score", "MiniLM embeddings of the run's windows, made once and shared by the embedding scorers",
    _schema(("window_id", _i64), ("model", _str), ("embedding", pa.list_(_f32))),
)

STEERING = Table(
    "steering.parquet", "score", "the steering scorer's continuations: each steering prompt continued greedily by the "
    "subject model with and without the latent's decoder direction added (subject/steering.py), made once per latent",
    _schema(
        ("coder", _str), ("latent", _i64), ("prompt_index", _i64), ("prompt", _str),
        ("steered", pa.list_(_str)),  # the steered continuation, one string per token
        ("clean", pa.list_(_str)),    # the unsteered continuation of the same prompt
        ("scale", _f64),              # the added vector's norm / the site's median activation norm
        ("site_norm", _f64),          # the site's median activation norm over the steering prompts (subject/steering.py)
        ("new_tokens", _i64),         # tokens asked for (a continuation ends early only at end-of-text)
        ("mine_config", _str),        # the mining run whose coder folders were steered
    ),
)

SCORE_PARTS = Folder("score.parts", "score", "part files of an unfinished score stage, merged into predictions.parquet at its end")
EXPLAIN_PARTS = Folder("explain.parts", "explain", "part files of an unfinished explain stage, merged into explanations.parquet at its end")
LLM_BATCH_STATE = Folder("llm_batch_<stage>.json", "explain, score", "pending provider batches, so a restarted run resumes polling")

# -- the LLM ledger --------------------------------------------------------------------------------------------

LLM_USAGE = Table(
    "llm_usage.parquet", "explain / score", "the LLM ledger: one row per call (cache hits and retries included) with its "
    "tokens and dollars, tagged with who asked; every other view of LLM spend groups these rows (llm/usage.py)",
    _schema(
        ("stage", _str),              # what asked: explain, or the scorer (detection, fuzzing, intruder ...)
        ("backend", _str), ("model", _str), ("ok", _bool), ("error", _str),
        ("cached", _bool),            # served from the response cache: no network call, cost 0
        ("batch", _bool), ("attempts", _i64), ("latency_s", _f64),
        *_TOKENS,                     # input_tokens: uncached input only; prompt-cache reads and writes are apart
        ("cost_usd", _f64),           # null when the model's price is unknown
        *_COST_PARTS,                 # cost_usd per kind of token (llm/pricing.py Bill); 0 for a free call
        *_SCORE_KEY,                  # who asked: explain rows have no scorer or control
    ),
    # untagged rows of older runs; rows from before the cost parts: unknown parts (the report shows "-")
    defaults={"coder": None, "latent": None, "scorer": None, "explainer": None, "control": None,
              **{name: None for name, _ in _COST_PARTS}},
)

# -- report ----------------------------------------------------------------------------------------------------

RESULTS_DIR = Folder("results", "report", "the report: coders/scorers/explanations/llm_usage tables (.md, .csv), claims.md, "
                     "plots/*.png and report.html")

TABLES = (TRAIN_METRICS, RECON_EVAL, LATENTS, WINDOWS, CONTEXTS, EXPLANATIONS, PREDICTIONS, LATENT_SCORES, SCORE_SUMMARY,
          SCORE_BY_QUANTILE, SCORE_BY_FREQUENCY, WINDOW_EMBEDDINGS, STEERING, LLM_USAGE)
FOLDERS = (RUN_JSON, MANIFEST, CODERS_DIR, ACTIVATIONS_DIR, CHECKPOINTS_DIR, EXPLAIN_PARTS, SCORE_PARTS, LLM_BATCH_STATE,
           RESULTS_DIR)
