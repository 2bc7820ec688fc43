#!/usr/bin/env bash
# The GPU check: one script, <= 5 minutes on a GPU machine, printing what the
# "trains on GPU via XLA" claim rests on. Run it from the repo root whenever a
# GPU machine is at hand, and commit its output under results/benchmarks/:
#
#   bash benchmarks/gpu_check.sh 2>&1 | tee results/benchmarks/gpu_check-$(date +%F).txt
#
# It needs the project installed (make setup) and the CS224N data at
# $KERASBERT_DATA (default ../shared/data). With no data it still runs parts 1-2.
# What it prints:
#   1. the device and the TF / Keras versions;
#   2. XLA train-step tokens/s at seq 64 and 128, bf16 and float32
#      (benchmarks/encoder_throughput.py, train rows);
#   3. a --limit 2000 --epochs 1 dps_mse run under XLA, with its XLA compile
#      count and time (from TF's XLA compilation log lines);
#   4. an export of that run with its parity check against Keras.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DATA=${KERASBERT_DATA:-../shared/data}
OUT=${GPU_CHECK_OUT:-$(mktemp -d)}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; }

step "1. device"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  || echo "nvidia-smi: not found"
$PYTHON - <<'EOF'
import keras, tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(f"TF {tf.__version__}, keras {keras.__version__}, built with CUDA: "
      f"{tf.test.is_built_with_cuda()}, GPUs: {[g.name for g in gpus]}")
for g in gpus:
    print(" ", tf.config.experimental.get_device_details(g))
from training.precision import resolve_precision
choice = resolve_precision("auto")
print(f"--precision auto -> {choice.policy} ({choice.reason})")
EOF

step "2. XLA train step, bf16 and float32, seq 64 and 128"
for precision in mixed_bfloat16 float32; do
  timeout 120 $PYTHON benchmarks/encoder_throughput.py --modes xla --seqs 64 128 --steps 10 \
    --warmup 2 --precision "$precision" --kinds train 2>&1 | grep -E "^(CPU|encoder|train|step|-|peak)"
done

if [ ! -f "$DATA/ids-sst-train.csv" ]; then
  echo "no CS224N data at $DATA: parts 3-4 skipped"; exit 0
fi

step "3. dps_mse --limit 2000 --epochs 1 under XLA"
# TF logs one line per XLA compilation at this verbosity.
TF_CPP_MIN_LOG_LEVEL=0 TF_CPP_VMODULE=xla_compilation_cache=1,device_compiler=1 \
  timeout 180 $PYTHON -m training.run --variant dps_mse --limit 2000 --epochs 1 --jit on \
  --precision auto --data-dir "$DATA" --out "$OUT/run" >"$OUT/run.log" 2>&1
echo "exit $?"
grep -E "^epoch [0-9]+:" "$OUT/run.log" | tail -1
compiles=$(grep -c -iE "compil(ed|ing) cluster|XLA compilation" "$OUT/run.log")
echo "XLA compilations logged: $compiles"
grep -iE "compil(ed|ing) cluster" "$OUT/run.log" | grep -oE "[0-9.]+ ?(ms|s)\b" \
  | awk '{v=$1; if ($0 ~ /ms/) v=v/1000; t+=v} END {printf "XLA compile time logged: %.1f s\n", t}'
python3 -c "import json; d=json.load(open('$OUT/run/config.json')); print('precision', d['precision_used'])"

step "4. export parity"
timeout 150 $PYTHON -m export.run --runs "$OUT/run" --out "$OUT/export" --data-dir "$DATA" \
  --verify-limit 200 >"$OUT/export.log" 2>&1
echo "exit $?"
$PYTHON - "$OUT/export/manifest.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(json.dumps(m.get("verification", m.get("parity", {})), indent=1)[:1500])
EOF
step "done"
