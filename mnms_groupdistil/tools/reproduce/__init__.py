"""Run the paper's experiment grid through the bundles over several seeds, and summarise it.

    python -m mnms_groupdistil.tools.reproduce /data/MnM/OpenDataset --seeds 0 1 2 3 4 --output_dir runs/reproduce

For every split and training seed the grid trains, each in its own process with MONAI's bundle
runner and the same configs users run: a groupDRO ResNet-18 teacher (``train.json`` +
``train_teacher.json``), a groupDRO DenseNet-121 student from scratch (``train_groupdro.json``),
a KD student (``train_kd.json``) and a GroupDistil student (``train.json``), both distilled from
the teacher of that split and seed. ``--group_step_sizes 0 0.001 0.01 0.1 1`` adds one GroupDistil
run per group-weight step size ``eta_w``. The patients of a split are fixed by ``--split_seed``;
``--seeds`` vary the training only.

    python -m mnms_groupdistil.tools.reproduce /data/waterbirds --dataset waterbirds --seeds 0 1 2

runs the Waterbirds grid on its one official split (``metadata.csv``): per seed a groupDRO
ResNet-50 teacher, then ERM, groupDRO, KD and GroupDistil ResNet-18 students. ``--jobs 2`` trains
two runs at once (a distilling run waits for its teacher); on a small CPU give each process one
thread (``OMP_NUM_THREADS=1``).

Runs live in ``<output_dir>/runs/<dataset>/<split>/seed<seed>/<run>``. A run whose
``metrics.json`` reports the configured number of epochs is reused; any other is started again
with the same settings, and the bundle resumes it from the last checkpoint in its folder. Every
run records its settings in ``run_args.json`` (the ``--args_file`` of ``python -m monai.bundle
run``) and its output in ``bundle.log``; a folder started with other settings is refused rather
than mixed. Extra settings reach every run: ``--config_file configs/demo.json`` merges a JSON on
top of each run's configs (``teacher:configs/demo_teacher.json`` on top of the teacher's only),
``--override max_epochs=1 image_size=32 device=cpu`` sets single ids.

Written to ``output_dir``: ``results.csv`` (one row per run), ``results.md`` (mean +- sample
standard deviation over seeds beside the paper's figures, per-group accuracy, the ``eta_w``
table, the paired GroupDistil - KD difference per seed) and PNG plots (group weights over training
and per-group accuracy per method, accuracy against ``eta_w``).

About ``eta_w = 0``: the group weights then stay uniform, ``w_d = 1/G``, and the robust objective
is ``sum_d (1/G) * mean_{i in d} l_i``, i.e. every sample of group ``d`` weighs ``1/(G n_d)`` in a
batch holding ``n_d`` samples of that group. Plain KD weighs every sample ``1/B``. The two agree
exactly when every batch holds each of the G groups equally often (``n_d = B/G``): GroupDistil
with ``eta_w = 0`` and KD, both on ``balanced`` batches whose size G divides (``--override
batching=balanced`` for both), train the same network up to floating-point rounding. KD's own
configs train on ``mixed`` batches, so with the defaults GroupDistil at ``eta_w = 0`` is a
group-balanced resampling of KD, and with one-group batches (Algorithm 1) it trains on other
batches altogether: in general ``eta_w = 0`` is not KD.

``--grid ID=VALUE,VALUE ...`` makes a study: every combination of the values is a cell whose runs
get those settings (over every other setting, ``--override`` included) and live in a folder of
their own; ``--methods`` limits the methods (the teacher comes with a distiller). ``results.md``
then starts with a stability table per split: each cell's last-epoch worst-group accuracy on
validation and test data, its swing over the last three epochs and the runs that ended with a
group at or below 55 %, and the paired GroupDistil - KD difference.

``--launcher slurm`` trains every run as a SLURM job through submitit (:mod:`mnms_groupdistil.tools.slurm`;
``pip install mnms_groupdistil[slurm]``), from a login node:

    python -m mnms_groupdistil.tools.reproduce /data/MnM/OpenDataset --seeds 0 1 2 3 4 --output_dir runs/reproduce \
        --launcher slurm --partition gpu --gpus_per_run 1 --cpus_per_run 8 --time 2:00:00

The runs that need no teacher are submitted at once; a distilling run is submitted when its teacher's job has
ended. The command waits for the jobs and writes the summary when the last has ended; stopped earlier, it leaves
the submitted jobs running, and ``--collect`` (the same arguments) writes the summary once they have all finished.
``--jobs N`` caps the jobs submitted at a time (default: all). A job with several GPUs trains its run under
``torchrun``, one process per GPU, with the bundle's ``multi_gpu_train.json``.

The modules: :mod:`.plan` (which runs), :mod:`.arguments` (each run's configs and settings), :mod:`.running`
(training them), :mod:`.results` (the summary) and :mod:`.cli` (the command line).
"""

from .arguments import BUNDLES_DIR, GRID_IDS, bundle_args, config_files, resolve_setting, scoped_config
from .cli import main
from .plan import Run, cell_folder, cell_name, parse_grid, plan_runs, run_key, submission_order
from .results import write_outputs
from .running import RUN_ARGS, bundle_command, collect_rows, run_bundle, run_grid, run_state, teacher_checkpoint

__all__ = [
    "BUNDLES_DIR",
    "GRID_IDS",
    "RUN_ARGS",
    "Run",
    "bundle_args",
    "bundle_command",
    "cell_folder",
    "cell_name",
    "collect_rows",
    "config_files",
    "main",
    "parse_grid",
    "plan_runs",
    "resolve_setting",
    "run_bundle",
    "run_grid",
    "run_key",
    "run_state",
    "scoped_config",
    "submission_order",
    "teacher_checkpoint",
    "write_outputs",
]
