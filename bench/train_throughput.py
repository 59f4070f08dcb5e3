"""Training throughput: interp-eval's coders against EleutherAI's sparsify, measured in the same run.

Each trainer runs in its own subprocess on identical synthetic activation batches (same shapes,
same k, same optimiser family), timing each steady-state step after warm-up, and reports tokens/s
from the median step (and the mean) and peak RSS. sparsify runs from a separate virtualenv
(`--sparsify-python`, default .venv-bench; make it with
`python -m venv .venv-bench && .venv-bench/bin/pip install torch==2.13.0 eai-sparsify`).

Per latent count it also times the dense fp32 encoder product `x @ W_enc` for one batch alone: a
training step that forms that product cannot be faster, so batch / that time is the bound (tokens/s)
and each trainer's fraction of it says how much the step costs beyond the product. Beside it, the
bf16 product the candidate selection forms instead (x^ @ W^ with the bias and two slack columns,
d_in + 3 padded to 32, in bf16), timed the same way. interp-eval's default selection
(INTERP_EVAL_ENCODE=auto) on CPUs with AVX512-BF16 or AMX tries both selections on its first calls
and keeps the faster (interp_eval/coders/topk.py); the bf16 one forms the product in bf16 only to
pick candidates, proves the fp32 top-k among them and rescores them in fp32, so it can pass the fp32
bound. The interp-eval workers warm up until that choice is made, then time their steps; the SAE and
BAE are run a second time with the selection forced to dense fp32 (`--fp32-select`) to show both.
interp-eval's workers keep freed memory for reuse (interp_eval/subject/allocator.py) as its trainer
does (`train_coder`); `--no-reuse` runs them with glibc's defaults.

On a machine shared with other work, separate runs of each trainer see different loads.
`--interleaved N` instead builds every trainer in one process (the sparsify venv's Python, with
interp-eval on its path) and times N rounds of one step each, in turn, so all see the same load; it
reports the median step of each and the median over rounds of each step's ratio to sparsify's step
in the same round. There, the allocator setting (`--no-reuse`) applies to sparsify too.

    python bench/train_throughput.py                          # d=576, k=32, batch 4096, M = 4608 and 36864
    python bench/train_throughput.py --latents 4608 --steps 10
    python bench/train_throughput.py --latents 36864 --interleaved 7   # on a busy machine
    python bench/train_throughput.py --device cuda --interleaved 50 --sparsify-python python  # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from machine import cpu_line, load

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, os, resource, sys, time
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
import torch
args = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(args["threads"])
d, m, k, b = args["d"], args["latents"], args["k"], args["batch"]
x = torch.randn(b * 4, d)
def batches():
    i = 0
    while True:
        yield x[(i % 4) * b:(i % 4 + 1) * b]
        i += 1
if args["impl"] == "bound":
    # the dense encoder product alone, in both weight layouts ([d, M] and the transpose of [M, d],
    # nn.Linear's); the faster one sets the bound. Then the bf16 product of the candidate selection
    # ([M, d + 3] padded to 32 columns, as interp_eval/coders/topk.py forms it), for comparison.
    times = {}
    d_pad = -(-(d + 3) // 32) * 32
    for layout in ("d_by_m", "m_by_d_t", "bf16"):
        if layout == "bf16":
            w = (torch.randn(m, d_pad) / d**0.5).bfloat16().T
            xs = torch.nn.functional.pad(x, (0, d_pad - d)).bfloat16()
        else:
            w = torch.randn(d, m) / d**0.5 if layout == "d_by_m" else (torch.randn(m, d) / d**0.5).T
            xs = x
        xb = xs[:b]
        for _ in range(args["warmup"]):
            xb @ w
        ts = []
        for i in range(args["reps"]):
            xb = xs[(i % 4) * b:(i % 4 + 1) * b]
            t = time.perf_counter(); xb @ w; ts.append(time.perf_counter() - t)
        times[layout] = sorted(ts)[len(ts) // 2]
    bf16 = times.pop("bf16")
    best = min(times.values())
    print(json.dumps({"tokens_per_s": b / best, "seconds": best, "layouts": {k: b / v for k, v in times.items()},
                      "bf16_seconds": bf16, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    sys.exit(0)
if args["impl"] == "sparsify":
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.sign_sgd import SignSGD
    from schedulefree import ScheduleFreeWrapper
    model = SparseCoder(d, SparseCoderConfig(num_latents=m, k=k))
    if args["optimizer"] == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    else:
        opt = ScheduleFreeWrapper(SignSGD(model.parameters(), lr=1e-3), momentum=0.95); opt.train()
    def step(xb):
        out = model(xb)
        out.fvu.backward()
        model.remove_gradient_parallel_to_decoder_directions()
        opt.step(); opt.zero_grad()
        model.set_decoder_norm_to_unit_norm()
else:
    sys.path.insert(0, args["root"])
    if args["reuse"]:  # as train_coder does
        from interp_eval.subject.allocator import reuse_freed_memory
        reuse_freed_memory()
    from interp_eval.coders.coder import CODER_KINDS, CoderConfig, SparseCoder, fvu
    from interp_eval.coders.optim import Optimizer
    kind, act = CODER_KINDS[args["impl"]]
    model = SparseCoder(CoderConfig(kind, act, d, m, k), seed=0)
    opt = Optimizer(model.parameters(), args["optimizer"], 1e-4, 10_000, 0)
    norm = model.cfg.normalize_decoder
    def step(xb):
        y_hat, _ = model(xb)
        fvu(xb, y_hat).backward()
        if norm:
            model.remove_gradient_parallel_to_decoder_directions()
        opt.step(); opt.zero_grad()
        if norm:
            model.set_decoder_norm_to_unit_norm()
it = batches()
for _ in range(args["warmup"]):
    step(next(it))
warm_extra = 0
if args["impl"] != "sparsify":
    from interp_eval.coders import topk as topk_mod
    # "auto" tries both selections on its first calls: warm up until it has chosen (at most 16 more steps)
    while topk_mod.auto_pending() and warm_extra < 16:
        step(next(it)); warm_extra += 1
    for key in topk_mod.CANDIDATE_STATS:
        topk_mod.CANDIDATE_STATS[key] = 0  # count the timed steps' rows only
ts = []
for _ in range(args["steps"]):
    xb = next(it)
    t = time.perf_counter(); step(xb); ts.append(time.perf_counter() - t)
median = sorted(ts)[len(ts) // 2]  # the median step: this VM's neighbours make single steps noisy
extra = {}
if args["impl"] != "sparsify":
    from interp_eval.coders import topk as topk_mod
    st = topk_mod.CANDIDATE_STATS
    auto = [c.summary() for c in topk_mod.AUTO_CHOICES.values()]
    extra = {"selection": "bf16 candidates" if st["rows"] else "dense fp32",
             "fallback": st["fallback_rows"] / st["rows"] if st["rows"] else None,
             "auto": auto[0] if auto else None, "warmup_extra": warm_extra}
print(json.dumps({"tokens_per_s": b / median, "mean_tokens_per_s": len(ts) * b / sum(ts),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}))
"""

