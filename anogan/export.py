"""What `anogan score` writes: the scores table, failures, NIfTI maps, DICOM Secondary Capture.

`OutputWriter` is the sink of `anogan.scoring.series.SeriesScorer`. Under the output folder:

    scores.csv            one row per scored slice (SCORE_COLUMNS first)
    failures.csv          source,reason for every input that could not be scored
    maps/<series>.nii.gz  the pixel anomaly map of each series on its input grid and geometry
    previews/<series>.npz the most anomalous slices (image, reconstruction, map) for the report
    dicom/<series>/*.dcm  a Secondary Capture series (heatmap over the image) per flagged
                          DICOM series, one image per flagged slice
    summary.json          inputs, model, calibration and one entry per series

Maps are streamed: a slice's map goes to its gzip stream as soon as it is scored, so that a
long series never sits in memory. Every file name derived from a header goes through
`safe_filename` and is checked to stay inside the output folder.
"""

import csv
import gzip
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from highdicom.sc import SCImage
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from anogan.errors import AnoganError
from anogan.io.series import Series, safe_filename, sanitise_text
from anogan.report.overlays import overlay, with_colour_bar
from anogan.scoring.series import SeriesSummary, SliceResult

logger = logging.getLogger(__name__)

SCORE_COLUMNS = (
    "source",
    "series",
    "slice",
    "score",
    "image_residual",
    "feature_residual",
    "reference",
    "flagged",
)
FAILURE_COLUMNS = ("source", "reason")
SUMMARY_FILE = "summary.json"
SUMMARY_FORMAT = "anogan-scores"
SUMMARY_VERSION = 1
SC_SERIES_OFFSET = 9000  # Secondary Capture series number: the source's plus this
SC_MANUFACTURER = "anogan"
SC_DESCRIPTION = "anogan anomaly heatmap"  # prefix of the SC SeriesDescription (LO, 64 chars)
NIFTI_DESCRIPTION = b"anogan anomaly map |x - G(E(x))|"
_ORIENTATION_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))  # negative, positive per axis


class OutputError(AnoganError):
    """An output file cannot be written where it should go."""


def read_summary(out_dir: str | Path) -> dict[str, Any]:
    """The summary.json of a scoring run, checked to be one.

    Raises:
        OutputError: no summary, or not one written by `anogan score`.
    """
    path = Path(out_dir) / SUMMARY_FILE
    if not path.is_file():
        raise OutputError(f"{path}: no such file; pass a folder written by anogan score")
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OutputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(summary, dict) or summary.get("format") != SUMMARY_FORMAT:
        raise OutputError(f"{path}: not an anogan score summary (format {SUMMARY_FORMAT!r})")
    return summary


def unique_name(series_id: str, taken: set[str]) -> str:
    """The file name of a series' outputs: its sanitised id, numbered from -2 when taken.

    Args:
        series_id: the reader's series identifier.
        taken: names given so far in this run; the new name is added to it.
    """
    stem = safe_filename(series_id, fallback="series")
    name, number = stem, 1
    while name in taken:
        number += 1
        name = f"{stem}-{number}"
    taken.add(name)
    return name


def read_failures(out_dir: str | Path) -> list[dict[str, str]]:
    """The rows of failures.csv, empty when there is none."""
    path = Path(out_dir) / "failures.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


