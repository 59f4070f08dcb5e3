"""The two explainers (token-table, llm), few-shot copy detection and explanation diversity.

The LLM tests talk real HTTP to the local fake provider server (tests/fake_llm_server.py).
"""

import re
from collections import Counter

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from llm_fixtures import fake_server, fast_config, llm_env  # noqa: F401
from run_builders import WORDS

from interp_eval.explain.copies import fewshot_copy, normalise, similarity
from interp_eval.explain.diversity import diversity
from interp_eval.explain.prompt import fewshot_explanations, judge_answer
from interp_eval.explain.stage import ExplainConfig, read_explanations, run_explain_stage
from interp_eval.explain.tokens import Window, marked_token_counts, token_summary, token_table_explanation
from interp_eval.prompting import active_mask, load_dialogue

GOOD = "The marked tokens share a word.\n[EXPLANATION]: the word {w}"
COPY_TURN = "repeats the answer of an earlier example"


def word_answer(req):
    """Answers with the most common marked word of the latest excerpts."""
    text = next(m["content"] for m in reversed(req["messages"]) if m["content"].startswith("Excerpts:"))
    marked = re.findall(r"<<(.*?)>>", text)
    word = max(set(marked), key=marked.count).strip().lower() if marked else "nothing"
    return GOOD.format(w=word)


# -- token table -------------------------------------------------------------------------------------------
def test_token_table_counts_marked_tokens_stripped_and_ranked():
    windows = [
        Window([" the", " year", " 2004", " years", "\n"], [0.0, 1.0, 0.2, 0.5, 0.4]),  # 0.2 < 0.3 x 1.0: unmarked
        Window(["year", " ago", " year", "<|im_end|>"], [2.0, 0.0, 2.0, 0.9]),
        Window([" silent", " window"], [0.0, 0.0]),  # nothing marked
    ]
    counts = [(c.token, c.count) for c in marked_token_counts(windows)]
    assert counts == [("year", 3), ("\\n", 1), ("\\n\\n", 1), ("years", 1)]
    assert token_table_explanation(windows) == 'the tokens "year" (3), "\\n" (1), "\\n\\n" (1), "years" (1)'
    assert token_table_explanation(windows, size=1) == 'the tokens "year" (3)'
    assert "<|im_end|>" not in token_summary(windows)  # a chat-control token never reaches a prompt
    assert token_table_explanation([windows[2]]) is None and token_summary([windows[2]]) == "(none)"
    assert token_summary([Window([' "', "Hi"], [1.0, 0.0])]) == '"\\"" (1)'  # a quotation mark token, escaped


def test_token_table_caps_the_list_and_breaks_ties_alphabetically():
    toks = [f" w{i}" for i in range(12)]
    windows = [Window(toks, [1.0] * 12), Window([" w11"], [1.0])]
    counts = marked_token_counts(windows)
    assert [c.token for c in counts[:3]] == ["w11", "w0", "w1"]
    assert token_table_explanation(windows).count("(") == 8


def test_fewshot_token_lines_are_what_the_code_would_write():
    """Each few-shot turn's summary line counts its own <<marked>> tokens the way token_summary does."""
    users = [m["content"] for m in load_dialogue("explain_fewshot") if m["role"] == "user"]
    assert len(users) >= 2
    for text in users:
        marked = Counter(t.strip() for t in re.findall(r"<<(.*?)>>", text))
        ranked = sorted(marked.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
        line = ", ".join(f'"{t}" ({n})' for t, n in ranked)
        assert text.splitlines()[-1] == f"Most frequent marked tokens: {line}"


def test_token_table_explainer_reads_only_explain_windows_and_needs_no_llm(mined, monkeypatch):
    run, _ = mined
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    ctx = pd.read_parquet(run / "contexts.parquet")
    # test windows mark every token: a table that read them would list many other tokens
    ctx["activations"] = [[1.0] * len(a) if s == "test" else list(a) for a, s in zip(ctx["activations"], ctx["split"])]
    ctx.to_parquet(run / "contexts.parquet")
    out = run_explain_stage(run, ExplainConfig(explainer="token-table"))
    assert out["explained"] == 10 and out["failed"] == 0  # every live latent by default: 2 coders x 5
    df = read_explanations(run / "explanations.parquet").set_index(["coder", "latent"])
    win = pd.read_parquet(run / "windows.parquet").set_index("window_id")
    explain = ctx[ctx["split"] == "explain"]
    for (coder, latent), g in explain.groupby(["coder", "latent"]):
        if latent == 5:
            continue  # too rare
        expected = Counter()
        for w, acts in zip(g["window_id"], g["activations"]):
            expected.update(t.strip() for t, on in zip(win.at[w, "tokens"], active_mask(list(acts))) if on)
        assert {t.strip().lower() for t in expected} == {WORDS[latent]}
        ranked = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))
        row = df.loc[(coder, latent)]
        assert row["explanation"] == "the tokens " + ", ".join(f'"{t}" ({n})' for t, n in ranked)
        assert row["explainer"] == "token-table" and row["explainer_model"] == "token-table"
        assert row["attempts"] == 0 and row["parse_ok"]
    assert not (run / "llm_usage.parquet").exists()  # no LLM call in the ledger: nothing paid


