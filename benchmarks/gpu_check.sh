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
# Every XLA compilation dumps its module once: their count is the compile
# count; TF's device_compiler logs each compile's duration at VLOG 1.
XLA_FLAGS="--xla_dump_to=$OUT/xla_dump" TF_CPP_MIN_LOG_LEVEL=0 TF_CPP_VMODULE=device_compiler=1 \
  timeout 180 $PYTHON -m training.run --variant dps_mse --limit 2000 --epochs 1 --jit on \
  --precision auto --data-dir "$DATA" --out "$OUT/run" >"$OUT/run.log" 2>&1
echo "exit $?"
grep -aE "^epoch [0-9]+:" "$OUT/run.log" | tail -1
echo "XLA compilations (modules dumped): $(ls "$OUT/xla_dump" 2>/dev/null | grep -c 'before_optimizations.txt$')"
grep -aoiE "compil[a-z]* [^\n]*in [0-9.]+ ?(us|ms|s)\b" "$OUT/run.log" | grep -oE "[0-9.]+ ?(us|ms|s)$" \
  | awk '{v=$1; if ($0 ~ /us$/) v=v/1e6; else if ($0 ~ /ms$/) v=v/1000; t+=v; n++}
         END {if (n) printf "XLA compile time logged: %.1f s over %d compiles\n", t, n;
              else print "XLA compile time: not in the log at this TF version"}'
python3 -c "import json; d=json.load(open('$OUT/run/config.json')); print('precision', d['precision_used'])"

step "4. export parity"
timeout 150 $PYTHON -m export.run --runs "$OUT/run" --out "$OUT/export" --data-dir "$DATA" \
  --parity-examples 32 --metric-examples 200 >"$OUT/export.log" 2>&1
echo "exit $?"
$PYTHON - "$OUT/export/manifest.json" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))["verification"]
print("passed:", v["passed"], "| worst float parity:", v["parity"]["worst"])
for name, change in v["int8"]["metrics"].items():
    print(f"  int8 {name}: {change['float32']:.4f} -> {change['int8']:.4f}")
EOF
step "done"
