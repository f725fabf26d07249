#!/usr/bin/env bash
# The demo (README command 1): build .venv from requirements.txt if needed, then run the whole
# pipeline on embedded synthetic data: teacher -> baseline and distilled students (2 seeds) ->
# results table -> TFLite export (fp32/fp16/int8) with parity -> the Raspberry Pi program ->
# the quality-vs-latency frontier -> the comparison notebook executed with its outputs (runs/quick/compare_students.ipynb). About 12 minutes on an idle 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import keras, tensorflow, torch, tflite_runtime" 2>/dev/null; then
    echo "== creating .venv from requirements.txt"
    python3 -m venv .venv
    .venv/bin/pip install -q -r requirements.txt
fi
PY=.venv/bin/python
export KERAS_BACKEND=${KERAS_BACKEND:-torch} TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
SWEEP=runs/quick
set -x
$PY -m experiments.sweep --config experiments/configs/quick.py --out $SWEEP
KD=$(ls -d $SWEEP/unet4_from_unet8_T2_l0.9_sT_unl_s0)
$PY export_tflite.py --model $KD/student.keras --data $SWEEP/data --out $SWEEP/export --quant fp32,fp16,int8 --overwrite
$PY evaluate.py --model $SWEEP/export/student_int8.tflite --data $SWEEP/data --split $KD/split.json
$PY pi/infer.py --model $SWEEP/export/student_int8.tflite --images $SWEEP/data/test/images --out $SWEEP/pi_masks \
    --submission $SWEEP/submission.csv --overwrite
$PY pi/benchmark.py --model $SWEEP/export/student_fp32.tflite --threads 1,2 --runs 20 --json $SWEEP/export/student_fp32_benchmark.json
$PY pi/benchmark.py --model $SWEEP/export/student_int8.tflite --threads 1,2 --runs 20 --json $SWEEP/export/student_int8_benchmark.json
$PY -m experiments.frontier $SWEEP --threads 1 --runs 10 --overwrite
SWEEP_DIR=$PWD/$SWEEP $PY -m experiments.notebook notebooks/compare_students.ipynb $SWEEP/compare_students.ipynb
set +x
echo "== done: results in $SWEEP/summary.txt, notebook in $SWEEP/, Pi masks in $SWEEP/pi_masks"
cat $SWEEP/summary.txt
