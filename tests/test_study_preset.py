"""The study preset, at tiny sizes: its dry run counts what its run does, and a resumed run never sends a finished
request again. Real packaged model and corpus; the LLM is the suite's OpenAI-speaking server."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pandas as pd
import pytest

from fake_llm_server import FakeItemError
from llm_fixtures import fake_server, fast_config, llm_env  # noqa: F401
from scoring_helpers import fmt, read_prompt
from interp_eval.config import get_preset
from interp_eval.reproduce import control_configs, llm_coders, plan, run_reproduce, train_configs


def tiny_study():
    """The study preset's shape (2 seeds, the BAE variant, a one-seed random-model control, the LLM on seed 1 only,
    a seeded latent sample, a control subsample, detection + fuzzing + intruder) at the tiny preset's sizes, with the
    LLM on every kind and on the random-model controls (so every selection rule of llm_coders is exercised)."""
    study, tiny = get_preset("study"), get_preset("tiny")
    return replace(
        study, name="tiny-study", hookpoints=tiny.hookpoints, ks=tiny.ks, llm_kinds=None, llm_controls=True,
        coder=replace(tiny.coder, epochs=2), train=tiny.train, mine=tiny.mine,
        explain=replace(study.explain, sample=3),
        score=replace(study.score, sample=3, control_latents=2, n_activating=5, n_negative=5),
        free_score=replace(study.free_score, n_activating=5, n_negative=5), estimate_time=False,
    )


def is_fuzzing(req: dict) -> bool:
    return "marked tokens are what the explanation describes" in str(req.get("system", ""))


def answer(req: dict) -> str:
    """Scoring turns a valid digit list, intruder prompts a number, every other call (explain) an explanation of its
    own (a control borrowing another latent's explanation then sends a prompt of its own, as with a real explainer)."""
    last = str(req["messages"][-1]["content"]) if req["messages"] else ""
    if last.startswith("Explanation:"):
        return fmt([i % 2 for i in range(len(read_prompt(req)[1]))])
    if "Reply with one number" in last:
        return "[2]"
    return f"Explanation: words about the news, kind {hashlib.sha256(last.encode()).hexdigest()[:6]}"  # one per latent


def test_the_study_grid_names_seeds_variants_and_llm_coders():
    p = get_preset("study")
    names = [c.coder_name for c in train_configs(p)]
    assert names == [f"{k}-layers.9.mlp-k32{v}-s{s}" for k, v in (("sae", ""), ("bae", ""), ("tc", ""), ("btc", ""))
                     for s in (1, 2)] + [f"bae-layers.9.mlp-k32-nonorm-s{s}" for s in (1, 2)]
    assert [c.normalize_decoder for c in train_configs(p) if "nonorm" in c.coder_name] == [False, False]
    assert [c.coder_name for c in control_configs(p)] == ["sae-layers.9.mlp-k32-s1", "bae-layers.9.mlp-k32-s1"]
    assert llm_coders(p) == ("sae-layers.9.mlp-k32-s1", "bae-layers.9.mlp-k32-s1")
    info = plan(p, fast_llm("gpt-4.1-mini"))
    assert (info["coders"], info["llm_coders"], info["latents_explained"], info["control_latents"]) == (12, 2, 200, 80)
    # every kind's, and the random-model controls', LLM coders when the preset asks for them
    wide = replace(p, llm_kinds=None, llm_controls=True)
    assert llm_coders(wide) == tuple(f"{k}-layers.9.mlp-k32-s1" for k in ("sae", "bae", "tc", "btc")) + (
        "sae-layers.9.mlp-k32-s1-randmodel", "bae-layers.9.mlp-k32-s1-randmodel")
    assert plan(wide, fast_llm("gpt-4.1-mini"))["latents_explained"] == 600


def fast_llm(model):
    from interp_eval.llm import LLMConfig

    return LLMConfig(model=model)


def test_dry_run_counts_what_the_run_does_and_a_resume_sends_nothing_finished(llm_env, fast_config, tmp_path):
    p = tiny_study()
    cfg = fast_config("gpt-4.1-mini")
    info = plan(p, cfg)
    # first run: every fuzzing prompt fails (a provider error), as if the run had been cut off in its LLM phase
    sent_ok: set[str] = set()

    def failing(req):
        if is_fuzzing(req):
            raise FakeItemError("cut off")
        body = json.dumps(req, sort_keys=True)
        sent_ok.add(body)
        return answer(req)

    llm_env.answer = failing
    run_reproduce(p, tmp_path / "run", cfg)
    first_calls = llm_env.completion_calls()
    assert info["coders"] == len(list((tmp_path / "run" / "coders").iterdir())) == 12
    lat = pd.read_parquet(tmp_path / "run" / "latent_scores.parquet")
    assert set(lat["coder"]) >= set(llm_coders(p)) and not (set(lat.loc[lat["scorer"] == "detection", "coder"]) - set(llm_coders(p)))
    # second run: the same command; only what failed is asked again
    resent: list[str] = []

    def recording(req):
        body = json.dumps(req, sort_keys=True)
        resent.append(body)
        return answer(req)

    llm_env.answer = recording
    llm_env.reset_counts()
    run_reproduce(p, tmp_path / "run", cfg)
    assert resent and not (set(resent) & sent_ok)  # no finished request was sent again
    assert all(is_fuzzing(json.loads(b)) for b in resent)
    # what the plan counted is what the run sent: every request once (the failed ones once more on the resume)
    assert info["llm_calls"] == first_calls == len(sent_ok) + len(resent)
    ledger = pd.read_parquet(tmp_path / "run" / "llm_usage.parquet")
    assert info["latents_explained"] == (ledger["stage"] == "explain").sum() == 6 * 3


def test_the_time_estimate_is_the_plan_counts_times_the_measured_rates():
    from interp_eval.throughput import estimate_stages, format_estimate

    p = get_preset("study")
    info = plan(p, fast_llm(None))
    timing = {"cpu": "test cpu", "cores": 2, "load": 0.0, "measured_in_s": 1.0, "d_model": 576,
              "forward_tokens_per_s": 2000.0, "full_forward_tokens_per_s": 1000.0, "encode_tokens_per_s": 100_000.0,
              "embed_windows_per_s": 100.0, "llm_explain_s": 10.0, "llm_window_s.detection": 1.0,
              "llm_window_s.fuzzing": 0.5, "llm_intruder_s": 2.0,
              **{f"train_tokens_per_s.{k}": 20_000.0 for k in ("sae", "bae", "tc", "btc")}}
    est = estimate_stages(p, info, timing)
    coders = len(train_configs(p)) + len(control_configs(p))  # 12 coders, two models (trained and random)
    assert est["train"] == pytest.approx(2 * 800_000 / 2000 + coders * 800_000 * 3 / 20_000 + (coders + 2) * 16384 / 1000)
    assert est["mine"] == pytest.approx(2 * 300_000 / 2000 + coders * 300_000 / 100_000)
    assert est["explain"] == 200 * 10.0  # 100 latents of the SAE and of the BAE
    # detection and fuzzing: (200 latents + 80 controls) x 6 one-window prompts; intruder: 200 latents x 1 trial
    assert est["score"] == pytest.approx(280 * 6 * (1.0 + 0.5) + 200 * 1 * 2.0)
    assert est["total"] == pytest.approx(sum(v for k, v in est.items() if k != "total"))
    assert any("total" in line for line in format_estimate(timing, est))


def test_an_intruder_that_cannot_form_a_trial_is_refused_before_any_work():
    """The study ran 200 intruder jobs that made no call and no row: a trial needs intruder_windows - 1 of the
    latent's own activating test windows, and it had 3 (n_activating) for 5 windows. Refused in one line now,
    and the study preset's intruder fits its windows."""
    from interp_eval.config import PRESETS
    from interp_eval.errors import UserError
    from interp_eval.scoring.stage import ScoreConfig

    with pytest.raises(UserError, match=r"--intruder-windows 5 needs 4 activating test windows a latent \(--n-activating 3\)"):
        ScoreConfig(scorers=("intruder",), n_activating=3, intruder_windows=5).validate()
    ScoreConfig(scorers=("detection",), n_activating=3, intruder_windows=5).validate()  # no intruder: no matter
    for name, preset in PRESETS.items():
        preset.score.validate()