# -- few-shot copies ---------------------------------------------------------------------------------------
def test_copy_detection_verbatim_near_and_genuine():
    fewshot = ["verbs of speech reporting what a person said", "digits of numbers expressing percentages or rates"]
    assert fewshot_copy("Verbs of speech, reporting what a person said.", fewshot) == fewshot[0]  # normalised equal
    assert fewshot_copy("verbs of speech reporting what someone said", fewshot) == fewshot[0]  # one word changed
    assert fewshot_copy("digits of numbers expressing percentages", fewshot) == fewshot[1]  # a shortened copy
    assert fewshot_copy("the leading digit 1 of numbers", fewshot) is None
    assert fewshot_copy("the word said after a speaker's name", fewshot) is None
    assert normalise('The word "said".') == "the word said"
    assert similarity("a b c", "a b d") == pytest.approx(0.5)


def test_judge_answer_rejects_the_current_fewshot_answers():
    fewshot = fewshot_explanations()
    assert len(fewshot) == len([m for m in load_dialogue("explain_fewshot") if m["role"] == "assistant"])
    for answer in fewshot:
        verdict = judge_answer(f"Some reasoning.\n[EXPLANATION]: {answer}", fewshot)
        assert verdict.explanation is None and verdict.copied == answer
    ok = judge_answer("Reasoning.\n[EXPLANATION]: the leading 1 of a number", fewshot)
    assert ok.explanation == "the leading 1 of a number" and ok.copied is None
    assert judge_answer("no format", fewshot).explanation is None


def test_a_copied_fewshot_answer_is_asked_again_with_a_corrective_turn(llm_env, fast_config, mined):
    run, _ = mined
    copied = fewshot_explanations()[0]

    def answer(req):
        last = req["messages"][-1]["content"]
        if COPY_TURN in last:
            return word_answer(req)
        if "<<of>>" in last or "<<Of>>" in last:
            return f"Looks like the example.\n[EXPLANATION]: {copied.upper()}!"  # a copy, whatever the spelling
        return word_answer(req)

    llm_env.answer = answer
    out = run_explain_stage(run, ExplainConfig(coders=("sae-x",)), fast_config("claude"))
    df = read_explanations(run / "explanations.parquet").set_index("latent")
    assert out["failed"] == 0 and out["explained"] == 5
    assert df.loc[1, "explanation"] == "the word of" and df.loc[1, "attempts"] == 2
    assert (df.drop(index=1)["attempts"] == 1).all()
    retry = [r.body for r in llm_env.log if COPY_TURN in str(r.body.get("messages", [])[-1:])]
    assert len(retry) == 1 and copied in str(retry[0]["messages"][-1])
    assert out["diversity"]["fewshot_copies"].tolist() == [0]


def test_a_model_that_always_copies_fails_with_the_reason(llm_env, fast_config, mined):
    run, _ = mined
    copied = fewshot_explanations()[-1]
    llm_env.answer = lambda req: f"[EXPLANATION]: {copied}"
    out = run_explain_stage(run, ExplainConfig(coders=("sae-x",), latents=2, max_retries=2), fast_config("claude"))
    df = read_explanations(run / "explanations.parquet")
    assert out["failed"] == 2 and not df["parse_ok"].any() and df["explanation"].isna().all()
    assert (df["attempts"] == 3).all() and df["failure"].str.contains("repeated the few-shot answer").all()


def test_llm_prompt_carries_the_marked_token_summary(llm_env, fast_config, mined):
    run, _ = mined
    seen = []

    def answer(req):
        seen.append(req["messages"][-1]["content"])
        return word_answer(req)

    llm_env.answer = answer
    run_explain_stage(run, ExplainConfig(coders=("bae-x",), latents=1), fast_config("claude"))
    (prompt,) = seen
    line = prompt.splitlines()[-1]
    assert line.startswith("Most frequent marked tokens: ")
    listed = re.findall(r'"([^"]*)" \((\d+)\)', line)
    marked = re.findall(r"<<(.*?)>>", prompt)
    assert {t.lower() for t, _ in listed} == {"the"} and sum(int(n) for _, n in listed) == len(marked)


