"""Readers for DICOM, NIfTI and image folders; each returns `Series` records.

`iter_series` is the entry point: it takes what the user pointed at and yields one Series per
DICOM series, NIfTI volume or image, and a ReadFailure for whatever could not be read.
"""

from anogan.io.dicom import iter_dicom, read_dicom_file
from anogan.io.nifti import iter_nifti
from anogan.io.raster import iter_images, read_image
from anogan.io.reader import iter_series
from anogan.io.series import ReadFailure, Series, safe_filename, sanitise_text
from anogan.io.windows import WINDOW_PRESETS, preset_window, window_bounds

__all__ = [
    "WINDOW_PRESETS",
    "ReadFailure",
    "Series",
    "iter_dicom",
    "iter_images",
    "iter_nifti",
    "iter_series",
    "preset_window",
    "read_dicom_file",
    "read_image",
    "safe_filename",
    "sanitise_text",
    "window_bounds",
]
