"""Named CT intensity windows and the conversion of a (center, width) window to bounds.

A window is given in the units of the pixels it applies to: Hounsfield units for CT once the
modality LUT (RescaleSlope, RescaleIntercept) has been applied. The presets are the usual
reading windows of head and body CT.
"""

import logging

from anogan.errors import ConfigError

logger = logging.getLogger(__name__)

# (center, width) in HU, the config value `data.window` names one of them.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "lung": (-600.0, 1500.0),
    "soft_tissue": (50.0, 400.0),
    "bone": (400.0, 1800.0),
}


def preset_window(name: str) -> tuple[float, float]:
    """The (center, width) of a named preset, in HU.

    Args:
        name: a key of WINDOW_PRESETS; case, spaces and hyphens are forgiven, so
            `soft tissue` and `Soft-Tissue` both mean `soft_tissue`.

    Raises:
        ConfigError: the name is not a preset; the message names `data.window` and the presets.
    """
    key = "_".join(str(name).strip().lower().replace("-", " ").split())
    if key not in WINDOW_PRESETS:
        known = ", ".join(WINDOW_PRESETS)
        raise ConfigError(
            f"config key 'data.window': unknown window preset {name!r}; expected one of {known} "
            "or null for the file's own window"
        )
    return WINDOW_PRESETS[key]


def window_bounds(center: float, width: float) -> tuple[float, float]:
    """(low, high) intensity bounds of a window: center -+ width / 2."""
    half = abs(float(width)) / 2.0
    return float(center) - half, float(center) + half