INTERLEAVED = r"""
import json, os, sys, time
import torch
args = json.loads(sys.argv[1])
dev = torch.device(args["device"])
sys.path.insert(0, args["root"])
torch.manual_seed(0)
torch.set_num_threads(args["threads"])
if args["reuse"]:
    from interp_eval.subject.allocator import reuse_freed_memory
    reuse_freed_memory()
from sparsify import SparseCoder as SparsifyCoder, SparseCoderConfig
from interp_eval.coders.coder import CODER_KINDS, CoderConfig, SparseCoder, fvu
from interp_eval.coders.optim import Optimizer
from interp_eval.coders import topk as topk_mod
d, m, k, b = args["d"], args["latents"], args["k"], args["batch"]
x = torch.randn(b * 4, d, device=dev)
# on CUDA as interp-eval's train_coder does: its forward in bf16 autocast (sparsify's forward has its own)
autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
sp = SparsifyCoder(d, SparseCoderConfig(num_latents=m, k=k), device=dev)
sp_opt = torch.optim.Adam(sp.parameters(), lr=1e-4)
def sparsify_step(xb):
    out = sp(xb)
    out.fvu.backward()
    sp.remove_gradient_parallel_to_decoder_directions()
    sp_opt.step(); sp_opt.zero_grad()
    sp.set_decoder_norm_to_unit_norm()
def ours(impl, precision):
    kind, act = CODER_KINDS[impl]
    model = SparseCoder(CoderConfig(kind, act, d, m, k), device=dev, seed=0)
    opt = Optimizer(model.parameters(), "adam", 1e-4, 10_000, 0)
    def step(xb):
        topk_mod.ENCODE_PRECISION = precision
        with autocast():
            y_hat, _ = model(xb)
            loss = fvu(xb.float(), y_hat.float())
        loss.backward()
        model.remove_gradient_parallel_to_decoder_directions()
        opt.step(); opt.zero_grad()
        model.set_decoder_norm_to_unit_norm()
    return step
w = (torch.randn(m, d, device=dev) / d**0.5).T
def bound(xb):  # the encoder product alone, in the precision the trainers form it
    with autocast():
        xb @ w
steps = {"sparsify": sparsify_step, "bound": bound}
for impl in args["impls"]:
    steps[impl] = ours(impl, "auto")
for impl in args["fp32"]:
    steps[impl + "/fp32"] = ours(impl, "fp32")
i = 0
def batch():
    global i
    i += 1
    return x[(i % 4) * b:(i % 4 + 1) * b]
for _ in range(args["warmup"]):
    for f in steps.values():
        f(batch())
extra = 0
while topk_mod.auto_pending() and extra < 16:  # "auto" tries both selections on its first calls
    for impl in args["impls"]:
        steps[impl](batch())
    extra += 1
times = {n: [] for n in steps}
for _ in range(args["rounds"]):
    for n, f in steps.items():
        xb = batch()
        sync(); t = time.perf_counter(); f(xb); sync(); times[n].append(time.perf_counter() - t)
print(json.dumps({"times": times, "load": os.getloadavg(), "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                  "auto": [c.summary() for c in topk_mod.AUTO_CHOICES.values()]}))
"""


