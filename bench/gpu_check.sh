#!/usr/bin/env bash
# Issue 13's GPU figures in one device call (not yet measured: no GPU has been lent to a session so far).
# Prepare here (both folders stay out of git):
#   mkdir -p .whl && cp ../shared/wheels/*.whl .whl/ && cp -r ../shared/data/mnist .mnist
#   printf '/.whl/\n/.mnist/\n' >> .git/info/exclude
# Then: device run with carry [".whl", ".mnist"], command `bash bench/gpu_check.sh`, timeout ~480 s; logs land in $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src
# (src alone works: from a checkout, the configs are read from conf/ beside src/.)
export PYTHONUNBUFFERED=1 DIGITNET_DATA=${DIGITNET_DATA:-$PWD/.mnist} OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name --format=csv,noheader
T="model=deep trainer.accelerator=gpu trainer.enable_progress_bar=false"
summary() { python3 -c "import json; d=json.load(open('$1/cv_summary.json')); print('$2: train s (5 folds)', d['train_seconds'], ' mean', round(100*d['mean'], 3), ' runner', d['plan']['runner'], ' graph', d['plan']['cuda_graph'])"; }
# 1. The seed protocol through the CLI with the CUDA defaults (packed folds + CUDA graph), then sequential.
/usr/bin/time -f "process wall %e s" python3 -m digitnet.train $T hydra.run.dir=$OUT/gpu_packed 2>&1 | tail -n 3
summary $OUT/gpu_packed packed
/usr/bin/time -f "process wall %e s" python3 -m digitnet.train $T cv.parallel=false hydra.run.dir=$OUT/gpu_sequential 2>&1 | tail -n 2
summary $OUT/gpu_sequential sequential
# 2. task=final on the GPU, then evaluate and predict with its checkpoint.
python3 -m digitnet.train $T task=final hydra.run.dir=$OUT/gpu_final 2>&1 | tail -n 2
python3 -m digitnet.evaluate $OUT/gpu_final | head -n 1
python3 -m digitnet.predict $OUT/gpu_final samples/sample_image.png
# 3. The four-way bench at 1 epoch, and the CUDA-only tests.
python3 bench/cv_speed.py --quick --device cuda --only naive plain sequential parallel
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -n 5
