"""Throughput of the explain stage through the LLM layer: N latents against the local fake provider.

    python bench/llm_throughput.py [--latents 200] [--latency 1.0] [--concurrency 32] [--model claude]

Builds a mined run directory from real corpus windows (tests/run_builders.py; 40 explanation windows
of 32 tokens per latent), starts the test suite's fake Anthropic/OpenAI server with a fixed latency
per call, and runs `run_explain_stage` on N latents. Prints wall time against calls x latency (what
one call at a time would take; target: at least 25x faster), calls and input/output tokens per
latent, and a second identical run (all from the response cache: zero calls). The provider SDKs
are imported before the clock starts (a one-off cost per process, not a per-call one).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from fake_llm_server import FakeLLMServer  # noqa: E402
from run_builders import WORDS, build_mined_run  # noqa: E402

TOKENS = ["input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens"]
ANSWER = "The marked tokens are frequent function words.\n[EXPLANATION]: common function words in news text"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latents", type=int, default=200)
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--model", default="claude")
    args = ap.parse_args()

    os.environ.setdefault("INTERP_EVAL_PROGRESS", "0")
    from transformers import AutoTokenizer

    from interp_eval.artifacts import RunDir
    from interp_eval.catalog import EXPLANATIONS, LLM_USAGE
    from interp_eval.explain.stage import ExplainConfig, run_explain_stage
    from interp_eval.llm import LLMConfig
    from interp_eval.llm.backends import anthropic_backend, openai_backend  # noqa: F401  (import the SDKs before timing)
    from interp_eval.subject.model import packaged_model_dir

    server = FakeLLMServer(answer=lambda req: ANSWER).start()
    server.latency = args.latency
    os.environ.update(ANTHROPIC_API_KEY="fake-anthropic-bench-key", ANTHROPIC_BASE_URL=server.url,
                      OPENAI_API_KEY="fake-openai-bench-key", OPENAI_BASE_URL=server.url + "/v1")
    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir())
    per_coder = min(25, args.latents)  # 25 of the builder's 30 words per coder: 200 latents = 8 coders
    coders = tuple(f"sae-bench{i}" for i in range(math.ceil(args.latents / per_coder)))
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        build_mined_run(run, tokenizer, coders=coders, n_latents=per_coder, n_explain=40, n_test=0, n_negative=0,
                        window=32, rare=0, n_windows=1500)
        cfg = LLMConfig(model=args.model, concurrency=args.concurrency, cache_path=Path(tmp) / "cache.sqlite", progress=False)
        explain = ExplainConfig(latents=per_coder, chunk=args.latents)
        # exactly N latents: the first N of the coders in order
        t0 = time.perf_counter()
        out = run_explain_stage(run, explain, cfg)
        wall = time.perf_counter() - t0
        calls = server.completion_calls()
        tokens = RunDir(run).read(LLM_USAGE, columns=TOKENS).sum()  # the first run's calls only
        t1 = time.perf_counter()
        run_explain_stage(run, explain, cfg)
        wall2 = time.perf_counter() - t1
        calls2 = server.completion_calls() - calls
        n = len(RunDir(run).read(EXPLANATIONS, columns=["latent"]))
    server.stop()
    sequential = calls * args.latency
    print(f"explain stage, model {args.model}: {n} latents, {args.latency:.1f} s latency per call, concurrency {args.concurrency}")
    print(f"wall {wall:.1f} s vs one call at a time {sequential:.0f} s  ->  {sequential / wall:.1f}x faster (target >= 25x)")
    print(f"calls per latent {calls / n:.2f}; explained {out['explained']}, failed {out['failed']}")
    per = tokens / n
    print(f"tokens per latent: input {per['input_tokens']:.0f} (+ cache read {per['cache_read_tokens']:.0f}, "
          f"cache write {per['cache_write_tokens']:.0f}), output {per['output_tokens']:.0f}")
    print(f"second identical run: {calls2} calls, wall {wall2:.1f} s")


if __name__ == "__main__":
    main()
