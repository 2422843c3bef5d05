#!/usr/bin/env bash
# Issue 11's recipe search on one GPU in one device call: bench/recipe_search.py (6 candidates' 5-fold CVs at once,
# the pick on CV, then 3 seeds of task=final for the picks and every fold ensemble, at once).
# Prepare here as for bench/gpu_check.sh (.whl and .mnist, both out of git), then: device run with carry
# [".whl", ".mnist"], command `bash bench/recipe_gpu.sh`, timeout ~540 s. A dry run on CPU, to check the script:
#   DEV=cpu EXTRA="data.limit=1200 trainer.max_epochs=1" OUT=/tmp/recipe_gpu bash bench/recipe_gpu.sh
set -uo pipefail
DEV=${DEV:-gpu} EXTRA=${EXTRA:-} OUT=${OUT:-/tmp/recipe_gpu_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/recipe_gpu.log") 2>&1
if [ "$DEV" = gpu ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:src DIGITNET_DATA=${DIGITNET_DATA:-$PWD/.mnist}
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi
# 6 to 9 processes at once on 16 cores: 2 torch threads each (the GPU does the work).
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"
python3 bench/recipe_search.py --report "$OUT/recipe_search.json" --cv-timeout ${CV_TIMEOUT:-250} \
  --final-timeout ${FINAL_TIMEOUT:-200} -- trainer.accelerator=$DEV $EXTRA
echo "done $(date +%T)"
