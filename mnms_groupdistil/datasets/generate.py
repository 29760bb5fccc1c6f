"""Generated cohorts in the layout and formats of the real dataset releases, from the command line.

    python -m mnms_groupdistil.datasets.generate mnms OUT_DIR [--preset tiny|small|demo|paper] [--seed 0]
    python -m mnms_groupdistil.datasets.generate waterbirds OUT_DIR [--preset tiny|demo] [--seed 0]
    python -m mnms_groupdistil.datasets.generate digits OUT_DIR [--seed 0] [--background scene|plain] [--centre]

One subcommand per generator: :mod:`mnms_groupdistil.datasets.mnms.synthetic` (M&Ms) and
:mod:`mnms_groupdistil.datasets.waterbirds.synthetic` (Waterbirds, handwritten digits).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

from .mnms.synthetic import MNMS_PRESETS, write_mnms_cohort
from .waterbirds.synthetic import DIGITS_BACKGROUNDS, WATERBIRDS_PRESETS, write_digits_waterbirds, write_waterbirds

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def _run_mnms(args: argparse.Namespace) -> int:
    path = write_mnms_cohort(args.out_dir, preset=args.preset, seed=args.seed)
    logger.info("M&Ms-like cohort (preset %s, seed %d) in %s", args.preset, args.seed, path)
    return 0


def _add_mnms_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("mnms", help="M&Ms-like cardiac cine MRI cohort (real layout and CSV)")
    parser.add_argument("out_dir", help="dataset directory to write")
    parser.add_argument("--preset", choices=sorted(MNMS_PRESETS), default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run_mnms)


def _run_waterbirds(args: argparse.Namespace) -> int:
    path = write_waterbirds(args.out_dir, preset=args.preset, seed=args.seed)
    logger.info("Waterbirds-like dataset (preset %s, seed %d) in %s", args.preset, args.seed, path)
    return 0


def _run_digits(args: argparse.Namespace) -> int:
    path = write_digits_waterbirds(
        args.out_dir,
        seed=args.seed,
        val_per_group=args.val_per_group,
        test_per_group=args.test_per_group,
        background=args.background,
        centre=args.centre,
    )
    logger.info("Waterbirds-layout digits dataset (seed %d, %s backgrounds) in %s", args.seed, args.background, path)
    return 0


def _add_waterbirds_parsers(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "waterbirds", help="Waterbirds-like dataset: drawn birds on drawn scenes (release layout and metadata)"
    )
    parser.add_argument("out_dir", help="folder to write waterbird_complete95_forest2water2/ into")
    parser.add_argument("--preset", choices=sorted(WATERBIRDS_PRESETS), default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run_waterbirds)
    parser = subparsers.add_parser(
        "digits", help="Waterbirds-layout dataset of scikit-learn's real handwritten digits on spurious backgrounds"
    )
    parser.add_argument("out_dir", help="folder to write waterbird_complete95_forest2water2/ into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val_per_group", type=int, default=25)
    parser.add_argument("--test_per_group", type=int, default=50)
    parser.add_argument(
        "--background",
        choices=DIGITS_BACKGROUNDS,
        default="scene",
        help="scene: drawn land/water scenes (texture crosses the strokes); plain: land/water colour only",
    )
    parser.add_argument(
        "--centre",
        action="store_true",
        help="every digit at 90%% of the image side in its middle (easier core feature)",
    )
    parser.set_defaults(func=_run_digits)


def build_parser() -> argparse.ArgumentParser:
    """Argument parser with one subcommand per generated dataset."""
    parser = argparse.ArgumentParser(
        prog="python -m mnms_groupdistil.datasets.generate",
        description="Write generated cohorts in the layout and formats of the real dataset releases.",
    )
    subparsers = parser.add_subparsers(dest="dataset", required=True)
    _add_mnms_parser(subparsers)
    _add_waterbirds_parsers(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
