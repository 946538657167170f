"""A surgical instrument (shaft and two-part jaw) made of capsules, in the camera frame.

It enters from the lower right like a tool through a working channel, moves in and out,
sways and opens/closes its jaw. Ray-capsule intersections are analytic (exact depth).
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np

#: Material ids of the parts (the shader picks colours by these).
SHAFT, JAW = 0, 1
_CHUNK = 16384


@dataclass(frozen=True)
class Capsule:
    """A cylinder with hemispherical caps from ``a`` to ``b`` (camera frame, metres)."""

    a: np.ndarray
    b: np.ndarray
    radius: float
    material: int


@dataclass(frozen=True)
class InstrumentHits:
    """Ray hits on the instrument.

    Attributes:
        depth: (N,) float32 z-depth (metres), NaN where the ray misses.
        normal: (N, 3) float32 unit normals in the camera frame (zeros where missed).
        material: (N,) uint8 part id (``SHAFT`` or ``JAW``).
    """

    depth: np.ndarray
    normal: np.ndarray
    material: np.ndarray


def instrument_capsules(time_s: float, seed: int) -> list[Capsule]:
    """The instrument's parts at time ``time_s`` (seconds)."""
    rng = np.random.default_rng([int(seed), 0x15])
    p = rng.uniform(0.0, 2 * math.pi, size=5)
    base = np.array([0.010, 0.008, -0.012])
    aim = np.array([0.002 + 0.004 * math.sin(0.7 * time_s + p[0]),
                    0.003 + 0.003 * math.sin(0.9 * time_s + p[1]), 0.045])
    direction = aim - base
    direction /= np.linalg.norm(direction)
    length = 0.036 + 0.010 * math.sin(0.8 * time_s + p[2])
    hinge = base + length * direction
    # The jaw opens in a plane that turns slowly about the shaft.
    side = np.cross(direction, [0.0, 0.0, 1.0]) + np.array([0.0, 0.0, 1e-9])
    side /= np.linalg.norm(side)
    up = np.cross(direction, side)
    turn = 0.6 * math.sin(0.5 * time_s + p[3])
    side = math.cos(turn) * side + math.sin(turn) * up
    opening = math.radians(6.0 + 14.0 * (1.0 + math.sin(2.2 * time_s + p[4])))
    jaw_length = 0.007
    parts = [Capsule(base, hinge, 0.0016, SHAFT)]
    for sign in (-1.0, 1.0):
        tip = hinge + jaw_length * (math.cos(opening) * direction
                                    + sign * math.sin(opening) * side)
        parts.append(Capsule(hinge, tip, 0.00075, JAW))
    return parts


def image_bounds(capsules: list[Capsule], max_tan: float
                 ) -> tuple[float, float, float, float] | None:
    """Box ``(x0, x1, y0, y1)`` on the z = 1 image plane that contains the visible instrument.

    Only rays inside the box need the intersection test. The capsules are covered by
    balls around points sampled along their axes; balls entirely outside the field of
    view are skipped, the others are bounded on the image plane.

    Args:
        capsules: the instrument's parts.
        max_tan: tangent of the largest angle between a camera ray and the optical axis.

    Returns:
        The box, or None when no part is in the field of view.
    """
    fov = math.atan(max_tan)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for capsule in capsules:
        samples = capsule.a + np.linspace(0.0, 1.0, 129)[:, None] * (capsule.b - capsule.a)
        # Every point of the capsule is within `reach` of a sample.
        reach = capsule.radius + float(np.linalg.norm(capsule.b - capsule.a)) / 256
        distance = np.linalg.norm(samples, axis=1)
        off_axis = np.arctan2(np.hypot(samples[:, 0], samples[:, 1]), samples[:, 2])
        spread = np.arcsin(np.clip(reach / np.maximum(distance, 1e-12), 0.0, 1.0))
        z = samples[:, 2]
        seen = (off_axis - spread <= fov) & (z > reach)
        if not seen.any():
            continue
        z = z[seen]
        x, y = samples[seen, 0] / z, samples[seen, 1] / z
        # A ball of radius R at depth z moves x/z by at most R (1 + |x/z|) / (z - R).
        pad_x = reach * (1 + np.abs(x)) / (z - reach)
        pad_y = reach * (1 + np.abs(y)) / (z - reach)
        xs += [x - pad_x, x + pad_x]
        ys += [y - pad_y, y + pad_y]
    if not xs:
        return None
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    return float(x_all.min()), float(x_all.max()), float(y_all.min()), float(y_all.max())


def intersect_instrument(rays: np.ndarray, capsules: list[Capsule]) -> InstrumentHits:
    """Nearest hit of camera rays on the instrument.

    Args:
        rays: (N, 3) float camera rays with z = 1 (``t`` along them is z-depth).
        capsules: the parts, as from :func:`instrument_capsules`.
    """
    rays = np.asarray(rays, dtype=np.float64)
    n = rays.shape[0]
    depth = np.full(n, np.nan, np.float32)
    normal = np.zeros((n, 3), np.float32)
    material = np.zeros(n, np.uint8)
    # Batches keep the float64 temporaries small (cache-resident, no page faults).
    for i in range(0, n, _CHUNK):
        part = slice(i, i + _CHUNK)
        norm = np.linalg.norm(rays[part], axis=1)
        rd = rays[part] / norm[:, None]
        best = np.full(len(rd), np.inf)
        for capsule in capsules:
            t, nrm = _capsule(rd, capsule.a, capsule.b, capsule.radius)
            closer = np.nonzero(t < best)[0]
            best[closer] = t[closer]
            normal[i + closer] = nrm[closer]
            material[i + closer] = capsule.material
        depth[part] = np.where(np.isfinite(best), best / norm, np.nan)
    return InstrumentHits(depth=depth, normal=normal, material=material)


def _capsule(rd: np.ndarray, pa: np.ndarray, pb: np.ndarray,
             r: float) -> tuple[np.ndarray, np.ndarray]:
    """Ray length to a capsule for rays from the origin (inf: miss) and the normals."""
    ba = pb - pa
    oa = -pa
    baba = float(ba @ ba)
    bard = rd @ ba
    baoa = float(ba @ oa)
    rdoa = rd @ oa
    oaoa = float(oa @ oa)
    a = baba - bard * bard
    b = baba * rdoa - baoa * bard
    c = baba * oaoa - baoa * baoa - r * r * baba
    h = b * b - a * c
    t = np.full(rd.shape[0], np.inf)
    with np.errstate(invalid='ignore', divide='ignore'):
        t_body = (-b - np.sqrt(h)) / a
    y = baoa + t_body * bard
    body = (h >= 0) & (a > 1e-12) & (y > 0) & (y < baba) & (t_body > 0)
    t[body] = t_body[body]
    # Caps: the sphere at whichever end the infinite-cylinder hit falls beyond.
    for centre, use in ((pa, ~body & (y <= 0)), (pb, ~body & ~(y <= 0))):
        oc = -centre
        bc = rd @ oc
        hc = bc * bc - (float(oc @ oc) - r * r)
        with np.errstate(invalid='ignore'):
            t_cap = -bc - np.sqrt(hc)
        ok = use & (hc > 0) & (t_cap > 0)
        t[ok] = t_cap[ok]
    points = rd * np.where(np.isfinite(t), t, 0.0)[:, None]
    along = np.clip(((points - pa) @ ba) / baba, 0.0, 1.0)
    normal = points - (pa + along[:, None] * ba)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    return t, normal
