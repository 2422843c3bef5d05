#!/usr/bin/env bash
# Issue 13's GPU figures in one device call: the CUDA-only tests, the seed protocol with the CUDA defaults (packed
# folds + CUDA graph), task=final + evaluate + predict on the GPU, the 4-way bench at 1 epoch, then the seed protocol
# run sequentially (the accuracy reference; last, since it is the slowest).
# Prepare here (both folders stay out of git):
#   mkdir -p .whl && cp ../shared/wheels/*.whl .whl/ && cp -r ../shared/data/mnist .mnist
#   printf '/.whl/\n/.mnist/\n' >> .git/info/exclude
# Then: device run with carry [".whl", ".mnist"], command `bash bench/gpu_check.sh`, timeout ~480 s. The whole log
# and the runs' summaries come back in $OUT (8 files at most). A dry run on CPU, to check the script itself:
#   DEV=cpu EXTRA="data.limit=600 trainer.max_epochs=1" OUT=/tmp/gpucheck bash bench/gpu_check.sh
set -uo pipefail
DEV=${DEV:-gpu} EXTRA=${EXTRA:-} OUT=${OUT:-/tmp/gpu_check_out} LOG=gpu_check.log
RUNS=$(mktemp -d)  # run dirs hold too many files (and folders too deep) to come back whole
source bench/gpu_setup.sh
T="model=deep trainer.accelerator=$DEV trainer.enable_progress_bar=false $EXTRA"
step() { echo; echo "== $* ($(date +%T))"; }
summary() {
  python3 -c "import json; d=json.load(open('$RUNS/$1/cv_summary.json')); p=d['plan']
print('$1: folds', d['n'], 'train s', round(d['train_seconds'], 1), 'mean', round(100*d['mean'], 3), 'fold acc', [round(100*s, 2) for s in d['fold_scores']], 'runner', p['runner'], 'graph', p['cuda_graph'], 'device', p['device'])" \
    && cp "$RUNS/$1/cv_summary.json" "$OUT/$1.cv_summary.json"
}

step "1. CUDA-only tests"
[ "$DEV" = gpu ] && timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -n 15

step "2. seed protocol, CUDA defaults (cv.parallel=auto, cv.cuda_graph=auto)"
timeout 120 /usr/bin/time -f "process wall %e s" python3 -m digitnet.train $T hydra.run.dir=$RUNS/packed 2>&1 | tail -n 4
summary packed

step "3. task=final on the GPU, then evaluate and predict with its checkpoint"
timeout 150 /usr/bin/time -f "process wall %e s" python3 -m digitnet.train $T task=final hydra.run.dir=$RUNS/final 2>&1 | tail -n 3
cp "$RUNS/final/test_metrics.json" "$OUT/final.test_metrics.json"
timeout 60 python3 -m digitnet.evaluate $RUNS/final 2>&1 | head -n 3
timeout 60 python3 -m digitnet.predict $RUNS/final/final.ckpt samples/sample_image.png 2>&1 | tail -n 2

step "4. the four-way bench, 1 epoch"
timeout 150 python3 bench/cv_speed.py --quick --device $([ "$DEV" = gpu ] && echo cuda || echo cpu) \
  --only naive plain sequential parallel ${BENCH_ARGS:-} 2>&1 | grep -v Warning

step "5. seed protocol, sequential (cv.parallel=false): the accuracy reference"
timeout ${SEQ_TIMEOUT:-210} /usr/bin/time -f "process wall %e s" python3 -m digitnet.train $T cv.parallel=false \
  hydra.run.dir=$RUNS/sequential 2>&1 | tail -n 4
summary sequential || python3 -c "import json, pathlib
for f in sorted(pathlib.Path('$RUNS/sequential/folds').glob('fold_*.json')):
    d = json.loads(f.read_text()); print(f.name, {k: d[k] for k in d if k in ('fold', 'score', 'seconds')})"
step done
