#!/bin/bash
# GPU checks for issue 15: the CUDA path end to end, then train and mine benches beside sparsify.
# DEV/PY/SMOKE let it be rehearsed on CPU here.
DEV=${DEV:-cuda}; PY=${PY:-python3}; OUT=${OUT:-/tmp/gpu-out}; mkdir -p $OUT
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 INTERP_EVAL_PROGRESS=0 TOKENIZERS_PARALLELISM=false
export INTERP_EVAL_CACHE=/tmp/iecache
if [ -z "$SMOKE" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/.gpu/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  LAT="4608 36864 131072"; ROUNDS=30; TOK="131072 1000000"; TRAIN_TOK=524288
else
  LAT="1024"; ROUNDS=2; TOK="16384"; TRAIN_TOK=16384
fi
$PY -c "import torch, transformers, pyarrow, sparsify; print('torch', torch.__version__, 'transformers', transformers.__version__, 'pyarrow', pyarrow.__version__)" 2>&1 | grep -v Triton
lscpu | grep -E "Model name|^CPU\(s\)"
# a random-weight copy of the packaged subject model: its 540 MB of weights cannot travel (64 MiB)
$PY - <<'PYEOF'
import shutil, torch
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM
src, dst = Path(".gpu/smollm2"), Path("/tmp/smollm2-random")
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.float32).save_pretrained(dst)
for f in src.iterdir():
    if f.name != "config.json":
        shutil.copy(f, dst / f.name)
print("random-weight subject model at", dst)
PYEOF
M=/tmp/smollm2-random
echo "== CPU vs $DEV encodings of one coder"
$PY - $DEV <<'PYEOF'
import sys, torch
from interp_eval.coders.coder import CODER_KINDS, CoderConfig, SparseCoder
dev = sys.argv[1]
for short in ("sae", "bae", "tc", "btc"):
    kind, act = CODER_KINDS[short]
    c = SparseCoder(CoderConfig(kind, act, 576, 4608, 32), seed=0)
    x = torch.randn(2048, 576) * 3
    with torch.no_grad():
        a = c.encode(x) if hasattr(c, "encode") else c(x)[1]
        c2 = SparseCoder(CoderConfig(kind, act, 576, 4608, 32), device=dev, seed=0)
        c2.load_state_dict(c.state_dict())
        b = c2.encode(x.to(dev)) if hasattr(c2, "encode") else c2(x.to(dev))[1]
    same = (a.indices.sort(-1).values == b.indices.cpu().sort(-1).values).float().mean().item()
    err = (a.values.sort(-1).values - b.values.cpu().sort(-1).values).abs().max().item()
    print(f"{short}: same indices {same:.4%}, max |value diff| {err:.2e}")
PYEOF
echo "== CLI train + mine on $DEV"
rm -rf /tmp/r; mkdir -p /tmp/r
( time timeout 240 $PY -m interp_eval.cli train --run /tmp/r --device $DEV --model $M --coder sae --coder bae --coder tc --coder btc --tokens $TRAIN_TOK --batch-size 4096 --eval-tokens 16384 ) 2>&1 | tail -25 | tee $OUT/cli_train.txt
( time timeout 180 $PY -m interp_eval.cli mine --run /tmp/r --device $DEV --model $M --tokens 65536 ) 2>&1 | tail -15 | tee $OUT/cli_mine.txt
echo "== train bench"
timeout 240 $PY bench/train_throughput.py --device $DEV --interleaved $ROUNDS --sparsify-python $PY --threads 16 --latents $LAT 2>&1 | grep -v Triton | tee $OUT/train_bench.txt
echo "== mine bench"
timeout 240 $PY bench/mine_throughput.py --device $DEV --model $M --kinds sae bae tc btc --tokens $TOK --threads 16 2>&1 | tee $OUT/mine_bench.txt
