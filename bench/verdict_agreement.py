"""Do two runs of the same command reach the same verdicts? Compare two results folders.

    python bench/verdict_agreement.py results/demo runs/demo-2/results

A verdict is evidence only if a second run of the same command reaches it too. This compares what two report
folders (`interp-eval report` or `reproduce --results`) concluded:
- every claim's verdict in `claims.csv` (and whether it was marked borderline);
- every scorer row's power call in `scorers.csv` ("has power", "no measured power", "too few latents"), matched by
  coder, scorer and explainer.
It prints each disagreement, marks those where either run called the verdict borderline (the report's own warning
that a rerun could flip it), and exits 1 if any verdict that neither run marked borderline differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

KEY = ["coder", "scorer", "explainer"]


def power_calls(folder: Path) -> pd.DataFrame:
    df = pd.read_csv(folder / "scorers.csv")
    status = df["power_status"] if "power_status" in df else df["verdict"]
    edge = df["power_borderline"].fillna(False).astype(bool) if "power_borderline" in df else pd.Series(False, index=df.index)
    return pd.DataFrame({**{k: df[k].astype(str) for k in KEY}, "call": status.astype(str).str.replace(r" \(.*\)$", "", regex=True),
                         "borderline": edge})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    hard, soft = [], []

    ca, cb = (pd.read_csv(f / "claims.csv").set_index("claim") for f in (args.a, args.b))
    for n in sorted(set(ca.index) | set(cb.index)):
        va, vb = (c.loc[n, "verdict"] if n in c.index else "(missing)" for c in (ca, cb))
        edge = any(bool(c.loc[n, "borderline"]) for c in (ca, cb) if n in c.index)
        print(f"claim {n}: {va} | {vb}" + ("  (borderline)" if edge else ""))
        if va != vb:
            (soft if edge else hard).append(f"claim {n}: {va} vs {vb}")

    pa, pb = power_calls(args.a), power_calls(args.b)
    m = pa.merge(pb, on=KEY, how="outer", suffixes=("_a", "_b"))
    for r in m.itertuples(index=False):
        if r.call_a != r.call_b:
            edge = bool(r.borderline_a == True or r.borderline_b == True)  # noqa: E712 (NaN for a missing row)
            (soft if edge else hard).append(f"{r.coder} / {r.scorer} / {r.explainer}: {r.call_a} vs {r.call_b}")
    print(f"scorer rows: {len(m)}, power calls that differ: {int((m['call_a'] != m['call_b']).sum())}")
    for line in soft:
        print(f"differs, marked borderline: {line}")
    for line in hard:
        print(f"DIFFERS: {line}")
    print("agree on every verdict not marked borderline" if not hard else f"{len(hard)} verdicts differ")
    return 1 if hard else 0


if __name__ == "__main__":
    sys.exit(main())
