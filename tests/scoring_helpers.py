"""Helpers for tests/test_scoring.py: a hand-built explained run and fake-server answer callables.

The run comes from run_builders.build_mined_run (real corpus tokens; latent i of every coder fires on
one word), plus an explanations.parquet written here. Answer callables read the scorer prompt back
(the explanation line and the numbered windows) and answer from the ground truth.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fake_llm_server import FakeAnswer
from interp_eval.catalog import EXPLANATIONS
from interp_eval.prompting import render
from run_builders import WORDS, build_mined_run

def explanation_row(coder: str, latent: int, explanation: str | None, **kw) -> dict:
    """An explanations.parquet row of the `llm` explainer (a failure when `explanation` is None)."""
    return {"coder": coder, "latent": latent, "explainer": "llm", "explanation": explanation, "explainer_model": "claude-sonnet-4-5",
            "prompt_version": "explain@test", "n_windows": 8, "parse_ok": explanation is not None,
            "failure": None if explanation is not None else "parse: no [EXPLANATION]", "attempts": 1, "raw_answer": None,
            "mine_config": None, **kw}

LINE_RE = re.compile(r"^(\d+)\. (.*)$")


def key(text: str) -> str:
    """A window's text without marks, whitespace or escaped line breaks: equal for a window marked or not."""
    return re.sub(r"\s+", "", text.replace("<<", "").replace(">>", "").replace("\\n", ""))


def explanation_of(coder: str, latent: int) -> str:
    return f"the word '{WORDS[latent]}' ({coder})"


def write_explanations(run: Path, failed: tuple[tuple[str, int], ...] = ()) -> pd.DataFrame:
    """One explanation per live latent of latents.parquet; the (coder, latent) pairs in `failed` get a null one."""
    lat = pd.read_parquet(run / "latents.parquet")
    rows = []
    for coder, latent in zip(lat.loc[lat["status"] == "ok", "coder"], lat.loc[lat["status"] == "ok", "latent"]):
        bad = (coder, int(latent)) in failed
        rows.append(explanation_row(coder, int(latent), None if bad else explanation_of(coder, int(latent))))
    pq.write_table(pa.Table.from_pylist(rows, schema=EXPLANATIONS.schema), run / "explanations.parquet")
    return pd.DataFrame(rows)


def make_run(run: Path, tokenizer, **kw) -> dict:
    info = build_mined_run(run, tokenizer, **kw)
    write_explanations(run)
    return info


def explained_test_windows(run: Path):
    """(explanation, window tokens, kind, activations) of every test window of every explained latent."""
    ctx = pd.read_parquet(run / "contexts.parquet")
    win = pd.read_parquet(run / "windows.parquet").set_index("window_id")
    ex = pd.read_parquet(run / "explanations.parquet").dropna(subset=["explanation"])
    expl = dict(zip(zip(ex["coder"], ex["latent"]), ex["explanation"]))
    for coder, latent, wid, kind, split, acts in zip(ctx["coder"], ctx["latent"], ctx["window_id"], ctx["kind"], ctx["split"],
                                                     ctx["activations"]):
        if split == "test" and (coder, latent) in expl:
            yield expl[(coder, latent)], list(win.at[wid, "tokens"]), kind, [float(a) for a in acts]


def truth(run: Path) -> dict[tuple[str, str], int]:
    """(explanation, window text) -> label, for every test window of every explained latent."""
    return {(e, key(render(tokens))): int(kind == "quantile") for e, tokens, kind, _ in explained_test_windows(run)}


def read_prompt(req: dict) -> tuple[str, list[str]]:
    """(explanation, window keys (see key()) of the scoring turn of a request (retries included)."""
    user = [m["content"] for m in req["messages"] if m["role"] == "user" and m["content"].startswith("Explanation:")][-1]
    lines = user.split("\n")
    explanation = lines[0][len("Explanation: "):]
    texts = [key(LINE_RE.match(line).group(2)) for line in lines[1:] if LINE_RE.match(line)]
    return explanation, texts


