"""The output-centric explainers (`output`, `llm-outputs`) through real HTTP against the local fake provider server.

The hand-built run (run_builders) gets output tokens in latents.parquet as mine writes them; latent i of every
coder promotes `WORDS[i]`-like tokens, and one latent has none (with the reason mine records).
"""

from __future__ import annotations

import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from llm_fixtures import fake_server, fast_config, llm_env  # noqa: F401
from run_builders import WORDS

from interp_eval.catalog import LATENTS
from interp_eval.explain.prompt import OutputTokens, build_output_request, build_request, format_output_tokens
from interp_eval.explain.stage import ExplainConfig, run_explain_stage
from interp_eval.explain.tokens import Window

NONE_WHY = "its decoder writes to the MLP's input (layers.9.mlp), a normalised space"


def _with_outputs(run) -> None:
    """latents.parquet plus output columns: latent i promotes ' P<word>' tokens and suppresses ' S<word>-<coder>';
    bae-x latent 0 has none."""
    df = pd.read_parquet(run / "latents.parquet")
    ups, downs, notes = [], [], []
    for coder, latent in zip(df["coder"], df["latent"]):
        w = WORDS[int(latent) % len(WORDS)]
        none = coder == "bae-x" and latent == 0
        ups.append(None if none else [f" P{w}", f"P{w}", "<<x>>", f" P{w}s"])  # a repeat after stripping, a forged mark
        downs.append(None if none else [f" S{w}-{coder}", '"'])  # each coder's prompts differ (no cached answer)
        notes.append(NONE_WHY if none else None)
    df = df.assign(promotes=ups, suppresses=downs, output_note=notes)
    fields = [LATENTS.schema.field(c) for c in df.columns]
    pq.write_table(pa.Table.from_pandas(df, schema=pa.schema(fields), preserve_index=False), run / "latents.parquet")


def _user(req) -> str:
    return req["messages"][-1]["content"] if "Reply again" not in req["messages"][-1]["content"] else req["messages"][-3]["content"]


def output_answer(req):
    """Names the first token of the prompt's `More likely next:` line (or of the windows prompt's output line)."""
    m = re.search(r"(?:More likely next|more likely to write next): \"([^\"]+)\"", _user(req))
    return f"They share a word.\n[EXPLANATION]: predicts {m.group(1) if m else 'nothing'}"


def test_output_tokens_are_shown_as_data():
    shown = format_output_tokens([" minister", "minister", "<<x>>", '"', "\n", "<|im_end|>"])
    assert shown == '"minister", "‹‹x››", "\\"", "\\n", "\\n\\n"'
    assert format_output_tokens([]) == "(none)"
    req = build_output_request(OutputTokens([" a"], [" b"]))
    assert req.messages[-1]["content"] == 'More likely next: "a"\nLess likely next: "b"'
    plain = build_request([Window([" the", " cat"], [0.0, 1.0])])
    with_outputs = build_request([Window([" the", " cat"], [0.0, 1.0])], outputs=OutputTokens([" a"], [" b"]))
    assert with_outputs.messages[:-1] == plain.messages[:-1] and with_outputs.system == plain.system
    assert with_outputs.messages[-1]["content"].startswith(plain.messages[-1]["content"] + "\n")  # the paper's prompt, plus


def test_output_explainer_reads_only_output_tokens_and_records_latents_without_them(llm_env, fast_config, mined):
    run, _ = mined
    _with_outputs(run)
    llm_env.answer = output_answer
    out = run_explain_stage(run, ExplainConfig(explainer="output"), fast_config("claude"))
    assert out["no_outputs"] == 1 and out["failed"] == 0 and out["explained"] == 9  # 2 coders x 5 live, one without
    df = pd.read_parquet(run / "explanations.parquet")
    ok = df[df["parse_ok"]]
    assert set(ok["explainer"]) == {"output"} and (ok["n_windows"] == 0).all()
    for coder, latent, text in zip(ok["coder"], ok["latent"], ok["explanation"]):
        assert text == f"predicts P{WORDS[latent]}"
    bad = df[~df["parse_ok"]]
    assert list(zip(bad["coder"], bad["latent"])) == [("bae-x", 0)]
    assert bad["failure"].iloc[0] == f"no output tokens: {NONE_WHY}"
    prompts = [_user(r.body) for r in llm_env.log]
    assert len(prompts) == 9 and not any("Excerpts:" in p for p in prompts)  # no window reaches this explainer
    assert all("<<" not in p for p in prompts)  # a token cannot forge a mark
    assert df["prompt_version"].str.contains("output_explain_system@").all()
    again = run_explain_stage(run, ExplainConfig(explainer="output"), fast_config("claude"))
    assert again["already_done"] == 9 and len(llm_env.log) == 9  # nothing asked twice


def test_llm_outputs_adds_the_output_line_and_lives_beside_the_plain_explainer(llm_env, fast_config, mined):
    run, _ = mined
    _with_outputs(run)
    llm_env.answer = output_answer
    run_explain_stage(run, ExplainConfig(explainer="llm-outputs"), fast_config("claude"))
    prompts = [_user(r.body) for r in llm_env.log]
    assert all(p.startswith("Excerpts:") and "When the feature is active, the model is more likely to write next:" in p
               for p in prompts)
    llm_env.answer = lambda req: "x\n[EXPLANATION]: plain"
    run_explain_stage(run, ExplainConfig(explainer="llm"), fast_config("claude"))
    df = pd.read_parquet(run / "explanations.parquet")
    by = df[df["parse_ok"]].groupby("explainer")["explanation"]
    assert set(by.get_group("llm")) == {"plain"}
    assert set(by.get_group("llm-outputs")) == {f"predicts P{w}" for w in WORDS[:5]}
    assert df.loc[df["explainer"] == "llm-outputs", "prompt_version"].str.contains("explain_outputs@").all()
    assert not df.loc[df["explainer"] == "llm", "prompt_version"].str.contains("explain_outputs@").any()
