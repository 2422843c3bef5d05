#!/usr/bin/env bash
# Issue 11's recipe search on one GPU in one device call: bench/recipe_search.py --serial (the candidates' 5-fold CVs
# one at a time, the pick on CV, every fold ensemble on the holdout, then task=final seeds of the pick until the
# deadline). One run at a time: 6 runs at once on an H200 were time-sliced and none finished (recipe_search.SERIAL).
# Prepare here as for bench/gpu_check.sh (.whl and .mnist, both out of git), then: device run with carry
# [".whl", ".mnist"], command `bash bench/recipe_gpu.sh`, timeout DEADLINE + 40 s. A dry run on CPU:
#   DEV=cpu EXTRA="data.limit=1200 trainer.max_epochs=1" OUT=/tmp/recipe_gpu bash bench/recipe_gpu.sh
set -uo pipefail
DEV=${DEV:-gpu} EXTRA=${EXTRA:-} OUT=${OUT:-/tmp/recipe_gpu_out} LOG=recipe_gpu.log
source bench/gpu_setup.sh
python3 bench/recipe_search.py --serial --deadline ${DEADLINE:-480} --report "$OUT/recipe_search.json" \
  --cv-timeout ${CV_TIMEOUT:-190} --final-timeout ${FINAL_TIMEOUT:-150} --only ${ONLY:-deepbn-lr0.2-30ep vgg-lr0.2-24ep} \
  -- trainer.accelerator=$DEV $EXTRA
echo "done $(date +%T)"
