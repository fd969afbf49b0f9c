"""DICOM series from a folder tree: find, group, order, decode, rescale, window.

The steps, in order:
  1. Walk the tree; any file name counts. Each file's header is read once, with large values
     (pixel data) deferred until decoding. DICOMDIR and non-DICOM files are skipped with a
     DEBUG line, non-image objects (SEG, SR, presentation states, RT plans, waveforms) with
     an INFO line naming their kind.
  2. Group by SeriesInstanceUID and order the files of a series by position along the slice
     normal, falling back to InstanceNumber, then the file name. A multi-frame file gives one
     slice per frame, in frame order.
  3. Decode through pydicom and its installed plugins (uncompressed little and big endian,
     RLE, JPEG baseline, extended and lossless, JPEG-LS, JPEG 2000), apply the modality LUT
     (so CT is in HU), invert MONOCHROME1, and turn colour into grey with a warning.
  4. Choose the Series window: the config's preset (CT only), else the file's
     WindowCenter/WindowWidth, else robust percentiles of the series.

A file that cannot be read becomes a ReadFailure naming it and the reason (truncated pixel
data, missing or unsupported transfer syntax, no pixel data, a size unlike the rest of its
series); pydicom's warnings about truncation count as errors, so no file ever yields a silently
empty image. A series whose files disagree with no clear majority fails as a whole.
"""

import logging
import struct
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from anogan.errors import ImageReadError
from anogan.io.series import (
    ReadFailure,
    Series,
    error_summary,
    relative_source,
    safe_filename,
    sanitise_text,
)
from anogan.io.windows import preset_window, window_bounds

logger = logging.getLogger(__name__)

DEFER_BYTES = 4096  # header values larger than this are read from disk only when decoded
PERCENTILE_WINDOW = (0.5, 99.5)  # window of a series without one of its own, in percentiles
PERCENTILE_STRIDE = 4  # every 4th row and column is enough to estimate those percentiles
MAX_DECODED_BYTES = 2**31  # a file whose header promises more is refused before decoding
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
HOUNSFIELD_MODALITIES = ("CT",)  # modalities the HU window presets apply to
DEFAULT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # rows along +x, columns along +y (LPS)
FUNCTIONAL_GROUP_TAGS = frozenset({0x52009229, 0x52009230})  # shared, per-frame groups
UNDEFINED_LENGTH = 0xFFFFFFFF  # the length of encapsulated (compressed) pixel data
# (implicit VR, little endian) as pydicom parsed a file -> its native transfer syntax
NATIVE_SYNTAXES = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}
REQUIRED_IMAGE_KEYWORDS = ("Rows", "Columns", "BitsAllocated")
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
METADATA_KEYWORDS = (
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "Modality",
    "SeriesDescription",
    "PatientID",
    "PatientName",
    "StudyDate",
    "BodyPartExamined",
    "SOPClassUID",
)
# Parts of pydicom warnings that mean the data ended early: these are errors here.
TRUNCATION_WARNINGS = (
    "end of file",
    "end of the encapsulated pixel data",
    "fewer frames than expected",
    "less than expected",
    "truncat",
)
GREY_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
COLOUR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 grey from RGB

# NOTE: pydicom and its codec plugins report corrupt input through many exception types
# (bad lengths, bad VRs, codec failures, missing elements). Each is caught only around a
# read or a decode, and always turned into an ImageReadError naming the file.
_PYDICOM_ERRORS = (
    InvalidDicomError,
    BytesLengthException,
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    ZeroDivisionError,
    MemoryError,
    struct.error,
    zlib.error,  # deflated transfer syntax
)


