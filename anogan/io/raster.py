"""PNG, JPEG and TIFF slices as one-slice Series (interim reader; replaced by the io branch)."""

import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from anogan.errors import ImageReadError
from anogan.io.series import Series, safe_filename

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def read_image(path: str | Path, root: str | Path | None = None) -> Series:
    """One image file as a one-slice Series; RGB becomes grey."""
    path = Path(path)
    relative = str(path.relative_to(root)) if root is not None else path.name
    try:
        with Image.open(path) as image:
            image.load()
            pixels = np.array(image.convert("F") if image.mode != "I;16" else image, np.float32)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ImageReadError(str(path), f"not a readable image ({error})") from None
    if pixels.ndim != 2:
        raise ImageReadError(str(path), f"expected a 2D image, got shape {pixels.shape}")
    return Series(
        pixels=pixels[None],
        spacing=(1.0, 1.0),
        affine=np.diag([-1.0, -1.0, 1.0, 1.0]),
        series_id=safe_filename(relative),
        sources=(relative,),
        kind="image",
    )