# -- both explainers side by side --------------------------------------------------------------------------
def test_both_explainers_coexist_and_resume_by_explainer(llm_env, fast_config, mined):
    run, _ = mined
    llm_env.answer = word_answer
    run_explain_stage(run, ExplainConfig(latents=2), fast_config("claude"))
    calls = llm_env.completion_calls()
    assert calls == 4
    run_explain_stage(run, ExplainConfig(explainer="token-table"))
    df = read_explanations(run / "explanations.parquet")
    assert len(df) == 4 + 10 and not df.duplicated(["coder", "latent", "explainer"]).any()
    assert sorted(Counter(df["explainer"]).items()) == [("llm", 4), ("token-table", 10)]
    both = df[df["latent"] < 2].pivot(index=["coder", "latent"], columns="explainer", values="explanation")
    assert both["llm"].str.startswith("the word ").all() and both["token-table"].str.startswith("the tokens ").all()
    # re-runs: nothing new to ask, and neither explainer replaces the other's rows
    out = run_explain_stage(run, ExplainConfig(latents=2), fast_config("claude"))
    assert out["already_done"] == 4 and llm_env.completion_calls() == calls
    out = run_explain_stage(run, ExplainConfig(explainer="token-table"))
    assert out["already_done"] == 10
    assert read_explanations(run / "explanations.parquet").sort_values(["coder", "latent", "explainer"]).reset_index(drop=True) \
        .equals(df.sort_values(["coder", "latent", "explainer"]).reset_index(drop=True))


def test_rows_without_the_explainer_column_count_as_llm(llm_env, fast_config, mined):
    run, _ = mined
    llm_env.answer = word_answer
    run_explain_stage(run, ExplainConfig(latents=2), fast_config("claude"))
    path = run / "explanations.parquet"
    pq.write_table(pq.read_table(path).drop(["explainer"]), path)  # a file from before the column
    assert read_explanations(path)["explainer"].eq("llm").all()
    calls = llm_env.completion_calls()
    out = run_explain_stage(run, ExplainConfig(latents=3), fast_config("claude"))
    assert out["already_done"] == 4 and llm_env.completion_calls() == calls + 2  # only the new latents
    run_explain_stage(run, ExplainConfig(explainer="token-table", latents=1))
    df = pd.read_parquet(path)
    assert Counter(df["explainer"]) == {"llm": 6, "token-table": 2}


def test_cli_token_table_needs_no_model_or_key(mined, monkeypatch):
    run, _ = mined
    from interp_eval.cli import app

    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    dry = runner.invoke(app, ["explain", "--run", str(run), "--explainer", "token-table", "--dry-run"])
    assert dry.exit_code == 0 and "10 latents selected" in dry.stdout and "calls no LLM" in dry.stdout
    res = runner.invoke(app, ["explain", "--run", str(run), "--explainer", "token-table", "--latents", "all"])
    assert res.exit_code == 0, res.output
    assert "token-table: explained 10 latents" in res.stdout and "5 distinct explanations of 5" in res.stdout
    bad = runner.invoke(app, ["explain", "--run", str(run), "--explainer", "tokens"])
    assert bad.exit_code == 2 and "--explainer tokens" in bad.stderr
    bad = runner.invoke(app, ["explain", "--run", str(run), "--explainer", "token-table", "--latents", "some"])
    assert bad.exit_code == 2 and "--latents some" in bad.stderr


# -- diversity ---------------------------------------------------------------------------------------------
def test_diversity_counts_distinct_explanations_and_fewshot_copies():
    df = pd.DataFrame([
        # coder a, llm: 4 explained, 2 distinct after normalising, 2 few-shot copies; a failure is not counted
        ("a", 0, "llm", "Verbs of speech reporting what a person said.", True),
        ("a", 1, "llm", "verbs of speech reporting what a person said", True),
        ("a", 2, "llm", "the word year", True),
        ("a", 3, "llm", "the word year", True),
        ("a", 4, "llm", None, False),
        ("a", 0, "token-table", 'the tokens "said" (3)', True),
        ("a", 1, "token-table", 'the tokens "year" (2)', True),
        # a re-explained latent: only its last row counts
        ("b", 0, "llm", "the word of", True),
        ("b", 0, "llm", "the word to", True),
    ], columns=["coder", "latent", "explainer", "explanation", "parse_ok"])
    out = diversity(df, fewshot=["verbs of speech reporting what a person said"]).set_index(["coder", "explainer"])
    assert out.loc[("a", "llm")].to_dict() == {"explained": 4, "distinct": 2, "diversity": 0.5, "fewshot_copies": 2}
    assert out.loc[("a", "token-table")].to_dict() == {"explained": 2, "distinct": 2, "diversity": 1.0, "fewshot_copies": 0}
    assert out.loc[("b", "llm")].to_dict() == {"explained": 1, "distinct": 1, "diversity": 1.0, "fewshot_copies": 0}
    assert diversity(df.drop(columns="explainer").iloc[:0], fewshot=[]).empty
