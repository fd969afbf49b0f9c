"""Heatmap overlays and colour bars on the run's one fixed colour scale.

A residual of 0 is transparent and a residual of `heatmap_max` (set at calibration, stored
with the model) is the top colour, on every slice of every series: nothing here rescales to
an image's own range, so the same colour means the same residual wherever a clinician sees
it. Images are the model inputs in [-1, 1], shown as grey.
"""

import base64
import io
import logging

import numpy as np
from matplotlib import colormaps
from PIL import Image

logger = logging.getLogger(__name__)

COLORMAP = "turbo"  # matplotlib colour map of the heatmap, low residual blue to high red
LEVELS = 256  # entries of the colour look-up table
MAX_OPACITY = 0.65  # opacity of the heatmap at the top of the scale
VISIBLE_FRACTION = 0.15  # residuals below this fraction of the scale stay transparent


def colour_table() -> np.ndarray:
    """(LEVELS, 3) uint8 RGB, from residual 0 to the top of the scale."""
    table = colormaps[COLORMAP](np.linspace(0.0, 1.0, LEVELS))[:, :3]
    return np.round(table * 255).astype(np.uint8)


def grey(image: np.ndarray) -> np.ndarray:
    """(H, W) in [-1, 1] -> (H, W, 3) uint8 grey."""
    levels = np.round((np.clip(image, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return np.repeat(levels[..., None], 3, axis=2)


def overlay(image: np.ndarray, pixel_map: np.ndarray, heatmap_max: float) -> np.ndarray:
    """Blend a residual map over its image on the fixed scale.

    Args:
        image: (H, W) in [-1, 1].
        pixel_map: (H, W) >= 0, |x - G(E(x))| in the same units as `heatmap_max`.
        heatmap_max: residual at the top of the colour scale, from calibration.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    if image.shape != pixel_map.shape:
        raise ValueError(f"image {image.shape} and map {pixel_map.shape} differ in shape")
    level = np.clip(pixel_map / max(float(heatmap_max), 1e-12), 0.0, 1.0)  # (H, W) in [0, 1]
    colours = colour_table()[np.round(level * (LEVELS - 1)).astype(np.intp)]  # (H, W, 3)
    opacity = np.where(level >= VISIBLE_FRACTION, MAX_OPACITY * level, 0.0)[..., None]
    blended = (1.0 - opacity) * grey(image) + opacity * colours
    return np.round(blended).astype(np.uint8)


def colour_bar(height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 vertical colour bar, the top of the scale at the top."""
    rows = np.linspace(1.0, 0.0, height)
    colours = colour_table()[np.round(rows * (LEVELS - 1)).astype(np.intp)]  # (height, 3)
    return np.repeat(colours[:, None, :], width, axis=1)


def with_colour_bar(picture: np.ndarray, bar_width: int = 0, gap: int = 0) -> np.ndarray:
    """Append a colour bar (default one twelfth of the width) to the right of an RGB picture."""
    height, width, _ = picture.shape
    bar_width = bar_width or max(4, width // 12)
    gap = gap or max(2, width // 64)
    canvas = np.zeros((height, width + gap + bar_width, 3), dtype=np.uint8)
    canvas[:, :width] = picture
    canvas[:, width + gap :] = colour_bar(height, bar_width)
    return canvas


def png_data_uri(picture: np.ndarray, min_side: int = 0) -> str:
    """A `data:image/png;base64,...` URI of an (H, W) or (H, W, 3) uint8 picture.

    Args:
        picture: the pixels.
        min_side: enlarge (nearest neighbour, whole multiples) until the shorter side is at
            least this, so that small slices are not blurred by the browser.
    """
    image = Image.fromarray(picture)
    if min_side and min(image.size) < min_side:
        factor = int(np.ceil(min_side / min(image.size)))
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