@dataclass
class _Header:
    """What one file's header says, read before any pixel is decoded."""

    path: Path
    source: str
    dataset: Dataset
    series_uid: str
    rows: int
    columns: int
    frames: int
    samples: int
    photometric: str
    instance_number: float | None
    orientation: np.ndarray | None  # (6,) row and column direction cosines, LPS
    positions: list[np.ndarray | None]  # per frame, (3,) ImagePositionPatient, LPS mm
    spacing: tuple[float, float] | None  # (row, column) mm
    slice_spacing: float | None  # mm, SpacingBetweenSlices or SliceThickness
    rescale: list[tuple[float, float]]  # per frame, (slope, intercept)
    stored_range: tuple[float, float]  # lowest and highest storable value
    file_window: tuple[float, float] | None  # (center, width) in modality units
    instance_uid: str
    metadata: dict[str, str] = field(default_factory=dict)


def iter_dicom(
    path: str | Path,
    window: str | None = None,
    root: Path | None = None,
    files: Sequence[Path] | None = None,
    select: Callable[[str], bool] | None = None,
) -> Iterator[Series | ReadFailure]:
    """Every DICOM series in a folder tree (or one file), and every file that failed.

    Args:
        path: a folder searched recursively, or one DICOM file.
        window: a preset name from `anogan.io.windows.WINDOW_PRESETS`, or None for the
            file's own window.
        root: folder the sources are given relative to; default `path` for a folder, its
            parent for a file.
        files: the files to consider, when the caller has already walked the tree.
        select: called with the source of each file whose header is unreadable, then with
            the SeriesInstanceUID of each series, before the series is decoded; False skips
            the file or the whole series. Every header is read whatever it returns.

    Yields:
        A Series per series found (pixels (S, H, W) float32 in modality units, CT in HU), a
        ReadFailure per file or series that could not be read.

    Raises:
        ConfigError: `window` names no preset.
    """
    path = Path(path)
    if window is not None:
        preset_window(window)
    base = Path(root) if root is not None else (path if path.is_dir() else path.parent)
    if files is None:
        files = (
            sorted(item for item in path.rglob("*") if item.is_file()) if path.is_dir() else [path]
        )

    groups: dict[str, list[_Header]] = {}
    for file in files:
        source = relative_source(file, base)
        try:
            header = _read_header(file, source, strict=False)
        except ImageReadError as error:
            logger.debug("%s: %s", error.source, error.reason)
            if select is None or select(error.source):
                yield ReadFailure(error.source, error.reason)
            continue
        if header is not None:
            groups.setdefault(header.series_uid, []).append(header)
    logger.debug("%s: %d DICOM series in %d files", path, len(groups), len(files))
    for series_uid, headers in groups.items():
        if select is None or select(series_uid):
            yield from _read_series(headers, window)


def read_dicom_file(
    path: str | Path, window: str | None = None, root: Path | None = None
) -> Series:
    """One DICOM file as a Series (one slice per frame).

    Args:
        path: the file.
        window: as for `iter_dicom`.
        root: folder the source is given relative to; default the file's folder.

    Raises:
        ImageReadError: not DICOM, not an image (SEG, SR, ...), or not decodable; the message
            names the file and the reason.
        ConfigError: `window` names no preset.
    """
    path = Path(path)
    if window is not None:
        preset_window(window)
    source = relative_source(path, root)
    header = _read_header(path, source, strict=True)
    results = list(_read_series([header], window)) if header is not None else []
    for result in results:
        if isinstance(result, ReadFailure):
            raise ImageReadError(result.source, result.reason)
        return result
    raise ImageReadError(source, "no image in this DICOM file")


