# Sourced by the device scripts (gpu_check.sh, recipe_gpu.sh) after setting DEV, OUT and LOG: the whole output into
# $OUT/$LOG, and on the GPU machine Hydra's wheels from .whl (the device image has no hydra-core, omegaconf, antlr4)
# and MNIST from .mnist, both carried with the call.
mkdir -p "$OUT"
exec > >(tee "$OUT/$LOG") 2>&1
if [ "$DEV" = gpu ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:src DIGITNET_DATA=${DIGITNET_DATA:-$PWD/.mnist}
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi
export PYTHONUNBUFFERED=1
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"
