"""The Series record every reader returns, and the one sanitiser for header-derived text.

A Series is one stack of 2D slices with the geometry needed to put a heatmap back on the
scanner's grid. Everything that came from a file header and may reach a file name, a log line
or the HTML report passes through `sanitise_text` (and `safe_filename` for file names) first.
"""

import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

MAX_TEXT_LENGTH = 128  # characters kept of any header value
MAX_FILENAME_LENGTH = 96  # characters of a name derived from a header, before its extension

SeriesKind = Literal["dicom", "nifti", "image"]

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Series:
    """One stack of 2D slices read from disk.

    Attributes:
        pixels: (S, H, W) float32, in physical units where the format defines them (CT in HU),
            else the stored intensities.
        spacing: (row, column) pixel spacing in mm; (1.0, 1.0) where unknown.
        affine: (4, 4) float64 mapping the voxel index (w, h, s) (column, row, slice) to world
            coordinates in mm, RAS+ as in NIfTI. `np.transpose(pixels, (2, 1, 0))` with this
            affine is a NIfTI volume that overlays the input in a viewer.
        series_id: identifier, already sanitised: the SeriesInstanceUID for DICOM, the file
            name for NIfTI and images.
        sources: for every slice, the file it came from, relative to the input root.
        kind: which reader produced it.
        metadata: a small set of sanitised header values. For DICOM: SeriesInstanceUID,
            StudyInstanceUID, Modality, SeriesDescription, PatientID, PatientName, StudyDate,
            BodyPartExamined, orientation (`axial`, `coronal`, `sagittal` or `oblique`),
            SOPClassUID (of the first slice) and window (how `window` was chosen). For NIfTI:
            orientation and, for 4D inputs, volume (the index along the fourth axis).
        window: (low, high) intensity bounds in the units of `pixels`, to clip to before
            normalising (a CT preset, the file's own window, or robust percentiles); None where
            the format defines no window (NIfTI, images).
        instance_uids: DICOM only, for every slice the sanitised SOPInstanceUID of its file
            (repeated for the frames of a multi-frame file); empty for other kinds.
        frame_numbers: DICOM only, for every slice its 1-based frame number within its file
            (1 for single-frame files); empty for other kinds. With `instance_uids` and
            metadata["SOPClassUID"] this is what a derived object needs to reference its
            source.
    """

    pixels: np.ndarray
    spacing: tuple[float, float]
    affine: np.ndarray
    series_id: str
    sources: tuple[str, ...]
    kind: SeriesKind
    metadata: Mapping[str, str] = field(default_factory=dict)
    window: tuple[float, float] | None = None
    instance_uids: tuple[str, ...] = ()
    frame_numbers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.pixels.ndim != 3:
            raise ValueError(f"Series pixels must be (S, H, W), got shape {self.pixels.shape}")
        if len(self.sources) != self.pixels.shape[0]:
            raise ValueError(
                f"Series {self.series_id}: {len(self.sources)} sources for "
                f"{self.pixels.shape[0]} slices"
            )
        if self.affine.shape != (4, 4):
            raise ValueError(f"Series affine must be (4, 4), got {self.affine.shape}")
        for name in ("instance_uids", "frame_numbers"):
            values = getattr(self, name)
            if values and len(values) != self.pixels.shape[0]:
                raise ValueError(
                    f"Series {self.series_id}: {len(values)} {name} for "
                    f"{self.pixels.shape[0]} slices"
                )

    @property
    def num_slices(self) -> int:
        return int(self.pixels.shape[0])


@dataclass(frozen=True)
class ReadFailure:
    """A file or series that could not be read, reported instead of stopping the others.

    Attributes:
        source: the file (for a whole series, its first file), relative to the input root.
        reason: one sanitised line saying what is wrong with it.
    """

    source: str
    reason: str


def sanitise_text(value: object, max_length: int = MAX_TEXT_LENGTH) -> str:
    """Make header-derived text safe for logs, file names and HTML templates.

    Removes control and format characters (newlines, escapes, bidi overrides), path
    separators and NUL, collapses whitespace and bounds the length. HTML escaping still
    happens in the templates; this function guarantees the text is one harmless line.

    Args:
        value: any header value; None gives an empty string.
        max_length: characters kept, an ellipsis marking a cut.

    Returns:
        A single-line string of at most `max_length` characters.
    """
    if value is None:
        return ""
    text = unicodedata.normalize("NFKC", str(value))
    kept = []
    for character in text:
        category = unicodedata.category(character)
        if character in "/\\" or category.startswith("C") or category in ("Zl", "Zp"):
            kept.append(" ")
        else:
            kept.append(character)
    text = " ".join("".join(kept).split())
    if len(text) > max_length:
        text = text[: max_length - 1] + "…"
    return text


def safe_filename(value: object, fallback: str = "unnamed") -> str:
    """A file name stem from header-derived text: letters, digits, '.', '_' and '-' only.

    Never empty, never '.' or '..', never starting with a dot, at most MAX_FILENAME_LENGTH
    characters, so it cannot leave the folder it is joined to.
    """
    stem = _UNSAFE_FILENAME.sub("_", sanitise_text(value)).strip("._-")
    stem = stem[:MAX_FILENAME_LENGTH].strip("._-")
    return stem or fallback


def relative_source(path: Path, root: Path | None) -> str:
    """`path` relative to `root` (default its folder) with '/' separators, for Series sources."""
    base = Path(root) if root is not None else path.parent
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.name


def error_summary(error: BaseException) -> str:
    """An exception raised by a decoding library as one sanitised line: `Type: message`."""
    return sanitise_text(f"{type(error).__name__}: {error}", max_length=200)
