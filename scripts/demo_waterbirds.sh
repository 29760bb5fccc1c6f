#!/usr/bin/env bash
# The Waterbirds bundle on a small generated dataset, on the CPU: write a Waterbirds-like dataset in the
# release's layout (drawn birds on drawn land/water scenes), train a groupDRO ResNet-34 teacher (the demo's
# teacher_name; the bundle's default is the paper's ResNet-50), then four ResNet-18 students (ERM,
# groupDRO, KD, GroupDistil), and print their per-group accuracy on the test split.
# Run through `scripts/demo.sh waterbirds`. RUNS (default runs/demo_waterbirds) and DATA (default
# demo_data/waterbirds) can be set in the environment; previous demo runs in RUNS are replaced.
set -euo pipefail

DATA="${DATA:-demo_data/waterbirds}"
RUNS="${RUNS:-runs/demo_waterbirds}"
BUNDLE=bundles/waterbirds_groupdistil/configs
DEMO=configs/waterbirds_demo.json
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning,ignore::FutureWarning}"

if [ ! -f "$DATA/waterbird_complete95_forest2water2/metadata.csv" ]; then
    python -m mnms_groupdistil.datasets.generate waterbirds "$DATA" --preset demo
fi
rm -rf "$RUNS"
mkdir -p "$RUNS"

source "$(dirname "$0")/train_run.sh"
wb_train() {  # wb_train NAME CONFIG_LIST [overrides...]: train with this bundle's metadata and logging.conf
    train "$1" "$2" --meta_file "$BUNDLE/metadata.json" --logging_file "$BUNDLE/logging.conf" "${@:3}"
}

wb_train teacher "['$BUNDLE/train.json','$BUNDLE/train_teacher.json','$DEMO']"
TEACHER="$RUNS/teacher/model_final.pt"
wb_train erm "['$BUNDLE/train.json','$BUNDLE/train_erm.json','$DEMO']"
wb_train groupdro "['$BUNDLE/train.json','$BUNDLE/train_groupdro.json','$DEMO']"
wb_train kd "['$BUNDLE/train.json','$BUNDLE/train_kd.json','$DEMO']" --teacher_ckpt "$TEACHER"
wb_train groupdistil "['$BUNDLE/train.json','$DEMO']" --teacher_ckpt "$TEACHER"

python -m mnms_groupdistil.tools.report --dataset waterbirds "$RUNS/teacher" "$RUNS/erm" "$RUNS/groupdro" "$RUNS/kd" "$RUNS/groupdistil"
echo "These figures are one seed on a small generated dataset: they vary between machines and seeds."
echo "TensorBoard: tensorboard --logdir $RUNS"
