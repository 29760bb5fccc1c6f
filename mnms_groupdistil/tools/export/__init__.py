"""Export a trained student as a self-contained MONAI bundle that runs without this package.

    python -m mnms_groupdistil.tools.export RUN_DIR BUNDLE_DIR [--checkpoint model_final.pt] [--version 0.1.0] [--onnx]

writes, from the run's ``run_config.json`` (:mod:`mnms_groupdistil.run_settings`), its checkpoint and its
``metrics.json``::

    BUNDLE_DIR/
        configs/inference.json   the source bundle's inference.json, standing alone, with the run's settings
                                 baked in and the network as a MONAI network (no torchvision)
        configs/metadata.json    semver version + changelog, input/output format, the run's test figures
        configs/logging.conf
        models/model.pt          the student's weights (state dict; loads with weights_only=True)
        models/model.ts          TorchScript (and models/model.onnx with --onnx)
        scripts/                 the package modules inference.json uses, copied verbatim
        docs/README.md  LICENSE
        large_files.yml          the files over the model zoo's 25 MB limit, with their sha256 and download
                                 address (``--download_url``), when there are any

so that inside BUNDLE_DIR ``python -m monai.bundle run --config_file configs/inference.json --dataset_dir IN
--output_dir OUT`` needs monai (with pytorch-ignite), torch and nibabel only (SimpleITK for DICOM input; Pillow
for images).

The dataset-specific parts of an export are one :class:`ExportSpec`: which source bundle, which inference
settings come from the run, how the input is described, and the README's words; the rest is shared. The run's
record names its bundle (``run_config.json`` setting ``bundle``; a run without it is an M&Ms run), which picks
the spec: :data:`MNMS` (4D cine volumes in, one prediction per patient out) or :data:`WATERBIRDS` (a folder of
images in, one prediction per image out).

The modules: :mod:`.specs` (per dataset), :mod:`.networks` (the MONAI network), :mod:`.scripts` (the copied
modules and the standalone config), :mod:`.metadata`, :mod:`.readme`, :mod:`.large_files`, :mod:`.bundle` (the
export) and :mod:`.cli` (the command line).
"""

from .bundle import export_bundle
from .large_files import large_files, write_large_files
from .metadata import output_format
from .networks import instantiate_network, monai_network_def, to_monai_state_dict
from .specs import MNMS, SPECS, WATERBIRDS, ExportSpec, spec_of

__all__ = [
    "MNMS",
    "SPECS",
    "WATERBIRDS",
    "ExportSpec",
    "export_bundle",
    "instantiate_network",
    "large_files",
    "monai_network_def",
    "output_format",
    "spec_of",
    "to_monai_state_dict",
    "write_large_files",
]