def _read_header(path: Path, source: str, strict: bool) -> _Header | None:
    """Parse one file's header; None for a file to skip (only when not `strict`)."""
    try:
        with path.open("rb") as handle:
            start = handle.read(132)
    except OSError as error:
        raise ImageReadError(source, f"cannot open ({error_summary(error)})") from None
    has_preamble = len(start) == 132 and start[128:132] == b"DICM"
    if not has_preamble and not _starts_like_dataset(start):
        return _skip(
            source,
            "not a DICOM file (no DICM prefix, no DICOM tags at the start)",
            strict,
            logging.DEBUG,
        )

    # Values are converted from their raw bytes on first access, so warnings (bad VRs, early
    # ends) come both from reading and from parsing: both are watched.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = pydicom.dcmread(path, defer_size=DEFER_BYTES, force=not has_preamble)
        except _PYDICOM_ERRORS as error:
            raise ImageReadError(
                source, f"unreadable DICOM header ({error_summary(error)})"
            ) from None
        _raise_on_truncation(caught, path, source)  # an early end explains what is missing
        read_warnings = len(caught)
        try:
            header = _classify(path, source, dataset, strict)
        except _PYDICOM_ERRORS as error:
            raise ImageReadError(
                source, f"invalid DICOM header value ({error_summary(error)})"
            ) from None
    _raise_on_truncation(caught[read_warnings:], path, source)
    return header


def _classify(path: Path, source: str, dataset: Dataset, strict: bool) -> _Header | None:
    """Skip DICOMDIRs and non-image objects, parse the header of an image."""
    if _is_dicomdir(dataset):
        return _skip(
            source, "a DICOMDIR (an index of other files), not an image", strict, logging.DEBUG
        )
    not_image = _non_image_kind(dataset)
    if not_image:
        return _skip(source, f"a {not_image} object, not an image", strict, logging.INFO)
    return _parse_header(path, source, dataset)


