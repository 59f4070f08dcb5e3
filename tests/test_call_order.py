"""The order of a score run's LLM prompts (scoring/order.py): consecutive prompts share the longest prefix.

The offline model keeps the previous prompt's longest common prefix in llama.cpp's KV cache, so the order decides
how much of each prompt is evaluated again. No model needed: the prompts are the real detection requests, and the
stage's order is read back from the fake provider server.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from llm_fixtures import fake_server, fast_config, llm_env  # noqa: F401
from scoring_helpers import make_run, read_prompt, truth, truth_answer

from interp_eval.scoring import run_score_stage
from interp_eval.scoring.classifier import build_request
from interp_eval.scoring.controls import shuffled_sources
from interp_eval.scoring.order import prefix_order
from interp_eval.scoring.registry import CONTROL_NONE, CONTROL_SHUFFLED, Job, get_scorer
from interp_eval.scoring.stage import ScoreConfig
from interp_eval.scoring.testset import LatentTests, ScoreWindow

EXPLANATIONS = {0: "names of months", 1: "words about money", 2: "names of months and days", 3: "verbs of speech",
                4: "words about money and prices", 5: "numbers"}


def _window(i: int) -> ScoreWindow:
    words = f" window {i} says the shares fell in May".split(" ")
    return ScoreWindow(i, i % 2, 0, words, np.zeros(len(words)))


def _jobs(scorers=("detection",)) -> list[tuple[object, Job]]:
    """Own and shuffled-control jobs of two coders, in the (coder, latent) order the stage used before issue 15."""
    out = []
    for name in scorers:
        scorer = get_scorer(name)
        for coder in ("bae-x", "sae-x"):
            tests = {lat: LatentTests(coder, lat, "", False, [_window(10 * lat + j) for j in range(3)]) for lat in EXPLANATIONS}
            jobs = [Job(LatentTests(coder, lat, e, False, tests[lat].windows), "llm", CONTROL_NONE, lat) for lat, e in EXPLANATIONS.items()]
            for lat, src in shuffled_sources(list(EXPLANATIONS), None, 0, coder, "llm").items():
                jobs.append(Job(LatentTests(coder, lat, EXPLANATIONS[src], False, tests[lat].windows), "llm", CONTROL_SHUFFLED, src))
            out += [(scorer, j) for j in jobs]
    return sorted(out, key=lambda sj: (sj[1].tests.coder, sj[1].tests.latent))


def _prompts(pairs) -> list[str]:
    """Every prompt of the jobs in order, as the text a local model reads (system, then the turns)."""
    texts = []
    for scorer, job in pairs:
        for group in job.tests.prompts(1):
            req = build_request(scorer.name, job.tests.explanation, group) if scorer.name != "intruder" else None
            if req is None:
                texts.append(f"INTRUDER SYSTEM\n{job.tests.coder} {job.tests.latent}")
                continue
            texts.append("\n".join([req.system, *(m["content"] for m in req.messages)]))
    return texts


def _shared(texts: list[str]) -> int:
    """Characters each prompt shares with the one before (what a KV cache of the previous prompt keeps)."""
    return sum(len(os.path.commonprefix([a, b])) for a, b in zip(texts, texts[1:]))


def test_prefix_order_puts_one_explanation_s_prompts_back_to_back():
    old = _jobs()
    new = prefix_order(old)
    assert sorted(map(id, (j for _, j in new))) == sorted(map(id, (j for _, j in old)))  # the same jobs
    runs = [e for e, _ in itertools.groupby(j.tests.explanation for _, j in new)]
    assert len(runs) == len(set(runs)) == len(set(EXPLANATIONS.values()))  # each explanation once, all its jobs together
    for _, j in new:  # a latent's own job sits beside the control job that borrows its explanation
        if j.control == CONTROL_NONE:
            group = [k for _, k in new if k.tests.explanation == j.tests.explanation]
            assert any(k.control == CONTROL_SHUFFLED for k in group)
    # what the order is for: more of each prompt is the previous prompt's prefix, and never less
    old_shared, new_shared = _shared(_prompts(old)), _shared(_prompts(new))
    assert new_shared > old_shared
    best = _shared(sorted(_prompts(old)))  # sorted prompts: the most shared prefix any order gets
    assert new_shared >= 0.97 * best, (new_shared, best, old_shared)


def test_prefix_order_keeps_each_scorer_s_prompts_together():
    new = prefix_order(_jobs(("detection", "intruder")))
    names = [s.name for s, _ in new]
    assert [n for n, _ in itertools.groupby(names)] == ["detection", "intruder"]  # one switch of system prompt, not one a job


@pytest.fixture
def run(tmp_path):
    from transformers import AutoTokenizer

    from interp_eval.subject.model import packaged_model_dir

    path = tmp_path / "run"
    make_run(path, AutoTokenizer.from_pretrained(packaged_model_dir()), n_latents=4)
    return path


def test_the_score_stage_asks_in_prefix_order(llm_env, fast_config, run):
    """One request at a time (like the local model): the server sees each explanation's prompts back to back, the
    latent's own windows and then those of the latent scored with its explanation under the control."""
    llm_env.answer = truth_answer(truth(run))
    run_score_stage(run, ScoreConfig(scorers=("detection",), windows_per_prompt=1), fast_config("gpt-4.1-mini", concurrency=1))
    asked = [read_prompt(b)[0] for b in llm_env.bodies("chat")]
    assert len(asked) > 20
    runs = [e for e, _ in itertools.groupby(asked)]
    assert len(runs) == len(set(runs))  # every explanation asked in one stretch
    assert asked == sorted(asked)
