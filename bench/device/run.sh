#!/bin/bash
# The GPU measurements of issue 23 in three device calls that follow one another while the machine is
# warm (about 30 s between calls), each carrying one piece of the subject model (bench/device/prepare.sh
# made them). Every call gathers the piece it carries; the phases named run after that:
#
#   call 1: carry [.whl, .gpu/model/1]  command: bash bench/device/run.sh train        (~5 min)
#   call 2: carry [.whl, .gpu/model/2]  command: bash bench/device/run.sh              (~30 s)
#   call 3: carry [.whl, .gpu/model/3]  command: bash bench/device/run.sh tests mine   (~5 min)
#
# tests: the suite's device tests (tests/test_devices.py: CPU and CUDA codes compared) on CUDA; they
#        load the packaged model, so they run once all its pieces are there
# train: bench/train_throughput.py --device cuda --interleaved at 4,608, 36,864 and 131,072 latents
# mine:  the real subject model rejoined and converted; bench/mine_throughput.py on 131,072 and 1M
#        tokens with the four demo-shaped coders, every part of the stage timed; the CLI's mine on CUDA
# Outputs land in $OUT (they come back). Rehearse the phases here at tiny sizes with
#   DEV=cpu SMOKE=1 PY=.venv/bin/python SPY=.venv-bench/bin/python bash bench/device/run.sh tests train mine
set -u
DEV=${DEV:-cuda}; PY=${PY:-python3}; SPY=${SPY:-$PY}; OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 INTERP_EVAL_PROGRESS=0
export TOKENIZERS_PARALLELISM=false INTERP_EVAL_CACHE=${INTERP_EVAL_CACHE:-/tmp/iecache}
if [ -z "${SMOKE:-}" ]; then
  if [ ! -e /tmp/site/interp_eval ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  fi
  export PYTHONPATH=/tmp/site:$PWD
  LAT="4608 36864 131072"; ROUNDS=30; TOK="131072 1000000"; THREADS=16; SMALL=""
else
  LAT="1024"; ROUNDS=2; TOK="16384"; THREADS=2; SMALL="--expansion 1"
fi
log() { echo "== $* ($(date +%T))" | tee -a "$OUT/phases.txt"; }

log "gather the model pieces carried by this call"
$PY bench/device_model.py gather --from .gpu/model --stash /tmp/ie-model-pieces 2>&1 | tee -a "$OUT/phases.txt"

for phase in "$@"; do
  case $phase in
    tests)
      log "device tests on $DEV"
      $PY bench/device_model.py gather --from .gpu/model --stash /tmp/ie-model-pieces --require-complete || exit 1
      [ "$DEV" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
      $PY -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
      INTERP_EVAL_TEST_DEVICE=$DEV timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_devices.py 2>&1 \
        | tail -30 | tee "$OUT/device_tests.txt"
      ;;
    train)
      log "train bench on $DEV"
      timeout 300 $PY bench/train_throughput.py --device "$DEV" --interleaved $ROUNDS --sparsify-python $SPY \
        --threads $THREADS --latents $LAT 2>&1 | grep -v Triton | tee "$OUT/train_bench.txt"
      ;;
    mine)
      log "mine bench on $DEV with the packaged model's real weights"
      $PY bench/device_model.py gather --from .gpu/model --stash /tmp/ie-model-pieces --require-complete || exit 1
      timeout 300 $PY bench/mine_throughput.py --device "$DEV" --kinds sae bae tc btc --tokens $TOK --threads $THREADS $SMALL \
        2>&1 | tee "$OUT/mine_bench.txt"
      ;;
    *) echo "unknown phase $phase (tests, train, mine)"; exit 2 ;;
  esac
done
log "done"