def _parse_header(path: Path, source: str, dataset: Dataset) -> _Header:
    if not any(keyword in dataset for keyword in PIXEL_KEYWORDS):
        raise ImageReadError(source, "no pixel data in this DICOM file; expected an image")
    if "TransferSyntaxUID" not in dataset.file_meta:
        _infer_transfer_syntax(dataset, source)
    missing = [keyword for keyword in REQUIRED_IMAGE_KEYWORDS if keyword not in dataset]
    if missing:
        raise ImageReadError(
            source, f"missing required image element(s) {', '.join(missing)}; cannot decode"
        )
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    frames = int(dataset.get("NumberOfFrames") or 1)
    samples = int(dataset.get("SamplesPerPixel") or 1)
    bits = int(dataset.get("BitsAllocated") or 16)
    if min(rows, columns, frames) < 1 or samples not in (1, 3):
        raise ImageReadError(
            source,
            f"implausible image size: {rows} rows, {columns} columns, {frames} frames, "
            f"{samples} samples per pixel; expected positive sizes and 1 or 3 samples",
        )
    if rows * columns * frames * samples * max(1, bits // 8) > MAX_DECODED_BYTES:
        raise ImageReadError(
            source,
            f"{rows}x{columns}x{frames} pixels would exceed the {MAX_DECODED_BYTES} bytes "
            "anogan decodes per file",
        )
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in (*GREY_PHOTOMETRICS, *COLOUR_PHOTOMETRICS, "PALETTE COLOR"):
        raise ImageReadError(source, f"unsupported photometric interpretation {photometric!r}")

    uid = sanitise_text(dataset.get("SeriesInstanceUID", ""))
    orientation = _orientation(dataset)
    return _Header(
        path=path,
        source=source,
        dataset=dataset,
        series_uid=uid or f"no-series-uid:{Path(source).parent.as_posix()}",
        rows=rows,
        columns=columns,
        frames=frames,
        samples=samples,
        photometric=photometric,
        instance_number=_float(dataset.get("InstanceNumber")),
        orientation=orientation,
        positions=[_position(dataset, frame) for frame in range(frames)],
        spacing=_spacing(dataset),
        slice_spacing=_slice_spacing(dataset),
        rescale=[_rescale(dataset, frame) for frame in range(frames)],
        stored_range=_stored_range(dataset),
        file_window=_file_window(dataset),
        instance_uid=sanitise_text(dataset.get("SOPInstanceUID", "")),
        metadata={
            keyword: sanitise_text(dataset.get(keyword, "")) for keyword in METADATA_KEYWORDS
        },
    )


def _read_series(headers: list[_Header], window: str | None) -> Iterator[Series | ReadFailure]:
    """Decode, order and stack the files of one series; failures are yielded as they happen."""
    kept, failures = _split_by_size(headers)
    yield from failures
    if not kept:
        return
    ordered = _order(kept)

    slices = sum(header.frames for header in ordered)
    pixels = np.empty((slices, ordered[0].rows, ordered[0].columns), dtype=np.float32)
    keep = np.ones(slices, dtype=bool)
    decoded: list[_Header] = []
    colour_sources: list[str] = []
    start = 0
    for header in ordered:
        stop = start + header.frames
        try:
            colour = _decode(header, pixels[start:stop])
        except ImageReadError as error:
            keep[start:stop] = False
            yield ReadFailure(error.source, error.reason)
        else:
            decoded.append(header)
            if colour:
                colour_sources.append(header.source)
        start = stop
    if not decoded:
        return
    if not keep.all():
        pixels = pixels[keep]
    if colour_sources:
        logger.warning(
            "%s: colour image converted to grey by luminance (%d files of series %s)",
            colour_sources[0],
            len(colour_sources),
            decoded[0].series_uid,
        )
    yield _assemble(decoded, pixels, window)


def _assemble(headers: list[_Header], pixels: np.ndarray, window: str | None) -> Series:
    first = headers[0]
    affine, plane = _affine(headers)
    bounds, window_description = _choose_window(window, first, pixels)
    metadata = {key: value for key, value in first.metadata.items() if value}
    metadata["orientation"] = plane
    metadata["window"] = window_description
    return Series(
        pixels=pixels,
        spacing=first.spacing or (1.0, 1.0),
        affine=affine,
        series_id=safe_filename(first.metadata.get("SeriesInstanceUID") or first.series_uid),
        sources=tuple(header.source for header in headers for _ in range(header.frames)),
        kind="dicom",
        metadata=metadata,
        window=bounds,
        instance_uids=tuple(
            header.instance_uid for header in headers for _ in range(header.frames)
        ),
        frame_numbers=tuple(frame + 1 for header in headers for frame in range(header.frames)),
    )


def _decode(header: _Header, out: np.ndarray) -> bool:
    """Decode one file into `out`, (F, H, W) float32 in modality units (bright is high).

    Returns:
        Whether the file was colour (and so made grey).
    """
    dataset = header.dataset
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            array = pixel_array(dataset, decoding_plugin=_plugin_for(dataset))
            if header.photometric == "PALETTE COLOR":
                array = apply_color_lut(array, dataset)
        except _PYDICOM_ERRORS as error:
            raise ImageReadError(header.source, _decode_reason(dataset, error)) from None
    _raise_on_truncation(caught, header.path, header.source)

    # The deferred pixel bytes were loaded to decode; drop them, the array is all we keep.
    for keyword in PIXEL_KEYWORDS:
        if keyword in dataset:
            del dataset[keyword]
    colour = header.samples == 3 or header.photometric == "PALETTE COLOR"
    expected = (header.frames, header.rows, header.columns, *((3,) if colour else ()))
    array = np.asarray(array)
    if header.frames == 1 and array.shape == expected[1:]:
        array = array[None]
    if array.shape != expected:
        raise ImageReadError(
            header.source,
            f"decoded pixel data has shape {array.shape}, the header promises {expected}",
        )
    if colour:
        array = array.astype(np.float32) @ LUMINANCE  # (F, H, W)

    try:
        _modality_values(array, header, out)
    except _PYDICOM_ERRORS as error:
        raise ImageReadError(
            header.source, f"cannot apply the modality LUT ({error_summary(error)})"
        ) from None
    if not np.isfinite(out).all():
        raise ImageReadError(header.source, "pixel values are not finite after rescaling")
    return colour


def _modality_values(array: np.ndarray, header: _Header, out: np.ndarray) -> None:
    """Stored values to modality units (CT: HU) in `out`, MONOCHROME1 inverted (bright high)."""
    if "ModalityLUTSequence" in header.dataset:
        out[...] = apply_modality_lut(array, header.dataset)
    else:
        for frame, (slope, intercept) in enumerate(header.rescale):
            np.multiply(array[frame], np.float32(slope), out=out[frame], casting="unsafe")
            if intercept != 0.0:
                out[frame] += np.float32(intercept)
    if header.photometric == "MONOCHROME1":
        low, high = _rescaled_range(header)
        np.subtract(np.float32(low + high), out, out=out)


def _choose_window(
    window: str | None, header: _Header, pixels: np.ndarray
) -> tuple[tuple[float, float] | None, str]:
    """The Series window (low, high) and a line saying where it came from."""
    modality = header.metadata.get("Modality", "")
    if window is not None:
        if modality in HOUNSFIELD_MODALITIES:
            center, width = preset_window(window)
            return window_bounds(center, width), f"preset {window} ({center:g}, {width:g})"
        # NOTE: presets are in HU; on MR or PET they would clip everything to one value.
        logger.warning(
            "%s: window preset %r is for CT in HU, series is %s; using its own window instead",
            header.source,
            window,
            modality or "of unknown modality",
        )
    if header.file_window is not None:
        center, width = header.file_window
        if header.photometric == "MONOCHROME1":
            low, high = _rescaled_range(header)
            center = low + high - center
        return window_bounds(center, width), f"file ({center:g}, {width:g})"
    sample = pixels[:, ::PERCENTILE_STRIDE, ::PERCENTILE_STRIDE]
    low, high = (float(value) for value in np.percentile(sample, PERCENTILE_WINDOW))
    if high <= low:
        return None, "none (constant image)"
    return (low, high), f"percentiles {PERCENTILE_WINDOW[0]:g}-{PERCENTILE_WINDOW[1]:g}"


def _split_by_size(headers: list[_Header]) -> tuple[list[_Header], list[ReadFailure]]:
    """Keep the files of the size most of a series has; fail the rest (all, without a majority)."""
    sizes = Counter((header.rows, header.columns) for header in headers)
    if len(sizes) == 1:
        return headers, []
    (size, count), *_ = sizes.most_common()
    listing = ", ".join(
        f"{number} of {rows}x{columns}" for (rows, columns), number in sizes.most_common()
    )
    uid = headers[0].series_uid
    if 2 * count <= len(headers):
        reason = (
            f"series {uid}: slices of different sizes ({listing}) and no size held by most "
            "files; expected one size per series"
        )
        return [], [ReadFailure(headers[0].source, reason)]
    kept = [header for header in headers if (header.rows, header.columns) == size]
    failures = [
        ReadFailure(
            header.source,
            f"slice of {header.rows}x{header.columns} in series {uid} whose other {count} "
            f"files are {size[0]}x{size[1]}; expected one size per series",
        )
        for header in headers
        if (header.rows, header.columns) != size
    ]
    return kept, failures


def _order(headers: list[_Header]) -> list[_Header]:
    """Files by position along the slice normal, else InstanceNumber, else file name."""
    first = headers[0].orientation
    by_position = first is not None and all(
        header.orientation is not None
        and header.positions[0] is not None
        and np.allclose(header.orientation, first, atol=1e-3)
        for header in headers
    )
    if by_position:
        normal = np.cross(first[:3], first[3:])
        return sorted(
            headers,
            key=lambda header: (
                float(np.dot(normal, header.positions[0])),
                header.instance_number or 0.0,
                header.source,
            ),
        )
    if all(header.instance_number is not None for header in headers):
        return sorted(headers, key=lambda header: (header.instance_number, header.source))
    return sorted(headers, key=lambda header: header.source)


def _affine(headers: list[_Header]) -> tuple[np.ndarray, str]:
    """(4, 4) voxel (column, row, slice) -> RAS+ mm affine of ordered files, and the plane."""
    first = headers[0]
    orientation = (
        first.orientation if first.orientation is not None else np.array(DEFAULT_ORIENTATION)
    )
    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    row_spacing, column_spacing = first.spacing or (1.0, 1.0)

    positions = [position for header in headers for position in header.positions]
    origin = np.zeros(3)
    step = first.slice_spacing or 1.0
    if all(position is not None for position in positions):
        origin = positions[0]
        distances = np.diff([float(np.dot(normal, position)) for position in positions])
        distances = distances[np.abs(distances) > 1e-6]
        if distances.size:
            step = float(np.median(distances))

    lps = np.eye(4)
    lps[:3, 0] = row_direction * column_spacing  # along a row: the column index grows
    lps[:3, 1] = column_direction * row_spacing  # down a column: the row index grows
    lps[:3, 2] = normal * step
    lps[:3, 3] = origin
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM patient space is LPS
    return ras, _plane_name(normal) if first.orientation is not None else "unknown"


def _plane_name(normal: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _functional(dataset: Dataset, frame: int, sequence: str, keyword: str) -> object:
    """A value from the frame's functional group, else the shared one, else the top level."""
    if FUNCTIONAL_GROUP_TAGS.isdisjoint(dataset.keys()):  # most single-frame files
        return dataset.get(keyword)
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    groups = [per_frame[frame]] if per_frame is not None and frame < len(per_frame) else []
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        items = group.get(sequence)
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return dataset.get(keyword)


def _orientation(dataset: Dataset) -> np.ndarray | None:
    values = _floats(
        _functional(dataset, 0, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
    )
    if values is None:
        return None
    row_direction, column_direction = values[:3], values[3:]
    lengths = np.linalg.norm(row_direction), np.linalg.norm(column_direction)
    if min(lengths) < 1e-3 or np.linalg.norm(np.cross(row_direction, column_direction)) < 1e-3:
        return None
    return np.concatenate([row_direction / lengths[0], column_direction / lengths[1]])


def _position(dataset: Dataset, frame: int) -> np.ndarray | None:
    return _floats(_functional(dataset, frame, "PlanePositionSequence", "ImagePositionPatient"), 3)


def _spacing(dataset: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = _floats(_functional(dataset, 0, "PixelMeasuresSequence", keyword), 2)
        if values is not None and values.min() > 0:
            return float(values[0]), float(values[1])
    return None


def _slice_spacing(dataset: Dataset) -> float | None:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _float(_functional(dataset, 0, "PixelMeasuresSequence", keyword))
        if value is not None and value > 0:
            return value
    return None


def _rescale(dataset: Dataset, frame: int) -> tuple[float, float]:
    sequence = "PixelValueTransformationSequence"
    slope = _float(_functional(dataset, frame, sequence, "RescaleSlope"))
    intercept = _float(_functional(dataset, frame, sequence, "RescaleIntercept"))
    return (slope if slope else 1.0), (intercept or 0.0)


def _stored_range(dataset: Dataset) -> tuple[float, float]:
    bits = int(dataset.get("BitsStored") or dataset.get("BitsAllocated") or 16)
    bits = min(max(bits, 1), 64)
    if int(dataset.get("PixelRepresentation") or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _rescaled_range(header: _Header) -> tuple[float, float]:
    slope, intercept = header.rescale[0]
    ends = [value * slope + intercept for value in header.stored_range]
    return min(ends), max(ends)


def _file_window(dataset: Dataset) -> tuple[float, float] | None:
    sequence = "FrameVOILUTSequence"
    center = _first_float(_functional(dataset, 0, sequence, "WindowCenter"))
    width = _first_float(_functional(dataset, 0, sequence, "WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    return center, width


def _floats(value: object, count: int) -> np.ndarray | None:
    """`count` finite floats from a multi-valued header element, else None."""
    if value is None:
        return None
    try:
        values = np.array([float(item) for item in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if values.shape != (count,) or not np.isfinite(values).all():
        return None
    return values


def _float(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _first_float(value: object) -> float | None:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return _float(value[0]) if len(value) else None
    return _float(value)


def _starts_like_dataset(start: bytes) -> bool:
    """Whether a file without the DICM prefix begins with a plausible group 0002 or 0008 tag."""
    if len(start) < 8:
        return False
    little, big = int.from_bytes(start[:2], "little"), int.from_bytes(start[:2], "big")
    return little in (0x0002, 0x0008) or big == 0x0008


def _is_dicomdir(dataset: Dataset) -> bool:
    meta = getattr(dataset, "file_meta", None)
    sop_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    return sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in dataset


def _non_image_kind(dataset: Dataset) -> str:
    """The name of a known non-image SOP class (SEG, SR, presentation state...), else ''."""
    sop_class = str(dataset.get("SOPClassUID", "") or "")
    if not sop_class:
        meta = getattr(dataset, "file_meta", None)
        sop_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    name = UID(sop_class).name if sop_class else ""
    if not name or name == sop_class or "Image" in name:
        return ""
    return sanitise_text(name)


def _infer_transfer_syntax(dataset: Dataset, source: str) -> None:
    """Give a dataset stored without any file meta the native syntax it was parsed with.

    Older files carry no file meta at all; pydicom has already worked out their encoding, and
    native (not encapsulated) pixel data needs nothing more. A file meta group that lacks
    its transfer syntax, or compressed pixel data, leaves no way to know: an error.
    """
    pixel_element = next(
        (dataset.get_item(keyword) for keyword in PIXEL_KEYWORDS if keyword in dataset), None
    )
    # A raw element knows its length; a converted one whether that length was undefined.
    encapsulated = getattr(pixel_element, "length", 0) == UNDEFINED_LENGTH or bool(
        getattr(pixel_element, "is_undefined_length", False)
    )
    encoding = getattr(dataset, "original_encoding", (None, None))
    syntax = NATIVE_SYNTAXES.get(encoding)
    if len(dataset.file_meta) or encapsulated or syntax is None:
        raise ImageReadError(
            source, "missing transfer syntax (no (0002,0010) element); cannot decode the pixel data"
        )
    logger.debug(
        "%s: no file meta; reading as %s, the encoding it was parsed with", source, syntax.name
    )
    dataset.file_meta.TransferSyntaxUID = syntax


def _plugin_for(dataset: Dataset) -> str:
    """The decoding plugin to use: pydicom's own for RLE, else whichever is installed.

    NOTE: the Rust RLE decoder of pylibjpeg-rle panics (an exception outside `Exception`, so
    no reader can catch it cleanly) on some corrupt RLE segments; pydicom's own RLE decoder
    raises an ordinary ValueError instead.
    """
    if dataset.file_meta.TransferSyntaxUID == RLELossless:
        return "pydicom"
    return ""


def _decode_reason(dataset: Dataset, error: BaseException) -> str:
    name = sanitise_text(UID(str(dataset.file_meta.TransferSyntaxUID)).name)
    message = str(error).lower()
    if "less than expected" in message or "truncat" in message or isinstance(error, EOFError):
        return f"truncated pixel data ({error_summary(error)})"
    if "missing dependencies" in message or "is not supported" in message:
        return f"unsupported transfer syntax {name}: no installed decoder ({error_summary(error)})"
    if "exceptions were raised by all available plugins" in message:
        return f"{name} pixel data that no installed decoder accepts ({error_summary(error)})"
    return f"cannot decode the {name} pixel data ({error_summary(error)})"


def _raise_on_truncation(caught: list[warnings.WarningMessage], path: Path, source: str) -> None:
    """Turn pydicom warnings that mean the file ended early into an ImageReadError."""
    for warning in caught:
        text = str(warning.message).replace(str(path), source)
        if any(part in text.lower() for part in TRUNCATION_WARNINGS):
            raise ImageReadError(source, f"truncated file ({sanitise_text(text, max_length=200)})")
        logger.debug("%s: %s", source, sanitise_text(text, max_length=200))


def _skip(source: str, reason: str, strict: bool, level: int) -> None:
    if strict:
        raise ImageReadError(source, reason)
    logger.log(level, "Skipped %s: %s", source, reason)
