"""Predictions back where clinicians look: one DICOM Structured Report per classified DICOM series, in its study.

:class:`SeriesReportWriter` is handed to :class:`mnms_groupdistil.datasets.mnms.inference.PatientPredictionWriter`
(``on_predictions``); after the CSV is written it writes, for every input that was a DICOM series, a
Comprehensive SR (built with highdicom) beside the CSV: ``<output_dir>/<subject>_SR.dcm``. The report is an
Imaging Measurement Report (DICOM template TID 1500) in the source study (its Patient and Study Instance UID),
in a new series, listing the source series and every source instance as evidence and as the source images of its
one measurement group, which holds:

- Finding (DCM 121071, the group's finding type): the predicted class, coded in the local scheme
  :data:`SCHEME` (value and meaning the class name);
- Probability (DCM 122157, UCUM ``1``): the predicted class's mean probability over the voted frames;
- Number of Frames (DCM 121140): how many frames (slices x phases) voted;
- the scanner vendor group (:data:`VENDOR_GROUP`: the M&Ms vendor code from the Manufacturer tag, or
  ``unknown``);
- the algorithm (TID 4019): the model's name and version;
- finding site: heart (SCT 80891009); procedure reported: cardiac MRI (SCT 241620005).

No SR is a diagnosis: the document is marked complete but not verified. NIfTI inputs get none (there is no study
to put it in). highdicom and pydicom are imported only when a report is written (``pip install highdicom``, or
``pip install mnms_groupdistil[dicom]``); this module is copied into exported bundles with ``inference.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import InputError, SettingError
from .dicom import is_dicom_file

__all__ = [
    "SCHEME",
    "SR_SERIES_NUMBER",
    "SR_SUFFIX",
    "VENDOR_GROUP",
    "SeriesReportWriter",
    "read_series_headers",
    "series_report",
]

logger = logging.getLogger(__name__)

#: Local coding scheme of the class and vendor codes (DICOM leaves designators starting with ``99`` to local use).
SCHEME = "99GROUPDISTIL"
#: Code value and meaning of the concept "scanner vendor group" in :data:`SCHEME`.
VENDOR_GROUP = ("VENDORGROUP", "Scanner vendor group")
#: File name ending of a report: ``<subject>_SR.dcm``.
SR_SUFFIX = "_SR.dcm"
#: The report's vendor group when the Manufacturer is none of the M&Ms vendors.
UNKNOWN_VENDOR = "unknown"
#: Series Number of a report's series (the bundles' setting ``dicom_sr_series_number``): high, apart from the
#: scanner's own series.
SR_SERIES_NUMBER = 9001
_INSTALL = "pip install highdicom (with this package: pip install mnms_groupdistil[dicom])"
_NEEDED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError:
        raise SettingError(
            "dicom_sr is true and the input holds DICOM series, but highdicom, which writes the DICOM SR, is not "
            f"installed: {_INSTALL}; or set dicom_sr to false (--dicom_sr False) to write the CSV only."
        ) from None
    return highdicom


def _vendor_meaning(vendor: str) -> str:
    return "not an M&Ms vendor" if vendor == UNKNOWN_VENDOR else f"M&Ms vendor {vendor}"


def read_series_headers(folder: str | Path) -> list[Any]:
    """The headers (no pixel data) of the DICOM files directly in ``folder``, by Instance Number.

    Raises:
        InputError: a file without the identifiers a report references, or a folder holding two studies or series.
    """
    import pydicom

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    for file, header in zip(files, headers):
        missing = [k for k in _NEEDED if not str(header.get(k, "")).strip()]
        if missing:
            raise InputError(
                f"DICOM series in {folder}: {file.name} has no {', '.join(missing)}; a report cannot cite it."
            )
    for key in ("StudyInstanceUID", "SeriesInstanceUID"):
        if len({h[key].value for h in headers}) != 1:
            raise InputError(
                f"DICOM series in {folder}: its files belong to several {key}s; put one series per folder."
            )
    return sorted(headers, key=lambda h: (int(h.get("InstanceNumber") or 0), str(h.SOPInstanceUID)))


def series_report(
    headers: Sequence[Any],
    prediction: Mapping[str, Any],
    model_name: str,
    model_version: str,
    series_number: int,
    manufacturer: str,
) -> Any:
    """The Comprehensive SR of one classified series.

    Args:
        headers: the source series' headers (:func:`read_series_headers`).
        prediction: ``subject``, ``prediction`` (class name), ``probability``, ``frames`` and ``vendor`` (an M&Ms
            vendor code, or empty).
        model_name: the model's name (the bundle's metadata ``name``).
        model_version: its version (the bundle's metadata ``version``).
        series_number: Series Number of the report's new series.
        manufacturer: Manufacturer of the equipment writing the report.

    Returns:
        a ``highdicom.sr.ComprehensiveSR`` (a pydicom ``Dataset``).
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    def local(value: str, meaning: str) -> Any:
        return hd.sr.CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning)

    vendor = str(prediction.get("vendor") or "") or UNKNOWN_VENDOR
    algorithm = hd.sr.AlgorithmIdentification(name=str(model_name), version=str(model_version))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=f"classification of series {prediction['subject']}"
        ),
        finding_type=local(str(prediction["prediction"]), str(prediction["prediction"])),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Heart)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(local(*VENDOR_GROUP), local(vendor, _vendor_meaning(vendor))),
        ],
        measurements=[
            hd.sr.Measurement(
                name=codes.DCM.Probability,
                value=float(prediction["probability"]),
                unit=codes.UCUM.NoUnits,
                algorithm_id=algorithm,
            ),
            hd.sr.Measurement(
                name=codes.DCM.NumberOfFrames,
                value=int(prediction["frames"]),
                unit=hd.sr.CodedConcept(value="{frames}", scheme_designator="UCUM", meaning="frames"),
            ),
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup(h.SOPClassUID, h.SOPInstanceUID) for h in headers],
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=str(model_name), manufacturer_name=manufacturer, model_name=str(model_name)
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.CardiacMRI,
        imaging_measurements=[group],
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=list(headers),
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=int(series_number),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=manufacturer,
        is_complete=True,
        is_verified=False,
    )
    sr.SeriesDescription = f"{model_name} {model_version}"[:64]
    return sr


