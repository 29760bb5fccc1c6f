# Shell helper shared by the demo scripts (sourced, not run).
#
# train NAME CONFIG_LIST [overrides...]: one `python -m monai.bundle run training` with the config list,
# --dataset_dir "$DATA" and --output_dir "$RUNS/NAME" plus the overrides; its output goes to
# "$RUNS/NAME.log", whose last lines are shown if it fails (and the script stops).

train() {  # train NAME CONFIG_LIST [overrides...]
    local name=$1 configs=$2
    shift 2
    local start=$SECONDS
    echo "[$name] training (log: $RUNS/$name.log)"
    if ! python -m monai.bundle run training --config_file "$configs" \
        --dataset_dir "$DATA" --output_dir "$RUNS/$name" "$@" > "$RUNS/$name.log" 2>&1; then
        tail -n 30 "$RUNS/$name.log" >&2
        echo "[$name] failed: see $RUNS/$name.log" >&2
        exit 1
    fi
    echo "[$name] done in $((SECONDS - start)) s"
}
