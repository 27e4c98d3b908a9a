"""Inspection region: a 3D box in the scene frame, projected into each image (beyond the paper).

On a real capture the Gaussian scene also models the table and the room behind the
object, and renders them worse than the object: without a region those differences raise
alarms. ``RegionOfInterest`` is an axis-aligned box in the scene (training) frame; its
projection into a camera (``image_mask``, the convex hull of the eight projected corners)
restricts the anomaly map and the image score of eq. (6) to the pixels that can show the
object. A box around a camera (a corner behind or at the image plane) covers the whole image.

The default box (``estimate_roi``) comes from the scene's 3D points, the capture's SfM
points or the trained Gaussians: those inside the sphere the cameras frame around the point
they look at, trimmed to their 1st..99th percentiles per axis and padded by a tenth of the
extent on every side.
"""
import math
from dataclasses import dataclass

import cv2
import numpy as np

from igspad_ros.core import cameras
from igspad_ros.core.train import look_at_centre

PAD_FRACTION = 0.1
TRIM_PERCENT = 1.0
_NEAR = 1e-6


class RoiError(ValueError):
    """An inspection region is malformed (text, numbers or box)."""


@dataclass(frozen=True)
class RegionOfInterest:
    """Axis-aligned box ``lo`` .. ``hi`` (3 floats each) in the scene frame."""

    lo: tuple
    hi: tuple

    def __post_init__(self):
        """Check the box: six finite numbers with lo < hi on every axis."""
        lo, hi = np.asarray(self.lo, dtype=np.float64), np.asarray(self.hi, dtype=np.float64)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(lo)) \
                or not np.all(np.isfinite(hi)):
            raise RoiError(f'roi: need 3 finite numbers for each corner, got {self.lo} and '
                           f'{self.hi}')
        if not np.all(lo < hi):
            raise RoiError(f'roi: the minimum corner {tuple(lo.tolist())} must be below the '
                           f'maximum {tuple(hi.tolist())} on every axis')
        object.__setattr__(self, 'lo', tuple(float(v) for v in lo))
        object.__setattr__(self, 'hi', tuple(float(v) for v in hi))

    @classmethod
    def parse(cls, text):
        """Box from ``"xmin,ymin,zmin,xmax,ymax,zmax"`` (a list of six numbers works too)."""
        values = text.replace(' ', '').split(',') if isinstance(text, str) else list(text)
        try:
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            raise RoiError(f'roi: {text!r} is not six numbers xmin,ymin,zmin,xmax,ymax,zmax') \
                from None
        if len(numbers) != 6:
            raise RoiError(f'roi: {text!r} has {len(numbers)} numbers; need six: '
                           'xmin,ymin,zmin,xmax,ymax,zmax')
        return cls(tuple(numbers[:3]), tuple(numbers[3:]))

    def as_list(self):
        """Return ``[xmin, ymin, zmin, xmax, ymax, zmax]`` (scene meta, parameters)."""
        return [*self.lo, *self.hi]

    def corners(self):
        """Return the box's eight corner points, (8, 3) float64."""
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        bits = np.array([[(k >> a) & 1 for a in range(3)] for k in range(8)], dtype=np.float64)
        return lo + bits * (hi - lo)

    def image_mask(self, viewmat, K, width, height):
        """(H, W) bool: the pixels whose centre lies in the box's projection.

        ``viewmat`` OpenCV world-to-camera, ``K`` pixel-edge pinhole (pixel centres at +0.5).
        """
        uv, depth = cameras.project_points(self.corners(), np.asarray(viewmat, np.float64),
                                           np.asarray(K, np.float64))
        if np.any(depth <= _NEAR):
            return np.ones((int(height), int(width)), bool)
        hull = uv[cv2.convexHull(uv.astype(np.float32), returnPoints=False).reshape(-1)]
        return _inside_convex(hull, int(width), int(height))


def _inside_convex(hull, width, height):
    """(H, W) bool: pixel centres (j + 0.5, i + 0.5) inside a convex polygon (any winding)."""
    x = np.arange(width, dtype=np.float64) + 0.5
    y = np.arange(height, dtype=np.float64)[:, None] + 0.5
    sides = []
    for (x0, y0), (x1, y1) in zip(hull, np.roll(hull, -1, axis=0)):
        sides.append((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0))
    sides = np.stack(np.broadcast_arrays(*sides))
    return np.all(sides >= 0, axis=0) | np.all(sides <= 0, axis=0)


def estimate_roi(points, viewmats, Ks, sizes, weights=None):
    """Estimate the default box from 3D ``points`` (N, 3) near where the cameras look.

    ``Ks`` one (3, 3) per view (or one for all) and ``sizes`` their (w, h): they give the
    half field of view. ``weights`` (N,), e.g. Gaussian opacities, drop points below 0.5.
    Raises RoiError when fewer than 8 points fall in the framed sphere.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if weights is not None:
        points = points[np.asarray(weights).reshape(-1) >= 0.5]
    viewmats = [np.asarray(v, dtype=np.float64) for v in viewmats]
    Ks = np.broadcast_to(np.asarray(Ks, dtype=np.float64), (len(viewmats), 3, 3))
    sizes = list(sizes) if len(np.shape(sizes)) == 2 else [tuple(sizes)] * len(viewmats)
    centre = look_at_centre(viewmats)
    dist = np.median([np.linalg.norm(cameras.camera_center(v) - centre) for v in viewmats])
    half = np.median([min(math.atan(0.5 * w / K[0, 0]), math.atan(0.5 * h / K[1, 1]))
                      for K, (w, h) in zip(Ks, sizes)])
    radius = dist * math.sin(half)
    near = points[np.linalg.norm(points - centre, axis=1) <= radius]
    if len(near) < 8:
        raise RoiError(f'roi: only {len(near)} scene points lie within {radius:.3g} of the '
                       'point the cameras look at; pass the box explicitly (--roi)')
    lo = np.percentile(near, TRIM_PERCENT, axis=0)
    hi = np.percentile(near, 100.0 - TRIM_PERCENT, axis=0)
    pad = PAD_FRACTION * np.maximum(hi - lo, 1e-6 * max(radius, 1e-9))
    return RegionOfInterest(tuple(lo - pad), tuple(hi + pad))
