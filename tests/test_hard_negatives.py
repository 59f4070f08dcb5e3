"""Hard negatives: how mine picks them from the pool (constructed cases), and `score --negatives` against the local
fake provider server. The windows mined from the real model are checked in tests/test_random_control.py."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from llm_fixtures import fake_server, fast_config, llm_env  # noqa: F401
from scoring_helpers import truth, truth_answer, write_explanations

from interp_eval.errors import UserError
from interp_eval.mining.hard_negatives import decoder_neighbours, pick_neighbour_negatives, pick_similar_negatives
from interp_eval.scoring import run_score_stage
from interp_eval.scoring.stage import ScoreConfig
from run_builders import build_mined_run


def test_neighbours_are_the_nearest_live_rows_never_the_latent_itself():
    rows = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.05], [-1.0, 0.0]])
    live = torch.tensor([True, True, True, False, True])  # latent 3 is dead: nobody's neighbour
    nb = decoder_neighbours(rows, live, m=3, chunk=2)
    assert nb[0].tolist() == [1, 2, 4]
    assert 3 not in nb.flatten().tolist() and all(nb[i, 0] != i for i in range(5))
    assert decoder_neighbours(rows[:2], live[:2], m=3).tolist() == [[1], [0]]  # fewer others than m


def test_neighbour_negatives_take_the_nearest_neighbours_windows_first_and_never_a_firing_one():
    # 6 pool windows (in the pool's random order), 4 latents; latent 0's neighbours: 2 (nearest), then 1
    fire = torch.zeros(6, 4, dtype=torch.bool)
    fire[[0, 3], 1] = True  # neighbour 1 fires in windows 0 and 3
    fire[[1, 4, 5], 2] = True  # neighbour 2 fires in windows 1, 4 and 5
    fire[4, 0] = True  # latent 0 itself fires in window 4: never its negative
    quiet = ~fire[:, :1].T  # [1, 6]
    r, p, rank = pick_neighbour_negatives(quiet, fire, torch.tensor([[2, 1]]), n=4)
    assert p.tolist() == [1, 5, 0, 3] and rank.tolist() == [0, 1, 2, 3] and r.tolist() == [0] * 4
    r, p, _ = pick_neighbour_negatives(quiet, fire, torch.tensor([[2, -1]]), n=10)  # a padded neighbour list
    assert p.tolist() == [1, 5]


def test_similar_negatives_rank_silent_windows_by_likeness_to_the_latents_own():
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8], [0.99, 0.14]]), dim=-1)
    fire = torch.tensor([[True, False, False, False, False],  # latent 0 fires in window 0: its text is like window 0
                         [False, False, False, False, False]])  # latent 1 fires in no pool window: no centroid, none
    r, p, rank = pick_similar_negatives(~fire, fire, emb, n=3)
    assert r.tolist() == [0, 0, 0] and p.tolist() == [4, 1, 3] and rank.tolist() == [0, 1, 2]


@pytest.fixture
def hard_run(tmp_path):
    from transformers import AutoTokenizer

    from interp_eval.subject.model import packaged_model_dir

    run = tmp_path / "run"
    build_mined_run(run, AutoTokenizer.from_pretrained(packaged_model_dir()), n_latents=4, hard_negatives=True)
    write_explanations(run)
    return run


def test_detection_with_neighbour_negatives_is_its_own_scorer_on_those_windows(llm_env, fast_config, hard_run):
    llm_env.answer = truth_answer(truth(hard_run))
    cfg = dict(scorers=("detection",), control_latents=0)
    run_score_stage(hard_run, ScoreConfig(**cfg), fast_config("claude"))
    run_score_stage(hard_run, ScoreConfig(**cfg, negatives="neighbours"), fast_config("claude"))
    pred = pd.read_parquet(hard_run / "predictions.parquet")
    assert set(pred["scorer"]) == {"detection", "detection@neighbours"}  # side by side, neither over the other
    ctx = pd.read_parquet(hard_run / "contexts.parquet")
    for scorer, kind in (("detection", "random_negative"), ("detection@neighbours", "neighbour_negative")):
        neg = pred[(pred["scorer"] == scorer) & (pred["label"] == 0)]
        want = ctx[(ctx["kind"] == kind) & ctx["latent"].isin(neg["latent"])]
        assert set(zip(neg["coder"], neg["latent"], neg["window_id"])) == set(zip(want["coder"], want["latent"], want["window_id"]))
        assert (neg["prediction"] == 0).all()
    summary = pd.read_parquet(hard_run / "score_summary.parquet")
    assert set(summary["scorer"]) == {"detection", "detection@neighbours"}
    # a re-run with the same negatives asks nothing again
    asked = len(llm_env.log)
    run_score_stage(hard_run, ScoreConfig(**cfg, negatives="neighbours"), fast_config("claude"))
    assert len(llm_env.log) == asked


def test_negatives_that_were_not_mined_or_cannot_apply_are_one_line_errors(llm_env, fast_config, hard_run):
    for cfg, match in ((ScoreConfig(scorers=("detection",), negatives="similar"), "no similar_negative windows"),
                       (ScoreConfig(scorers=("intruder",), negatives="neighbours"), "reads no non-activating windows"),
                       (ScoreConfig(scorers=("detection",), negatives="hardest"), "use one of random, neighbours, similar"),
                       (ScoreConfig(scorers=("detection@neighbours",)), "with --negatives")):
        with pytest.raises(UserError, match=match) as exc:
            run_score_stage(hard_run, cfg, fast_config("claude"))
        assert "\n" not in str(exc.value)
    assert not llm_env.log
