#!/usr/bin/env bash
# The Waterbirds bundle on a small generated dataset, on the CPU: write a Waterbirds-like dataset in the
# release's layout (drawn birds on drawn land/water scenes), train a groupDRO ResNet-50 teacher, then four
# ResNet-18 students (ERM, groupDRO, KD, GroupDistil), and print their per-group accuracy on the test split.
# Run through `scripts/demo.sh waterbirds`. RUNS (default runs/demo_waterbirds) and DATA (default
# demo_data/waterbirds) can be set in the environment; previous demo runs in RUNS are replaced.
set -euo pipefail

DATA="${DATA:-demo_data/waterbirds}"
RUNS="${RUNS:-runs/demo_waterbirds}"
BUNDLE=bundles/waterbirds_groupdistil/configs
DEMO=configs/waterbirds_demo.json
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning,ignore::FutureWarning}"

if [ ! -f "$DATA/waterbird_complete95_forest2water2/metadata.csv" ]; then
    python -m mnms_groupdistil.data.synthetic waterbirds "$DATA" --preset demo
fi
rm -rf "$RUNS"
mkdir -p "$RUNS"

train() {  # train NAME CONFIG_LIST [overrides...]
    local name=$1 configs=$2
    shift 2
    local start=$SECONDS
    echo "[$name] training (log: $RUNS/$name.log)"
    if ! python -m monai.bundle run training --config_file "$configs" --meta_file "$BUNDLE/metadata.json" \
        --logging_file "$BUNDLE/logging.conf" --dataset_dir "$DATA" --output_dir "$RUNS/$name" "$@" \
        > "$RUNS/$name.log" 2>&1; then
        tail -n 30 "$RUNS/$name.log" >&2
        echo "[$name] failed: see $RUNS/$name.log" >&2
        exit 1
    fi
    echo "[$name] done in $((SECONDS - start)) s"
}

train teacher "['$BUNDLE/train.json','$BUNDLE/train_teacher.json','$DEMO']"
TEACHER="$RUNS/teacher/model_final.pt"
train erm "['$BUNDLE/train.json','$BUNDLE/train_erm.json','$DEMO']"
train groupdro "['$BUNDLE/train.json','$BUNDLE/train_groupdro.json','$DEMO']"
train kd "['$BUNDLE/train.json','$BUNDLE/train_kd.json','$DEMO']" --teacher_ckpt "$TEACHER"
train groupdistil "['$BUNDLE/train.json','$DEMO']" --teacher_ckpt "$TEACHER"

python -m mnms_groupdistil.report --dataset waterbirds "$RUNS/teacher" "$RUNS/erm" "$RUNS/groupdro" "$RUNS/kd" "$RUNS/groupdistil"
echo "These figures are one seed on a small generated dataset: they vary between machines and seeds."
echo "TensorBoard: tensorboard --logdir $RUNS"