class NiftiStream:
    """A NIfTI-1 volume written slice by slice into a gzip stream.

    NIfTI stores voxels with the first index fastest; for the volume (W, H, S) of a Series
    (see `Series.affine`) one slice is then H * W contiguous values, row after row: exactly a
    (H, W) map in C order. The file appears under its name only once complete.

    Args:
        path: destination `.nii.gz`.
        shape: (S, H, W) of the series.
        affine: (4, 4) voxel (w, h, s) to world mm, as `Series.affine`.
    """

    def __init__(self, path: Path, shape: tuple[int, int, int], affine: np.ndarray) -> None:
        slices, height, width = shape
        header = nib.Nifti1Header()
        header.set_data_shape((width, height, slices))
        header.set_data_dtype(np.float32)
        header.set_qform(affine, code=1)
        header.set_sform(affine, code=1)
        header.set_xyzt_units("mm")
        header["descrip"] = NIFTI_DESCRIPTION
        self.path = path
        self.shape = (height, width)
        self.expected = slices
        self.written = 0
        self._partial = path.with_name(f".{path.name}.part")
        # The stream stays open across calls: `close` or `abort` ends it.
        self._stream = gzip.open(self._partial, "wb", compresslevel=6)  # noqa: SIM115
        header.write_to(self._stream)

    def write(self, pixel_map: np.ndarray) -> None:
        """Append the next slice's (H, W) map."""
        if pixel_map.shape != self.shape:
            raise ValueError(f"{self.path}: slice map {pixel_map.shape}, expected {self.shape}")
        self._stream.write(np.ascontiguousarray(pixel_map, dtype="<f4").tobytes())
        self.written += 1

    def close(self) -> Path:
        """Finish the file once every slice is in; returns its path."""
        self._stream.close()
        if self.written != self.expected:
            self._partial.unlink(missing_ok=True)
            raise OutputError(f"{self.path}: {self.written} of {self.expected} slices written")
        os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        self._stream.close()
        self._partial.unlink(missing_ok=True)


@dataclass
class _SeriesOutput:
    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    nifti: NiftiStream | None = None
    dicom_dir: Path | None = None
    dicom_files: list[str] = field(default_factory=list)
    sc_series_uid: str = ""


