#!/usr/bin/env bash
# The GPU checks in one run, for a machine with CUDA (see ../shared/device/README.md):
#   bash ../shared/device/prepare.sh fsdd MNIST                     # here
#   bash .gpu/run.sh bash bench/gpu_check.sh                        # there; logs land in $OUT (or ./gpu-logs)
# 1. the whole suite, the cuda-marked tests included, with a per-test timeout so a hang names itself;
# 2. the engine benchmark: bare fp32 loop against fp32, bf16 and bf16+compile, at batch 64 and 512;
# 3. the training step in NCHW against NHWC (channels_last, on in the quick presets), fp32 and bf16;
# 4. a short training run under each precision (and compiled).
set -u
LOGS="${OUT:-gpu-logs}"
mkdir -p "$LOGS"
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
nvidia-smi > "$LOGS/nvidia-smi.txt" 2>&1
python3 -m pytest -q -n 8 --timeout 120 -p no:cacheprovider > "$LOGS/tests.log" 2>&1; echo "tests: exit $?" | tee -a "$LOGS/summary.txt"
for B in 64 512; do
  python3 bench/engine_throughput.py --device cuda --batch-size $B --steps 300 --rounds 3 \
    --variants fp32,bf16,bf16+compile > "$LOGS/engine-b$B.log" 2>&1; echo "engine b$B: exit $?" | tee -a "$LOGS/summary.txt"
done
for P in fp32 bf16; do
  python3 bench/memory_format.py --device cuda --precision $P --steps 100 > "$LOGS/memory-format-$P.log" 2>&1; echo "memory format $P: exit $?" | tee -a "$LOGS/summary.txt"
done
for P in fp32 bf16 fp16; do
  python3 -m multigan -q train mnist-quick --device cuda --precision $P --steps 600 --data-root ../shared/data \
    --out "$LOGS/run-$P" --no-progress > "$LOGS/run-$P.log" 2>&1; echo "train $P: exit $?" | tee -a "$LOGS/summary.txt"
done
python3 -m multigan -q train mnist-quick --device cuda --precision bf16 --compile --steps 600 --data-root ../shared/data \
  --out "$LOGS/run-bf16-compile" --no-progress > "$LOGS/run-bf16-compile.log" 2>&1; echo "train bf16+compile: exit $?" | tee -a "$LOGS/summary.txt"
tail -n 3 "$LOGS"/engine-b*.log >> "$LOGS/summary.txt"
grep median "$LOGS"/memory-format-*.log >> "$LOGS/summary.txt"
find "$LOGS" -name "*.pt" -delete  # checkpoints stay there; the logs come back
