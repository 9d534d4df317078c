#!/usr/bin/env bash
# The GPU measurements of docs/gpu.md "Speed on a GPU", as one command, from the repository root on a CUDA machine:
#     bash reproduce/gpu_check.sh            (OUT=folder to choose where the logs go; PYTHON=... another python)
# Needs torch, torchvision, numpy, scipy, pillow, pyyaml, tqdm; not mlflow or optuna. About 10 minutes on one H100.
# 1. python -m core.bench train: ResNet-50, 256x128, the paper's batch (64 clips x 4 frames), bf16: step, end to
#    end (real DataLoader, synthetic tree), loader alone, extraction frames/s, peak GPU memory; then sta+fusion
#    with torch.compile (is train.compile worth turning on?).
# 2. python -m core.bench smoke: 2 paper-profile epochs (synthetic default preset, ResNet-50 from scratch, bf16),
#    train + evaluate through core.engine.run; on 2 ranks under torchrun as well when 2 GPUs are visible.
# 3. python -m core.bench eval: evaluation and re-ranking with CUDA present (re-ranking runs on the GPU).
set -euo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
run() { local name=$1; shift; echo "== $*" | tee "$OUT/$name.txt"; "$@" 2>&1 | tee -a "$OUT/$name.txt"; }

run env "$PY" -c "import torch, os; print(torch.__version__, torch.cuda.get_device_name(0), torch.cuda.device_count(), 'GPU(s),', os.cpu_count(), 'CPUs')"
run data "$PY" -m core.data.synthetic --size default          # generated once, before anything reads it
run bench_train "$PY" -m core.bench train --device cuda --backbone resnet50 --height 256 --width 128
run bench_train_compile "$PY" -m core.bench train --device cuda --variants sta+fusion --compile
run smoke_1gpu "$PY" -m core.bench smoke --device cuda --epochs 2
if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  run smoke_2gpu "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m core.bench smoke --device cuda --epochs 2
fi
run bench_eval "$PY" -m core.bench eval --skip-reference-rerank