def fmt(digits: list[int]) -> str:
    return "[" + ",".join(map(str, digits)) + "]"


def truth_answer(table: dict[tuple[str, str], int]):
    """The ground truth of the latent the explanation describes: 1 on its activating test windows, else 0
    (a window of another latent, shown under the shuffled control, is not known to activate it)."""
    def answer(req: dict) -> str:
        explanation, texts = read_prompt(req)
        return fmt([table.get((explanation, t), 0) for t in texts])
    return answer


def constant_answer(value: int):
    def answer(req: dict) -> str:
        return fmt([value] * len(read_prompt(req)[1]))
    return answer


def random_answer(seed: int = 0):
    """Coin flips, seeded by the prompt's content (so the answers do not depend on the order of arrival)."""
    def answer(req: dict) -> str:
        explanation, texts = read_prompt(req)
        rng = random.Random(hashlib.sha256(repr((seed, explanation, texts)).encode()).digest())
        return fmt([rng.randint(0, 1) for _ in texts])
    return answer


def confident_truth_answer(table: dict[tuple[str, str], int], p: float = 0.9):
    """The true digits, each with explicit logprobs: P(true digit) = p."""
    import math

    def answer(req: dict) -> FakeAnswer:
        explanation, texts = read_prompt(req)
        digits = [table.get((explanation, t), 0) for t in texts]
        tokens = [("[", 0.0, [("[", 0.0)])]
        for i, d in enumerate(digits):
            if i:
                tokens.append((",", 0.0, [(",", 0.0)]))
            other = str(1 - d)
            tokens.append((str(d), math.log(p), [(str(d), math.log(p)), (other, math.log(1 - p))]))
        tokens.append(("]", 0.0, [("]", 0.0)]))
        return FakeAnswer(fmt(digits), tokens)
    return answer


def build_text_run(run: Path, tokenizer, explanation: str, positives: list[str], negatives: list[str], *, coder: str = "sae-t") -> None:
    """A one-latent run from hand-written texts: the positives activate (on their last token), the negatives do not."""
    from interp_eval.catalog import CONTEXTS, LATENTS, WINDOWS

    run.mkdir(parents=True, exist_ok=True)
    windows, ctx = [], []
    texts = [(t, 1) for t in positives] + [(t, 0) for t in negatives]
    for wid, (text, label) in enumerate(texts):
        ids = tokenizer(text)["input_ids"]
        windows.append({"window_id": wid, "context": wid, "position": 0, "token_ids": ids, "tokens": [tokenizer.decode([i]) for i in ids]})
        acts = [0.0] * len(ids)
        if label:
            acts[-1] = 2.0
        ctx.append({"coder": coder, "latent": 0, "window_id": wid, "kind": "quantile" if label else "random_negative", "split": "test",
                    "quantile": (wid % 10) if label else None, "rank": wid, "activations": acts, "max_activation": max(acts)})
    pq.write_table(pa.Table.from_pylist(windows, schema=WINDOWS.schema), run / "windows.parquet")
    pq.write_table(pa.Table.from_pylist(ctx, schema=CONTEXTS.schema), run / "contexts.parquet")
    lat = [{"coder": coder, "latent": 0, "hookpoint": "layers.0.mlp", "binary": False, "firing_count": len(positives), "n_tokens": 1000,
            "frequency": len(positives) / 1000, "max_activation": 2.0, "n_windows": len(positives), "status": "ok"}]
    pq.write_table(pa.Table.from_pylist(lat, schema=LATENTS.schema), run / "latents.parquet")
    pq.write_table(pa.Table.from_pylist([explanation_row(coder, 0, explanation, explainer_model="m", prompt_version="p")],
                                        schema=EXPLANATIONS.schema), run / "explanations.parquet")
