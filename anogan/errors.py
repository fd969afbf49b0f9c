"""The exceptions anogan raises for problems a user can fix.

Every message says what failed, where (file, series, config key), what was expected against
what was received, and what to do. The CLI turns any AnoganError into one stderr line.
"""


class AnoganError(Exception):
    """Base of every error anogan raises on purpose."""


class ConfigError(AnoganError):
    """A configuration file, key or value is wrong."""


class ImageReadError(AnoganError):
    """An input image, file or series cannot be read; the message names the file."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class CheckpointError(AnoganError):
    """A file is not a loadable anogan checkpoint."""


class DataError(AnoganError):
    """A data set is missing, empty or laid out in a way anogan cannot use."""


class TrackingError(AnoganError):
    """The MLflow tracking server cannot be reached; the message names its URI."""


class TrainingStoppedError(AnoganError):
    """Training stopped before it finished (SIGTERM, a lost rank); the message says how to
    resume it from its last checkpoint."""
