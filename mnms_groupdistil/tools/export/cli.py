"""The command line of the export (``python -m mnms_groupdistil.tools.export RUN_DIR BUNDLE_DIR``)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from .bundle import export_bundle
from .scripts import PACKAGE

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: ``python -m mnms_groupdistil.tools.export RUN_DIR BUNDLE_DIR [options]``."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {PACKAGE}.tools.export",
        description="Export a trained student as a self-contained MONAI bundle that runs without this package.",
    )
    parser.add_argument("run_dir", help="the training run's output_dir")
    parser.add_argument("bundle_dir", help="a new or empty folder for the bundle")
    parser.add_argument("--checkpoint", default="model_final.pt", help="weights file in RUN_DIR (default: %(default)s)")
    parser.add_argument("--version", default="0.1.0", help="the bundle's semantic version (default: %(default)s)")
    parser.add_argument("--onnx", action="store_true", help="also write models/model.onnx")
    parser.add_argument("--source_bundle", default=None, help="bundle whose inference.json is exported")
    parser.add_argument(
        "--download_url",
        default=None,
        help="address the files over the model zoo's 25 MB will be downloaded from: large_files.yml gives each "
        "URL/<its path in the bundle>",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = export_bundle(
            args.run_dir,
            args.bundle_dir,
            args.checkpoint,
            args.version,
            args.onnx,
            None,
            args.source_bundle,
            args.download_url,
        )
    except ValueError as e:
        parser.exit(2, f"error: {e}\n")
    print(out)
