#!/bin/bash
# Here, before a device session: what the device calls carry, all git-ignored.
#   .whl/        interp-eval's own wheel, and the wheels of what the GPU image lacks (sparsify and its
#                needs for the benches beside it, schedulefree, gguf to convert the subject model)
#   .gpu/model/  the packaged subject model's GGUF in pieces of 34 MiB, one a call (bench/device_model.py)
# Then see bench/device/run.sh for the calls.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
rm -rf .whl .gpu/model
mkdir -p .whl
$PY -m pip wheel -q --no-deps -w .whl .
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  eai-sparsify==1.3.3 simple-parsing==0.1.9 docstring-parser natsort==8.4.0 datasets==5.2.0 dill==0.4.1 \
  multiprocess==0.70.19 schedulefree==1.4.1 gguf==0.19.0
$PY bench/device_model.py split --out .gpu/model --mib 34
du -sh .whl .gpu/model/*
echo "tracked tree: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes (a call carries 64 MiB in all)"