class OutputWriter:
    """Writes everything of one scoring run under `out_dir` (see the module docstring).

    Args:
        out_dir: the output folder, created if needed.
        input_root: the folder the inputs' `sources` are relative to (for DICOM headers).
        heatmap_max: top of the fixed heatmap colour scale, from calibration.
        threshold: the calibrated slice threshold, recorded in the SC images.
        write_dicom: write Secondary Capture series for flagged DICOM series.
    """

    def __init__(
        self,
        out_dir: Path,
        input_root: Path,
        heatmap_max: float,
        threshold: float,
        write_dicom: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir).resolve()
        self.input_root = Path(input_root)
        self.heatmap_max = heatmap_max
        self.threshold = threshold
        self.write_dicom = write_dicom
        self.failures: list[tuple[str, str]] = []
        self.series: list[dict[str, Any]] = []
        self.slices_scored = 0
        self._open: dict[int, _SeriesOutput] = {}
        self._names: set[str] = set()
        for folder in ("maps", "previews"):
            (self.out_dir / folder).mkdir(parents=True, exist_ok=True)
        # Rows go out series by series while scoring runs; `finish` closes the file.
        self._scores_handle = open(self.out_dir / "scores.csv", "w", newline="")  # noqa: SIM115
        self._scores = csv.DictWriter(self._scores_handle, fieldnames=SCORE_COLUMNS)
        self._scores.writeheader()

    # The ScoringSink protocol.

    def open_series(self, key: int, series: Series) -> None:
        name = self._unique_name(series.series_id)
        output = _SeriesOutput(name)
        output.nifti = NiftiStream(
            self._inside("maps", f"{name}.nii.gz"), series.pixels.shape, series.affine
        )
        self._open[key] = output

    def write_slice(self, key: int, series: Series, result: SliceResult) -> None:
        output = self._open[key]
        output.rows.append(
            {
                "source": result.source,
                "series": series.series_id,
                "slice": result.index,
                "score": f"{result.score:.6g}",
                "image_residual": f"{result.image_residual:.6g}",
                "feature_residual": f"{result.feature_residual:.6g}",
                "reference": f"{result.reference:.6g}",
                "flagged": int(result.flagged),
            }
        )
        output.nifti.write(result.pixel_map)
        if result.flagged and self.write_dicom and series.kind == "dicom":
            self._write_secondary_capture(output, series, result)

    def close_series(self, summary: SeriesSummary) -> None:
        output = self._open.pop(summary.key)
        self._scores.writerows(output.rows)
        self._scores_handle.flush()
        self.slices_scored += len(output.rows)
        map_path = output.nifti.close()
        preview_path = self._inside("previews", f"{output.name}.npz")
        _save_previews(preview_path, summary)
        self.series.append(
            {
                "key": summary.key,
                "name": output.name,
                "series_id": summary.series_id,
                "kind": summary.kind,
                "metadata": {k: sanitise_text(v) for k, v in summary.metadata.items()},
                "shape": list(summary.shape),
                "first_source": summary.sources[0],
                "score": summary.score,
                "flagged_slices": summary.flagged_slices,
                "slice_scores": [round(value, 6) for value in summary.slice_scores],
                "map_max": summary.map_max,
                "previews": [
                    {"slice": item.index, "score": item.score} for item in summary.previews
                ],
                "map_file": map_path.relative_to(self.out_dir).as_posix(),
                "preview_file": preview_path.relative_to(self.out_dir).as_posix(),
                "dicom_dir": (
                    output.dicom_dir.relative_to(self.out_dir).as_posix()
                    if output.dicom_dir
                    else None
                ),
                "dicom_files": len(output.dicom_files),
            }
        )
        logger.debug("Wrote %s (%d slices)", map_path, len(output.rows))

    def discard_series(self, key: int, series: Series, reason: str) -> None:
        output = self._open.pop(key)
        output.nifti.abort()
        for file in output.dicom_files:
            (self.out_dir / file).unlink(missing_ok=True)
        self.failure(series.sources[0] if series.sources else series.series_id, reason)

    def failure(self, source: str, reason: str) -> None:
        source, reason = sanitise_text(source, 512), sanitise_text(reason, 512)
        logger.warning("Not scored: %s: %s", source, reason)
        self.failures.append((source, reason))

    # The end of a run.

    def finish(self, run: dict[str, Any]) -> Path:
        """Write failures.csv and summary.json; returns the summary's path.

        Args:
            run: inputs, model and calibration, stored in the summary as given.
        """
        self._scores_handle.close()
        with open(self.out_dir / "failures.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(FAILURE_COLUMNS)
            writer.writerows(self.failures)
        flagged = [entry for entry in self.series if entry["flagged_slices"]]
        summary = {
            "format": SUMMARY_FORMAT,
            "version": SUMMARY_VERSION,
            **run,
            "counts": {
                "series": len(self.series),
                "slices": self.slices_scored,
                "flagged_series": len(flagged),
                "flagged_slices": sum(len(entry["flagged_slices"]) for entry in flagged),
                "failures": len(self.failures),
            },
            "series": self.series,
        }
        path = self.out_dir / SUMMARY_FILE
        path.write_text(json.dumps(summary, indent=1))
        return path

    def _unique_name(self, series_id: str) -> str:
        return unique_name(series_id, self._names)

    def _inside(self, *parts: str) -> Path:
        path = self.out_dir.joinpath(*parts).resolve()
        if not path.is_relative_to(self.out_dir):
            raise OutputError(f"{path}: would lie outside the output folder {self.out_dir}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _write_secondary_capture(
        self, output: _SeriesOutput, series: Series, result: SliceResult
    ) -> None:
        reference_path = self.input_root / result.source
        try:
            reference = pydicom.dcmread(reference_path, stop_before_pixels=True)
        except (InvalidDicomError, OSError) as error:
            logger.warning(
                "No Secondary Capture for %s: header unreadable (%s)", result.source, error
            )
            return
        if not output.sc_series_uid:
            output.sc_series_uid = generate_uid()
            output.dicom_dir = self._inside("dicom", output.name, "x").parent
        image, _ = result.on_input_grid()
        picture = with_colour_bar(overlay(image, result.pixel_map, self.heatmap_max))
        number = len(output.dicom_files) + 1
        path = self._inside("dicom", output.name, f"{number:05d}.dcm")
        frame = series.frame_numbers[result.index] if series.frame_numbers else 1
        dataset = secondary_capture(
            reference, picture, output.sc_series_uid, number, result, self.threshold, frame
        )
        dataset.save_as(path, enforce_file_format=True)
        output.dicom_files.append(path.relative_to(self.out_dir).as_posix())


def secondary_capture(
    reference: Dataset,
    picture: np.ndarray,
    series_uid: str,
    instance_number: int,
    result: SliceResult,
    threshold: float,
    frame_number: int = 1,
) -> Dataset:
    """A Secondary Capture image of a heatmap overlay, in the study of `reference`.

    Args:
        reference: header of the source slice; patient and study attributes are copied.
        picture: (H, W', 3) uint8 RGB, the overlay with its colour bar.
        series_uid: the new SC series.
        instance_number: position in the SC series, from 1.
        result: the scored slice, for its score and source.
        threshold: the calibrated alarm threshold.
        frame_number: the source frame, referenced when the source has several.
    """
    series_number = int(getattr(reference, "SeriesNumber", 0) or 0) + SC_SERIES_OFFSET
    dataset = SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=picture,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer=SC_MANUFACTURER,
        patient_orientation=_patient_orientation(reference),
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
    )
    description = sanitise_text(getattr(reference, "SeriesDescription", ""), 40)
    dataset.SeriesDescription = f"{SC_DESCRIPTION} {description}".strip()[:64]
    dataset.ImageComments = (
        f"Decision support, not a diagnosis. Slice {result.index} score {result.score:.4g} "
        f"(threshold {threshold:.4g}); heatmap |x - G(E(x))|, one fixed scale for all slices."
    )[:10240]
    dataset.BurnedInAnnotation = "NO"
    if "Laterality" not in dataset:
        # Type 2C in General Series; left empty (unknown) rather than absent, as verifiers ask.
        dataset.Laterality = getattr(reference, "Laterality", "") or ""
    dataset.DerivationDescription = "f-AnoGAN residual heatmap over the source slice"
    if "SOPInstanceUID" in reference and "SOPClassUID" in reference:
        source = Dataset()
        source.ReferencedSOPClassUID = reference.SOPClassUID
        source.ReferencedSOPInstanceUID = reference.SOPInstanceUID
        if int(getattr(reference, "NumberOfFrames", 1) or 1) > 1:
            source.ReferencedFrameNumber = frame_number
        dataset.SourceImageSequence = DicomSequence([source])
    return dataset


