"""Camera intrinsics: the one representation shared by every module.

Conventions (REP-103 optical frame): x right, y down, z forward; pixel (u, v) has
its centre at integer coordinates, so ``u = fx * x / z + cx``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import math
from pathlib import Path

import numpy as np

from endo_depth_ros.errors import BadInputError

#: Distortion models understood by the package, named as in sensor_msgs/CameraInfo.
DISTORTION_MODELS = ('', 'none', 'plumb_bob', 'rational_polynomial', 'equidistant')


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics with an optional lens distortion model.

    Attributes:
        width: image width (pixels).
        height: image height (pixels).
        fx, fy: focal lengths (pixels).
        cx, cy: principal point (pixels).
        distortion_model: ``''``/``'none'`` (pinhole), ``'plumb_bob'``,
            ``'rational_polynomial'`` or ``'equidistant'`` (fisheye).
        distortion: the model's coefficients, in CameraInfo ``D`` order.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = ''
    distortion: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise BadInputError(
                f'Camera size must be positive, got {self.width}x{self.height}.', 'intrinsics')
        values = {'fx': self.fx, 'fy': self.fy, 'cx': self.cx, 'cy': self.cy}
        for name, value in values.items():
            if not math.isfinite(value):
                raise BadInputError(f'Intrinsic {name} is not finite: {value}.', 'intrinsics')
        if self.fx <= 0 or self.fy <= 0:
            raise BadInputError(
                f'Focal lengths must be positive, got fx={self.fx}, fy={self.fy}.', 'intrinsics')
        if self.distortion_model not in DISTORTION_MODELS:
            raise BadInputError(
                f'Unsupported distortion model {self.distortion_model!r}; '
                f'expected one of {DISTORTION_MODELS}.', 'intrinsics')
        if not all(math.isfinite(c) for c in self.distortion):
            raise BadInputError(
                f'Distortion coefficients are not finite: {self.distortion}.', 'intrinsics')

    @classmethod
    def from_matrix(
        cls,
        K: np.ndarray,
        width: int,
        height: int,
        distortion_model: str = '',
        distortion: tuple[float, ...] | list[float] | np.ndarray = (),
    ) -> Intrinsics:
        """Build from a 3x3 camera matrix (row-major, as CameraInfo ``k``)."""
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        return cls(
            width=int(width), height=int(height),
            fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]), cy=float(K[1, 2]),
            distortion_model=distortion_model,
            distortion=tuple(float(c) for c in np.asarray(distortion, dtype=np.float64).ravel()),
        )

    @property
    def K(self) -> np.ndarray:
        """The 3x3 camera matrix (float64)."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return self.width, self.height

    @property
    def is_distorted(self) -> bool:
        """True when the distortion model has any non-zero coefficient."""
        return self.distortion_model not in ('', 'none') and any(c != 0.0 for c in self.distortion)

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera seen at another resolution (pixel-centre convention kept)."""
        sx = width / self.width
        sy = height / self.height
        return Intrinsics(
            width=width, height=height,
            fx=self.fx * sx, fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5, cy=(self.cy + 0.5) * sy - 0.5,
            distortion_model=self.distortion_model, distortion=self.distortion,
        )


def pinhole_for_size(fx: float, fy: float, cx: float,
                     cy: float) -> Callable[[int, int], Intrinsics]:
    """A camera of any image size with these pixel intrinsics (for data without them)."""
    def build(width: int, height: int) -> Intrinsics:
        return Intrinsics(width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy)
    return build


def load_camera_info_yaml(path: str | Path) -> Intrinsics:
    """Intrinsics from a ROS camera_info YAML file (``camera_calibration``'s format).

    Reads ``image_width``, ``image_height``, ``camera_matrix.data`` (row-major 3x3) and,
    when present, ``distortion_model`` and ``distortion_coefficients.data``.

    Raises:
        BadInputError: unreadable file, missing or malformed fields (reason ``'intrinsics'``).
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise BadInputError(f'Cannot read camera info {str(path)!r}: '
                            f'{str(err).splitlines()[0]}', 'intrinsics') from None
    try:
        K = np.asarray(data['camera_matrix']['data'], dtype=np.float64)
        width, height = int(data['image_width']), int(data['image_height'])
        model = str(data.get('distortion_model') or '')
        coeffs = (data.get('distortion_coefficients') or {}).get('data') or []
        if K.size != 9:
            raise ValueError(f'camera_matrix has {K.size} values, expected 9')
        return Intrinsics.from_matrix(K, width, height, model, coeffs)
    except (KeyError, TypeError, ValueError) as err:
        raise BadInputError(f'{path}: not a camera_info YAML (image_width, image_height, '
                            f'camera_matrix.data): {err}', 'intrinsics') from None
