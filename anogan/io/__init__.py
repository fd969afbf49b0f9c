"""Readers for DICOM, NIfTI and image folders; each returns `Series` records."""

from anogan.io.series import Series, safe_filename, sanitise_text

__all__ = ["Series", "safe_filename", "sanitise_text"]
