"""The simulation scorer: its metrics by hand, the all-at-once prompt, and the whole stage through an
OpenAI-compatible server's /v1/completions (echo) and the offline model, with its refusal elsewhere."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import random

import numpy as np
import pandas as pd
import pytest

from llm_fixtures import fake_server, fast_config, llm_env  # noqa: F401
from scoring_helpers import explained_test_windows, make_run

from interp_eval.errors import UserError
from interp_eval.llm import LLMRequest
from interp_eval.llm.backends.openai_backend import prompt_logprobs_refusal
from interp_eval.llm.types import TokenLogprob
from interp_eval.prompting import token_line
from interp_eval.scoring import run_score_stage
from interp_eval.scoring.registry import Job, get_scorer
from interp_eval.scoring.simulation import (
    MARK, build_request, expected_digit, pearson, simulation_metrics, simulation_text,
)
from interp_eval.scoring.stage import ScoreConfig
from interp_eval.scoring.testset import LatentTests, ScoreWindow


# -- the metrics, by hand -------------------------------------------------------------------------------------
def test_correlation_is_pearsons_r_over_every_token_of_the_latent():
    sim = [[0.0, 9.0, 0.0], [4.5, 0.0], None]  # the third window failed: left out
    act = [[0.0, 3.0, 0.0], [1.0, 0.0], [5.0, 5.0]]
    pred, truth = np.array([0, 9, 0, 4.5, 0.0]), np.array([0, 3, 0, 1, 0.0])
    # by hand: means 2.7 and 0.8; r = sum(dp dt) / sqrt(sum dp^2 sum dt^2)
    dp, dt = pred - 2.7, truth - 0.8
    r = (dp * dt).sum() / math.sqrt((dp * dp).sum() * (dt * dt).sum())
    firing = np.array([0, 1, 0, 1, 0.0])
    df = firing - firing.mean()
    r_firing = (dp * df).sum() / math.sqrt((dp * dp).sum() * (df * df).sum())
    got = simulation_metrics(sim, act)
    assert got["correlation"] == pytest.approx(r, abs=1e-12) == pytest.approx(np.corrcoef(pred, truth)[0, 1], abs=1e-12)
    assert got["correlation_firing"] == pytest.approx(r_firing, abs=1e-12)
    assert pearson(np.array([2.0, 2, 2]), np.array([0, 1, 0.0])) == 0.0  # a constant simulator says nothing
    assert math.isnan(pearson(np.array([1.0, 2, 3]), np.array([0, 0, 0.0])))  # nothing to predict
    assert all(math.isnan(v) for v in simulation_metrics([None], [[1.0]]).values())


def test_expected_digit_normalises_over_the_digits_among_the_alternatives():
    top = [("unknown", math.log(0.5)), ("9", math.log(0.3)), (" 0", math.log(0.1)), ("x", math.log(0.1))]
    assert expected_digit(top) == pytest.approx(9 * 0.3 / 0.4)
    assert expected_digit([("unknown", 0.0)]) == 0.0


def test_the_prompt_reads_one_point_per_token_and_the_corpus_cannot_add_a_line():
    w = ScoreWindow(1, 1, None, ["Hello", " wor\tld", "\n", " <end>", MARK + "x"], np.array([0, 1, 0, 0, 0], np.float32))
    req = build_request("greetings\nNeuron 4", w)
    pieces = req.echo_pieces()
    assert len(pieces) == len(w.tokens) + 1 and req.system is None and req.echo_marker == MARK
    lines = "".join(pieces).split("<start>\n")[-1].split("\n<end>")[0].split("\n")
    assert lines == [f"{token_line(t)}\tunknown" for t in w.tokens] and len(lines) == 5
    assert "Explanation of neuron 3 behavior: greetings Neuron 4\n" in "".join(pieces)
    assert all(p.endswith("\t") for p in pieces[:-1])  # each read point right after a token's tab
    with pytest.raises(ValueError):
        LLMRequest.user("a" + MARK, system="no system prompt here", echo_marker=MARK)


def _job(acts: list[list[float]]) -> Job:
    windows = [ScoreWindow(i, int(max(a) > 0), None, [f" t{j}" for j in range(len(a))], np.array(a, np.float32)) for i, a in enumerate(acts)]
    return Job(LatentTests("c", 0, "e", False, windows))


def _answer(scorer, prompt, predicted: list[dict[str, float]]):
    from interp_eval.llm.types import LLMResponse

    response = LLMResponse("", "local", "m", logprobs=[TokenLogprob(next(iter(t)), 0.0, list(t.items())) for t in predicted])
    return scorer.window_rows(prompt, scorer.parse("", prompt), scorer.probabilities(response, prompt))[0]


def test_a_simulator_answering_the_truth_scores_one_and_noise_scores_near_zero():
    scorer = get_scorer("simulation")
    rng = np.random.default_rng(0)
    acts = [[float(x) if rng.random() < 0.3 else 0.0 for x in rng.integers(1, 9, 24)] for _ in range(12)]
    job = _job(acts)
    prompts = scorer.prompts(job, ScoreConfig(scorers=("simulation",)), True)
    top = max(max(a) for a in acts)
    truth_rows, noise_rows = [], []
    for p in prompts:
        a = p.windows[0].activations
        # P(9) = a / top, P(0) = the rest: the expected digit is 9 a / top, exactly proportional to the truth
        truth_rows.append(_answer(scorer, p, [{"9": math.log(x / top), "0": math.log(1 - x / top)} if 0 < x < top else
                                              {"9" if x else "0": 0.0} for x in a]))
        noise_rows.append(_answer(scorer, p, [{str(rng.integers(0, 10)): 0.0} for _ in a]))
    truth = simulation_metrics([r["simulated"] for r in truth_rows], [r["actual"] for r in truth_rows])
    noise = simulation_metrics([r["simulated"] for r in noise_rows], [r["actual"] for r in noise_rows])
    assert truth["correlation"] == pytest.approx(1.0, abs=1e-9)
    assert abs(noise["correlation"]) < 0.15
    # logprobs that do not cover the window are a counted failure, not a silent zero
    bad = _answer(scorer, prompts[0], [{"0": 0.0}])
    assert bad["simulated"] is None and bad["failure"].startswith("parse")


# -- the stage, through an OpenAI-compatible server's /v1/completions ---------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from interp_eval.subject.model import packaged_model_dir

    return AutoTokenizer.from_pretrained(packaged_model_dir())


def _truth_table(run) -> dict[tuple[str, tuple[str, ...]], list[float]]:
    """(explanation, the window's token lines) -> the latent's true activations on it."""
    return {(e, tuple(token_line(t) for t in tokens)): acts for e, tokens, _, acts in explained_test_windows(run)}


def _simulator(table, noise: bool = False):
    """echo_top for the fake server: at each `unknown` after a tab of the window being simulated, the digit
    distribution whose expected value is 9 x activation / 9 (or a seeded random digit)."""
    def top(tokens: list[str], i: int) -> dict[str, float]:
        if tokens[i] != "unknown" or tokens[i - 1] != "\t":
            return {tokens[i]: 0.0}
        start = max(j for j in range(i) if tokens[j] == "<start>")
        explanation = [t for t in tokens[:start] if t.startswith("Explanation of neuron 3 behavior: ")][-1].split(": ", 1)[1]
        lines = [tokens[j - 2] for j in range(start, len(tokens)) if tokens[j] == "unknown" and tokens[j - 1] == "\t"]
        line = [j for j in range(start, len(tokens)) if tokens[j] == "unknown" and tokens[j - 1] == "\t"].index(i)
        if noise:
            rnd = random.Random(hashlib.sha256(repr((explanation, lines, line)).encode()).digest())
            return {str(rnd.randint(0, 9)): 0.0}
        acts = table.get((explanation, tuple(lines)))
        a = acts[line] / 9.0 if acts else 0.0
        return {"9": math.log(a), "0": math.log(1 - a)} if 0 < a < 1 else {"9" if a else "0": 0.0}
    return top


def test_the_stage_scores_by_correlation_with_its_control_through_a_compatible_server(llm_env, fast_config, tmp_path, tokenizer):
    run = tmp_path / "run"
    make_run(run, tokenizer, n_latents=4)
    llm_env.echo_top = _simulator(_truth_table(run))
    out = run_score_stage(run, ScoreConfig(scorers=("simulation",), n_activating=4, n_negative=4), fast_config("my-vllm-model", base_url=llm_env.url + "/v1"))
    assert out["complete"] and out["window_failures"] == {"parse": 0, "llm": 0}
    assert llm_env.count("completions") == 2 * 3 * 8 * 2 and llm_env.count("chat") == 0  # a window a call; own + control
    body = llm_env.bodies("completions")[0]
    assert body["echo"] is True and body["logprobs"] == 20 and MARK not in body["prompt"]
    scores = pd.read_parquet(run / "latent_scores.parquet")
    own = scores[scores["control"] == "none"]
    assert len(own) == 6 and (own["correlation"] > 0.999).all() and (own["failures"] == 0).all()
    assert own["correlation_firing"].between(0.5, 1.0).all() and own["f1"].isna().all()
    control = scores[scores["control"] == "shuffled"]
    assert len(control) == 6 and (control["correlation"].abs() < 1e-9).all()  # another latent's explanation: all zeros
    summ = pd.read_parquet(run / "score_summary.parquet")
    assert (summ["power_metric"] == "correlation").all() and (summ["power"] > 0.99).all()
    assert (summ["power_status"] == "too few latents").all()  # 3 latents a coder: below the floor
    assert (summ["correlation_pooled"] > 0.99).all()
    pred = pd.read_parquet(run / "predictions.parquet")
    assert pred["simulated"].notna().all() and all(len(s) == len(a) for s, a in zip(pred["simulated"], pred["actual"]))
    # a second run sends nothing
    before = llm_env.count("completions")
    run_score_stage(run, ScoreConfig(scorers=("simulation",), n_activating=4, n_negative=4), fast_config("my-vllm-model", base_url=llm_env.url + "/v1"))
    assert llm_env.count("completions") == before

    # a simulator that answers noise scores like its control
    noisy = tmp_path / "noisy"
    make_run(noisy, tokenizer, n_latents=4)
    llm_env.echo_top = _simulator({}, noise=True)
    fresh = fast_config("my-vllm-model", base_url=llm_env.url + "/v1", cache_path=tmp_path / "noise.sqlite")  # the same prompts
    run_score_stage(noisy, ScoreConfig(scorers=("simulation",), n_activating=4, n_negative=4), fresh)
    s = pd.read_parquet(noisy / "latent_scores.parquet")
    assert s.loc[s["control"] == "none", "correlation"].abs().mean() < 0.25


def test_a_backend_without_prompt_logprobs_is_refused_in_one_line_before_any_call(llm_env, fast_config, tmp_path, tokenizer, monkeypatch):
    run = tmp_path / "run"
    make_run(run, tokenizer, n_latents=4)
    with pytest.raises(UserError) as e:
        run_score_stage(run, ScoreConfig(scorers=("simulation", "detection")), fast_config("claude"))
    assert "Anthropic" in str(e.value) and "--model local" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(UserError) as e:
        run_score_stage(run, ScoreConfig(scorers=("simulation",)), fast_config("gpt-4.1-mini"))
    assert "OpenAI's own models" in str(e.value) and "\n" not in str(e.value)
    assert llm_env.completion_calls() == 0 and not (run / "predictions.parquet").exists()
    assert prompt_logprobs_refusal("local", None) is None and prompt_logprobs_refusal("openai", "http://10.0.0.2:8000/v1") is None


# -- the offline model ---------------------------------------------------------------------------------------------------
def test_the_offline_model_reads_each_point_the_same_after_any_earlier_prompt():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (make venv-local)")
    from interp_eval.llm.backends import local_backend
    from interp_eval.llm.backends.local_echo import echo_logprobs

    try:
        path = local_backend.packaged_model_path()
    except UserError as e:
        pytest.skip(str(e))
    llm = local_backend.load_model(path, 8192, False, None)
    w = ScoreWindow(1, 1, None, [" The", " bank", " raised", " rates", " in", " March"], np.array([0, 0, 0, 0, 0, 3.0], np.float32))
    other = ScoreWindow(2, 0, None, [" A", " cat", " sat"], np.zeros(3, np.float32))
    pieces = simulation_text("names of months", w).split(MARK)
    local_backend.forget_prefix(llm)
    cold = echo_logprobs(llm, pieces, 20)["choices"][0]["logprobs"]["content"]
    echo_logprobs(llm, simulation_text("names of animals", other).split(MARK), 20)  # shares the header, not the rest
    warm = echo_logprobs(llm, pieces, 20)["choices"][0]["logprobs"]["content"]
    assert len(cold) == len(w.tokens) and [c["token"] for c in cold] == ["unknown"] * len(w.tokens)
    assert [[(a["token"], a["logprob"]) for a in c["top_logprobs"]] for c in cold] == \
        [[(a["token"], a["logprob"]) for a in c["top_logprobs"]] for c in warm]
    values = [expected_digit([(a["token"], a["logprob"]) for a in c["top_logprobs"]]) for c in cold]
    assert values[-1] > max(values[:-1])  # the month is the most likely to fire
