#!/usr/bin/env bash
# The main job on the embedded demo cohort, on the CPU: generate a small cohort in the real M&Ms
# OpenDataset layout, train a groupDRO ResNet-18 teacher, then three DenseNet-121 students
# (groupDRO from scratch, plain KD, GroupDistil), and print the per-vendor test accuracy of each
# run's last-epoch model (no model is selected on test data). One seed on a small test set: the
# figures change with the machine and the seeds.
# Sets up .venv on first use. RUNS (default runs/demo) and DATA (default demo_data/OpenDataset)
# can be set in the environment; previous demo runs in RUNS are replaced.
# `scripts/demo.sh waterbirds` runs the Waterbirds bundle's demo instead (scripts/demo_waterbirds.sh).
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ "${1:-}" = "waterbirds" ]; then
    exec bash scripts/demo_waterbirds.sh
fi

DATA="${DATA:-demo_data/OpenDataset}"
RUNS="${RUNS:-runs/demo}"
BUNDLE=bundles/mnms_groupdistil/configs
DEMO=configs/demo.json
DEMO_TEACHER=configs/demo_teacher.json  # the teacher's own epochs (see the M&Ms bundle's docs)
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning,ignore::FutureWarning}"

if [ ! -f "$DATA/211230_M&Ms_Dataset_information_diagnosis_opendataset.csv" ]; then
    python -m mnms_groupdistil.datasets.generate mnms "$DATA" --preset demo
fi
rm -rf "$RUNS"
mkdir -p "$RUNS"

source "$(dirname "$0")/train_run.sh"

train teacher "['$BUNDLE/train.json','$BUNDLE/train_teacher.json','$DEMO','$DEMO_TEACHER']"
TEACHER="$RUNS/teacher/model_final.pt"
train groupdro "['$BUNDLE/train.json','$BUNDLE/train_groupdro.json','$DEMO']"
train kd "['$BUNDLE/train.json','$BUNDLE/train_kd.json','$DEMO']" --teacher_ckpt "$TEACHER"
train groupdistil "['$BUNDLE/train.json','$DEMO']" --teacher_ckpt "$TEACHER"

python -m mnms_groupdistil.tools.report "$RUNS/teacher" "$RUNS/groupdro" "$RUNS/kd" "$RUNS/groupdistil" \
    --png "$RUNS/summary.png"
echo "These are the figures of one run (seed 0, split_seed 0); they vary between machines and seeds."
echo "TensorBoard: tensorboard --logdir $RUNS"