class SeriesReportWriter:
    """Write a DICOM SR (:func:`series_report`) for every DICOM series among the classified inputs.

    Args:
        records: the inputs (:func:`mnms_groupdistil.datasets.mnms.inference.find_cine_volumes`); a record whose
            ``image`` is a folder is a DICOM series.
        output_dir: where the reports go (beside the CSV).
        model_name: the model's name written into each report.
        model_version: its version.
        enabled: the bundle setting ``dicom_sr``: write the reports (True) or not.
        series_number: Series Number of each report's series.
        manufacturer: Manufacturer of the equipment writing the reports.

    Raises:
        SettingError: ``enabled`` is not a bool.

    Example (bundle config)::

        "dicom_sr_writer": {"_target_": "mnms_groupdistil.datasets.mnms.dicom_sr.SeriesReportWriter",
                            "records": "@datalist", "output_dir": "@output_dir", "model_name": "@_meta_#name",
                            "model_version": "@_meta_#version", "enabled": "@dicom_sr"}
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        output_dir: str | Path,
        model_name: str,
        model_version: str,
        enabled: bool = True,
        series_number: int = SR_SERIES_NUMBER,
        manufacturer: str = "mnms_groupdistil",
    ) -> None:
        if not isinstance(enabled, bool):
            raise SettingError(
                f"dicom_sr must be true or false (on the command line: --dicom_sr False), got {enabled!r}."
            )
        self.records = list(records)
        self.output_dir = Path(output_dir)
        self.model_name = str(model_name)
        self.model_version = str(model_version)
        self.enabled = enabled
        self.series_number = int(series_number)
        self.manufacturer = manufacturer

    def series(self) -> dict[str, Path]:
        """Subject -> folder of every DICOM series among the records.

        Raises:
            InputError: two inputs share a subject name (a report must cite one series).
        """
        by_subject: dict[str, list[str]] = {}
        for record in self.records:
            by_subject.setdefault(str(record["subject"]), []).append(str(record["image"]))
        folders = {s: Path(images[0]) for s, images in by_subject.items() if any(Path(i).is_dir() for i in images)}
        shared = {s: by_subject[s] for s in folders if len(by_subject[s]) > 1}
        if shared:
            raise InputError(
                [f"subject {s}: {', '.join(images)}" for s, images in shared.items()],
                header="inputs share a subject name (a DICOM series is named by its folder), so their predictions "
                "and reports cannot be told apart; rename the folders or files:",
            )
        return folders

    def check(self) -> None:
        """Fail before any work when reports are due but cannot be written.

        Raises:
            SettingError: ``enabled``, DICOM series among the inputs, and highdicom not installed.
            InputError: as :meth:`series`.
        """
        if self.enabled and self.series():
            _highdicom()

    def __call__(self, predictions: Sequence[Mapping[str, Any]]) -> list[Path]:
        """Write a report for each of ``predictions`` (one per subject) that is a DICOM series; return the paths."""
        if not self.enabled:
            return []
        folders = self.series()
        written = []
        for prediction in predictions:
            folder = folders.get(str(prediction["subject"]))
            if folder is None:
                continue
            report = series_report(
                read_series_headers(folder),
                prediction,
                self.model_name,
                self.model_version,
                self.series_number,
                self.manufacturer,
            )
            path = self.output_dir / f"{prediction['subject']}{SR_SUFFIX}"
            path.parent.mkdir(parents=True, exist_ok=True)
            report.save_as(path)
            written.append(path)
        if written:
            logger.info("wrote %d DICOM SR: %s", len(written), ", ".join(str(p) for p in written))
        return written
