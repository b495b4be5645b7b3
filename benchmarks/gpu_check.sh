#!/usr/bin/env bash
# The GPU checks, as one short script for a one-GPU machine (H100/H200) that has torch,
# transformers, numpy and pyarrow preinstalled and no network (see shared/GPU.md).
# Missing packages travel as wheels in .wheels-gpu/ (build them here with
# `make gpu-wheels`; the folder is ignored by git). About 8 minutes in all (limits 5 + 3 + 4):
#   1. ZeRO-3 bf16 training step of a ~0.5B random Qwen2 with the A²TGPO loss:
#      tokens/s and MFU, against a plain torch step in the same process;
#   2. the packed IG scorer against one plain forward and the naive scorer (bf16);
#   3. the persistent trainer's train step against a new torchrun launch per step (the
#      same ~0.5B model, bf16, the project's launcher and commit), and with
#      pipeline.release_trainer_memory (DeepSpeed offload_states between steps).
# Results go to stdout and, when $OUT is set (the device tool), to $OUT/*.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/a2tgpo-gpu-check}"
mkdir -p "$OUT"
if ls .wheels-gpu/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .wheels-gpu/*.whl
    export PYTHONPATH="/tmp/site:${PWD}"
else
    export PYTHONPATH="${PWD}"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout 300 python3 benchmarks/gpu_train_step.py 2>&1 | tee "$OUT/train_step.txt"
timeout 180 python3 benchmarks/ig_scoring_gpu.py 2>&1 | tee "$OUT/ig_scoring.txt"
timeout 240 python3 benchmarks/persistent_step.py 2>&1 | tee "$OUT/persistent_step.txt"
