"""The package's error hierarchy.

Every failure the package raises on purpose is an ``EndoDepthError``, so callers
(the node, the CLIs) can catch exactly these and report a one-line message, while
programming errors still surface as ordinary tracebacks.
"""

from __future__ import annotations


class EndoDepthError(Exception):
    """Base class of all errors raised on purpose by endo_depth_ros."""


class ConfigError(EndoDepthError, ValueError):
    """A configuration value is invalid (the message names the value)."""


class BadInputError(EndoDepthError, ValueError):
    """One input (image, camera info, frame) cannot be used and must be dropped.

    Attributes:
        reason: short machine-readable slug (e.g. ``"encoding"``, ``"buffer_size"``,
            ``"intrinsics"``, ``"size_mismatch"``, ``"stamp_order"``) used to count
            rejected inputs by cause in diagnostics.
    """

    def __init__(self, message: str, reason: str = 'invalid') -> None:
        super().__init__(message)
        self.reason = reason


class ModelLoadError(EndoDepthError):
    """A depth model cannot be built or its weights cannot be loaded."""


class BackendUnavailableError(EndoDepthError):
    """A requested device or runtime (CUDA, TensorRT, onnxruntime provider) is missing."""


class BagError(EndoDepthError):
    """A bag (or npz sequence folder) is missing, corrupt or lacks required topics."""


class OutputError(EndoDepthError):
    """An output path cannot be written without risking a user's data (see ``outputs``)."""