def interleaved(a: argparse.Namespace, latents: int) -> None:
    impls = [t for t, _ in TRAINERS if a.only is None or t in a.only]
    fp32 = [t for t in a.fp32_select if t in impls]
    args = dict(d=a.d, latents=latents, k=a.k, batch=a.batch, threads=a.threads, root=str(ROOT), reuse=not a.no_reuse,
                impls=impls, fp32=fp32, rounds=a.interleaved, warmup=a.warmup if a.warmup is not None else 1,
                device=a.device)
    # sparsify's decoder: its Triton kernel on CUDA (its default there), its eager one on CPU
    triton = {"SPARSIFY_DISABLE_TRITON": "1"} if a.device == "cpu" else {}
    out = subprocess.run([a.sparsify_python, "-c", INTERLEAVED, json.dumps(args)], capture_output=True, text=True,
                         env={**os.environ, **triton, "INTERP_EVAL_ENCODE": "auto"})
    if out.returncode != 0:
        raise SystemExit(f"interleaved run failed:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    times = r["times"]
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    base = times["sparsify"]
    print(f"\nlatents={latents}, interleaved: {a.interleaved} rounds of one step each (after {args['warmup']} "
          f"warm-up round(s) and auto's trials) on {r['device']}; load average at the end "
          f"{' '.join(f'{v:.2f}' for v in r['load'])}")
    for au in r["auto"]:
        if au.get("dense_s_per_row"):
            print(f"auto chose {'bf16 candidates' if au['candidates'] else 'dense fp32'}: dense "
                  f"{au['dense_s_per_row'] * 1e6:.0f} vs candidates {au['candidates_s_per_row'] * 1e6:.0f} us/row")
    print(f"{'trainer':<16}{'median step ms':>16}{'tokens/s':>12}{'vs sparsify (median of per-round ratios)':>42}"
          f"{'min-max ratio':>16}")
    for n, v in times.items():
        ratios = sorted(s / t for s, t in zip(base, v))
        print(f"{n:<16}{med(v) * 1e3:>16,.2f}{a.batch / med(v):>12,.0f}{med(ratios):>41.2f}x"
              f"{ratios[0]:>9.2f}-{ratios[-1]:.2f}")


TRAINERS = (
    ("sae", "interp-eval SAE (TopK)"),
    ("bae", "interp-eval BAE (binary)"),
    ("tc", "interp-eval TC"),
    ("btc", "interp-eval BTC"),
)


def run(impl: str, python: str, a: argparse.Namespace, latents: int, steps: int, warmup: int,
        encode: str = "auto") -> dict:
    args = dict(impl=impl, d=a.d, latents=latents, k=a.k, batch=a.batch, steps=steps, warmup=warmup, reps=a.bound_reps,
                optimizer=a.optimizer, threads=a.threads, root=str(ROOT), reuse=not a.no_reuse)
    out = subprocess.run([python, "-c", WORKER, json.dumps(args)], capture_output=True, text=True,
                         env={**os.environ, "SPARSIFY_DISABLE_TRITON": "1", "INTERP_EVAL_ENCODE": encode})
    if out.returncode != 0:
        raise SystemExit(f"{impl} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def schedule(latents: int, a: argparse.Namespace) -> tuple[int, int]:
    """(timed steps, warm-up steps): fewer at large latent counts so the whole bench takes minutes."""
    small = latents <= 8192
    steps = a.steps if a.steps is not None else (6 if small else 3)
    warmup = a.warmup if a.warmup is not None else (2 if small else 1)
    return steps, warmup


# (trainer, latents or None for every size, minimum ratio to sparsify) and the bound fraction
RATIO_TARGETS = (("bae", 4608, 1.5), ("bae", 36864, 2.0), ("sae", None, 1.2))
BOUND_TARGET = 0.60
BOUND_TRAINERS = ("sae", "bae")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=576)
    p.add_argument("--latents", type=int, nargs="+", default=[4608, 36864])
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 6, or 3 above 8192 latents)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 2, or 1 above 8192 latents)")
    p.add_argument("--bound-reps", type=int, default=5, help="timed encoder products for the bound (median)")
    p.add_argument("--optimizer", default="adam", choices=["adam", "signum"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="+", default=None, choices=[t for t, _ in TRAINERS],
                   help="run only these interp-eval trainers (sparsify and the bound always run)")
    p.add_argument("--fp32-select", nargs="*", default=list(BOUND_TRAINERS), choices=[t for t, _ in TRAINERS],
                   help="also run these trainers with the encoder's selection forced to dense fp32 "
                        "(INTERP_EVAL_ENCODE=fp32), for comparison with the default (auto) selection")
    p.add_argument("--no-reuse", action="store_true",
                   help="run interp-eval's workers with glibc's allocator defaults (train_coder keeps freed memory)")
    p.add_argument("--sparsify-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    p.add_argument("--interleaved", type=int, default=0, metavar="ROUNDS",
                   help="time all trainers in one process, one step each in turn, for this many rounds (Adam)")
    p.add_argument("--device", default="cpu",
                   help="cpu, or cuda (with --interleaved): both libraries' forward in bf16 autocast there, as "
                        "each trains on CUDA; the bound is the encoder product in bf16")
    a = p.parse_args()
    if a.device != "cpu" and not a.interleaved:
        p.error("--device cuda needs --interleaved N (the separate-process mode times CPU trainers only)")
    where = "fp32 CPU" if a.device == "cpu" else f"{a.device}, bf16 autocast"
    print(f"d={a.d} k={a.k} batch={a.batch} optimizer={a.optimizer} threads={a.threads}, {where}; {cpu_line()}")
    print(f"load average at start: {load()}")
    if a.interleaved:
        for m in a.latents:
            interleaved(a, m)
        return
    results: dict[int, dict[str, dict]] = {}
    for m in a.latents:
        steps, warmup = schedule(m, a)
        bound = run("bound", sys.executable, a, m, steps, warmup=2)
        res = {"bound": bound, "sparsify": run("sparsify", a.sparsify_python, a, m, steps, warmup)}
        for impl, _ in TRAINERS:
            if a.only is None or impl in a.only:
                res[impl] = run(impl, sys.executable, a, m, steps, warmup)
        for impl in a.fp32_select:
            if a.only is None or impl in a.only:
                res[impl + "/fp32"] = run(impl, sys.executable, a, m, steps, warmup, encode="fp32")
        results[m] = res
        base, b = res["sparsify"]["tokens_per_s"], bound["tokens_per_s"]
        layouts = ", ".join(f"{k} {v:,.0f}" for k, v in bound["layouts"].items())
        print(f"\nlatents={m}  ({steps} timed steps after {warmup} warm-up)")
        print(f"encoder product x @ W_enc alone: {bound['seconds'] * 1e3:.0f} ms a batch -> bound {b:,.0f} tokens/s "
              f"(layouts: {layouts}); the candidates' bf16 product {bound['bf16_seconds'] * 1e3:.0f} ms "
              f"({bound['seconds'] / bound['bf16_seconds']:.2f}x faster)")
        print(f"load average after this size: {load()}")
        print(f"{'trainer':<34}{'tokens/s':>10}{'vs sparsify':>13}{'of bound':>10}{'mean tok/s':>12}"
              f"{'peak RSS MB':>13}  selection")
        rows = [("sparsify", "sparsify TopK SAE")] + [t for t in TRAINERS if t[0] in res]
        rows += [(i + "/fp32", label + " fp32-sel") for i, label in TRAINERS if i + "/fp32" in res]
        for impl, label in rows:
            r = res[impl]
            tps = r["tokens_per_s"]
            sel = r.get("selection") or ""
            if r.get("fallback") is not None:
                sel += f" ({r['fallback']:.1%} of rows recomputed)"
            if r.get("auto") and r["auto"].get("dense_s_per_row"):
                au = r["auto"]
                sel += (f" [auto: dense {au['dense_s_per_row'] * 1e6:.0f} vs candidates "
                        f"{au['candidates_s_per_row'] * 1e6:.0f} us/row]")
            print(f"{label:<34}{tps:>10,.0f}{tps / base:>12.2f}x{tps / b:>9.0%}{r['mean_tokens_per_s']:>12,.0f}"
                  f"{r['peak_rss_mb']:>13,.0f}  {sel}")
    print("\ntargets:")
    for impl, m_target, ratio in RATIO_TARGETS:
        for m, res in results.items():
            if (m_target is not None and m != m_target) or impl not in res:
                continue
            got = res[impl]["tokens_per_s"] / res["sparsify"]["tokens_per_s"]
            print(f"  {impl} >= {ratio:.1f}x sparsify at {m} latents: {got:.2f}x -> {'met' if got >= ratio else 'NOT met'}")
    for impl in BOUND_TRAINERS + tuple(i + "/fp32" for i in BOUND_TRAINERS):
        for m, res in results.items():
            if impl not in res:
                continue
            got = res[impl]["tokens_per_s"] / res["bound"]["tokens_per_s"]
            print(f"  {impl} >= {BOUND_TARGET:.0%} of the encoder-product bound at {m} latents: {got:.1%} -> "
                  f"{'met' if got >= BOUND_TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