def _patient_orientation(reference: Dataset) -> tuple[str, str]:
    """PatientOrientation letters of the rows and columns, from ImageOrientationPatient."""
    cosines = getattr(reference, "ImageOrientationPatient", None)
    if cosines is None or len(cosines) != 6:
        return ("L", "P")  # NOTE: axial is assumed when the source states no orientation
    letters = []
    for vector in (np.asarray(cosines[:3], float), np.asarray(cosines[3:], float)):
        axis = int(np.argmax(np.abs(vector)))
        letters.append(_ORIENTATION_LETTERS[axis][int(vector[axis] > 0)])
    return letters[0], letters[1]


def _save_previews(path: Path, summary: SeriesSummary) -> None:
    """The top slices as float16 arrays: images, reconstructions, maps (P, H, W), indices."""
    if not summary.previews:
        return
    np.savez_compressed(
        path,
        slices=np.array([item.index for item in summary.previews], dtype=np.int64),
        scores=np.array([item.score for item in summary.previews], dtype=np.float64),
        images=np.stack([item.image for item in summary.previews]).astype(np.float16),
        reconstructions=np.stack([item.reconstruction for item in summary.previews]).astype(
            np.float16
        ),
        maps=np.stack([item.pixel_map for item in summary.previews]).astype(np.float32),
    )
