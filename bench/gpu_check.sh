#!/usr/bin/env bash
# Issue 5's GPU figures in one device call (not yet measured: no GPU was lent to the session that wrote this).
# Prepare here (both folders stay out of git):
#   mkdir -p .whl && cp ../shared/wheels/*.whl .whl/ && cp -r ../shared/data/mnist .mnist
#   printf '/.whl/\n/.mnist/\n' >> .git/info/exclude
# Then: device run with carry [".whl", ".mnist"] and command `bash bench/gpu_check.sh`; figures land in $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src
export PYTHONUNBUFFERED=1 DATA=${DATA:-.mnist} OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name --format=csv,noheader
# 1. The seed protocol end to end through the CLI: fold-parallel + CUDA graph (cv.parallel=auto on CUDA).
/usr/bin/time -f "process wall %e s" python3 -m digitnet.train model=deep trainer.accelerator=gpu data.root=$DATA \
  trainer.enable_progress_bar=false hydra.run.dir=$OUT/gpu_parallel 2>&1 | tail -n 8
python3 -c "import json; d=json.load(open('$OUT/gpu_parallel/cv_summary.json')); print('train s, all 5 folds:', d['train_seconds'], ' mean', d['mean'])"
# 2. Same run, sequential (accuracy within 0.1 pp?), and bf16 reported separately.
python3 -m digitnet.train model=deep trainer.accelerator=gpu data.root=$DATA cv.parallel=false \
  trainer.enable_progress_bar=false hydra.run.dir=$OUT/gpu_sequential 2>&1 | tail -n 2
python3 -m digitnet.train model=deep trainer.accelerator=gpu data.root=$DATA trainer.precision=bf16-mixed \
  trainer.enable_progress_bar=false hydra.run.dir=$OUT/gpu_bf16 2>&1 | tail -n 2
# 3. The four-way bench, 1 epoch.
python3 bench/cv_speed.py --quick --device cuda --data-root $DATA --only naive plain sequential parallel
