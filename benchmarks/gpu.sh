#!/usr/bin/env bash
# The speed benchmark on a GPU machine: bert-base-sized random weights, MOSEI feature sizes
# (visual 35, acoustic 74), batch 64, fp32 and bf16 autocast, MISA and every feedback variant.
# Run from the repository root; results land in ${OUT:-gpu-bench}/ (JSON + tables).
#
#   bash benchmarks/gpu.sh                 # ~5-10 minutes on one modern GPU
#   REPEATS=1 VARIANTS=none,sequence bash benchmarks/gpu.sh   # shorter
set -euo pipefail
PY=${PYTHON:-python}
OUT=${OUT:-gpu-bench}
REPEATS=${REPEATS:-3}
VARIANTS=${VARIANTS:-none,sequence,sequence-mlp,static,static-projected}
export PYTHONPATH=${PYTHONPATH:-$PWD} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
echo "CUDA devices: $NGPU" | tee -a "$OUT/gpu.txt"
[ "$NGPU" -ge 1 ] || { echo "no CUDA device visible to torch" >&2; exit 1; }

for precision in fp32 bf16; do
  echo "== 1 GPU, $precision"
  "$PY" benchmarks/speed.py --device cuda --threads 4 --paths bert,word --bert-size base --features mosei \
      --batch-size 64 --precision "$precision" --repeats "$REPEATS" --variants "$VARIANTS" \
      --json "$OUT/speed-1gpu-$precision.json" | tee "$OUT/speed-1gpu-$precision.txt"
done

if [ "$NGPU" -ge 2 ]; then
  # one model over all GPUs (DistributedDataParallel) against one GPU: the same synthetic run of
  # MOSI split sizes, 3 epochs, global batch 64 in both (each of n GPUs runs 64/n per step)
  for n in 1 "$NGPU"; do
    echo "== $n GPU(s): torchrun, DistributedDataParallel, synthetic data of MOSI split sizes, 3 epochs"
    /usr/bin/time -f "wall %e s" torchrun --standalone --nproc-per-node "$n" -m misalatch train --synthetic-size 1284 229 686 \
        --max-epochs 3 --batch-size 64 --device cuda --out "$OUT/ddp-$n" --overwrite 2>&1 | tee "$OUT/ddp-$n.txt"
  done
fi
echo "done: $OUT/"
