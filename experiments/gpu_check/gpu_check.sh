#!/usr/bin/env bash
# The GPU paths in one go (sized for under 8 minutes on one H100; not yet run on one): a 16-mixed and a bf16-mixed fit of the
# digits recipe, training throughput of the presets as a fraction of the measured matmul peak,
# GPU transcription of the digits test set, and a short GPU serving load.
#   bash experiments/gpu_check/gpu_check.sh          # on a machine with a CUDA GPU
#   bash experiments/gpu_check/gpu_check.sh --dry    # the same commands, tiny and on the CPU (CI)
# Logs and tables go to $OUT (default: a new temporary folder), printed as they come.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$(pwd)"
DRY=0
[ "${1:-}" = "--dry" ] && DRY=1
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
PY="${PYTHON:-uv run --frozen --project $REPO python}"
DS2HUB="$PY -m ds2hub"
export WANDB_MODE=disabled
if [ "$DRY" = 1 ]; then
  ACCEL=cpu; DEVICE=cpu; PRECISIONS="bf16-mixed"
  FIT_LIMITS=(--trainer.max_epochs 1 --trainer.limit_train_batches 2 --trainer.limit_val_batches 1
    --trainer.log_every_n_steps 1)
  THROUGHPUT=(--device cpu --presets tiny --batch 2 --seconds 1 --steps 1)   # (bf16 matmuls crawl on CPUs)
  LOAD=(--streams 2 --seconds 1 --max-wait-ms 10 --device cpu)
else
  ACCEL=gpu; DEVICE=cuda; PRECISIONS="16-mixed bf16-mixed"
  FIT_LIMITS=(--trainer.max_epochs 2 --data.num_workers 4)
  THROUGHPUT=(--device cuda --precision bf16-mixed --presets tiny small paper --batch 64 32 16 --steps 5)
  LOAD=(--streams 10 100 --seconds 8 --max-wait-ms 10 --device cuda)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/torch.txt"

for precision in $PRECISIONS; do
  echo "== fit digits, $precision"
  start=$(date +%s)
  mkdir -p "$OUT/fit-$precision"   # the recipe writes runs/digits/ under the working folder
  (cd "$OUT/fit-$precision" && $DS2HUB fit --config digits --trainer.accelerator "$ACCEL" \
    --trainer.precision "$precision" "${FIT_LIMITS[@]}") \
    > "$OUT/fit-$precision.log" 2>&1 || { tail -30 "$OUT/fit-$precision.log" >&2; exit 1; }
  echo "$(( $(date +%s) - start )) s; last validation:"
  $PY - "$OUT/fit-$precision" <<'PYEOF'
import csv, sys
from pathlib import Path
rows = [r for m in Path(sys.argv[1]).rglob("metrics.csv") for r in csv.DictReader(open(m))]
rows = [r for r in rows if r.get("val/wer")]
print({k: rows[-1][k] for k in ("epoch", "val/loss", "val/wer", "val/cer")} if rows else "no validation")
PYEOF
done

echo "== training throughput"
$PY experiments/train_throughput/train_throughput.py "${THROUGHPUT[@]}" | tee "$OUT/throughput.txt"

echo "== transcribe on $DEVICE"
CKPT="$(find "$OUT/fit-bf16-mixed" -name last.ckpt | head -1)"
TIMEFORMAT="%R s wall (start-up and model load included)"
time $DS2HUB transcribe --model "$CKPT" --device "$DEVICE" --batch-size 32 \
  recipes/digits/test/*.opus > "$OUT/transcripts.tsv"
echo "$(wc -l < "$OUT/transcripts.tsv") files transcribed"

echo "== serving load on $DEVICE"
$PY experiments/serve_load/serve_load.py "${LOAD[@]}" | tee "$OUT/serve_load.txt"
echo "gpu_check: done, logs in $OUT"
