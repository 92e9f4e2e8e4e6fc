"""User-facing errors.

Every failure a user can cause (a bad file, a malformed CSV row, a wrong option) is raised as a
:class:`LunaSegError` subclass whose message names the file or value and says how to fix it. The
CLI prints the message without a traceback; the viewer shows it as a notification.
"""

from __future__ import annotations


class LunaSegError(Exception):
    """Base class of every error LunaSeg raises on purpose."""


class SeriesReadError(LunaSegError):
    """A CT series could not be read (missing, truncated or unsupported file)."""


class SeriesFailedError(SeriesReadError):
    """Some series of a folder failed while the others were done.

    Attributes:
        failures: each failed series' UID -> the reason, in one line.
    """

    def __init__(self, message: str, failures: dict[str, str]) -> None:
        super().__init__(message)
        self.failures = dict(failures)


class SeriesNotFoundError(LunaSegError):
    """A series UID is not present in a data folder."""


class AnnotationError(LunaSegError):
    """An annotation or candidate CSV file is missing or malformed."""


class GeometryError(LunaSegError):
    """Coordinates or shapes that do not fit a volume (e.g. a nodule outside the scan)."""


class CheckpointError(LunaSegError):
    """A checkpoint is missing, corrupt, or made for another model."""


class OutputExistsError(LunaSegError):
    """An output would overwrite existing data and overwriting was not asked for."""


class OutputWriteError(LunaSegError):
    """An output could not be written (no permission, disk full, a file where a folder goes)."""


class ConfigError(LunaSegError):
    """An option or configuration value is invalid."""


class CancelledError(LunaSegError):
    """Long-running work was stopped on request."""


class ImageSetError(LunaSegError):
    """A 2-D image folder cannot be used: empty, unreadable, unpaired, or not 2-D images."""
