"""Inspection region: a 3D box in the scene frame, seen from each camera (beyond the paper).

On a real capture the Gaussian scene also models the table and the room behind the
object, and renders them worse than the object: without a region those differences raise
alarms. ``RegionOfInterest`` is an axis-aligned box in the scene (training) frame.
``visible_region`` restricts the anomaly map and the image score of eq. (6) to the pixels
where the scene's Gaussians inside the box are what the camera sees (rendered with an indicator
colour, more than half their opacity visible), dilated by ``long side / 32`` so burrs just
outside the normal silhouette still count. A view whose box is hidden behind something
(the table seen from below) has an empty region.

The default box (``estimate_roi``) comes from the scene's 3D points, the capture's SfM
points or the trained Gaussians: those inside the sphere the cameras frame around the point
they look at. When a plane holds a fifth of them and reaches well beyond the rest (the
table the object stands on: ``support_plane``), the plane is kept with the box and its
points are left out; the box is the remaining points' 1st..99th percentiles per axis,
padded by a tenth of the extent on every side. Only Gaussians above the plane count.
"""
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from igspad_ros.core import cameras
from igspad_ros.core.render import render
from igspad_ros.core.scene import GaussianScene, rgb_to_sh_dc
from igspad_ros.core.train import look_at_centre

PAD_FRACTION = 0.1
TRIM_PERCENT = 1.0
PLANE_SHARE = 0.2          # a support plane holds at least this share of the framed points
PLANE_REACH = 1.5          # and spreads at least this many times wider than the rest
PLANE_TOLERANCE = 0.01     # inlier distance, times the framed sphere's radius


class RoiError(ValueError):
    """An inspection region is malformed (text, numbers or box)."""


@dataclass(frozen=True)
class RegionOfInterest:
    """Axis-aligned box ``lo`` .. ``hi`` (3 floats each) in the scene frame.

    ``plane`` (nx, ny, nz, d), optional: the support plane n.x + d = 0 with the object on
    its positive side; only what lies above it belongs to the region.
    """

    lo: tuple
    hi: tuple
    plane: tuple | None = None

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
        if self.plane is not None:
            plane = np.asarray(self.plane, dtype=np.float64)
            if plane.shape != (4,) or not np.all(np.isfinite(plane)) \
                    or abs(np.linalg.norm(plane[:3]) - 1.0) > 1e-6:
                raise RoiError(f'roi: the plane must be a unit normal and an offset, got '
                               f'{self.plane}')
            object.__setattr__(self, 'plane', tuple(float(v) for v in plane))

    @classmethod
    def parse(cls, text):
        """Box from ``"xmin,ymin,zmin,xmax,ymax,zmax"`` (a list of six numbers works too).

        Ten numbers add the support plane ``nx,ny,nz,d`` (as ``as_list`` writes it).
        """
        values = text.replace(' ', '').split(',') if isinstance(text, str) else list(text)
        try:
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            raise RoiError(f'roi: {text!r} is not six numbers xmin,ymin,zmin,xmax,ymax,zmax') \
                from None
        if len(numbers) not in (6, 10):
            raise RoiError(f'roi: {text!r} has {len(numbers)} numbers; need six: '
                           'xmin,ymin,zmin,xmax,ymax,zmax')
        return cls(tuple(numbers[:3]), tuple(numbers[3:6]),
                   tuple(numbers[6:]) if len(numbers) == 10 else None)

    def as_list(self):
        """Return ``[xmin, ymin, zmin, xmax, ymax, zmax]`` (+ the plane's four numbers)."""
        return [*self.lo, *self.hi, *(self.plane or ())]


def marker_scene(scene, roi):
    """Return ``scene`` with colour 1 for the Gaussians inside ``roi`` and 0 for the others."""
    lo = torch.tensor(roi.lo, dtype=scene.means.dtype, device=scene.means.device)
    hi = torch.tensor(roi.hi, dtype=scene.means.dtype, device=scene.means.device)
    inside = ((scene.means >= lo) & (scene.means <= hi)).all(dim=1)
    if roi.plane is not None:
        n = torch.tensor(roi.plane[:3], dtype=scene.means.dtype, device=scene.means.device)
        margin = 0.02 * float(max(np.subtract(roi.hi, roi.lo)))
        inside &= scene.means @ n + roi.plane[3] > margin
    colour = inside.to(scene.means.dtype)[:, None].expand(-1, 3)
    return GaussianScene(means=scene.means, quats=scene.quats, log_scales=scene.log_scales,
                         opacity_logits=scene.opacity_logits, sh=rgb_to_sh_dc(colour)[:, None])


@torch.no_grad()
def visible_region(marker, viewmat, K, width, height):
    """(H, W) bool: where the box's Gaussians (``marker_scene``) are seen, dilated."""
    out = render(marker, torch.as_tensor(np.asarray(viewmat), dtype=torch.float32), K,
                 int(width), int(height), background=(0.0, 0.0, 0.0))
    seen = (out.rgb[..., 0] > 0.5).cpu().numpy().astype(np.uint8)
    radius = max(1, round(max(width, height) / 32))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(seen, kernel).astype(bool)


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
    # the table reaches beyond the framed sphere: look for it in twice that
    plane = support_plane(points[np.linalg.norm(points - centre, axis=1) <= 2 * radius],
                          PLANE_TOLERANCE * radius)
    if plane is not None:
        near = near[near @ plane[:3] + plane[3] > PLANE_TOLERANCE * radius]
    lo = np.percentile(near, TRIM_PERCENT, axis=0)
    hi = np.percentile(near, 100.0 - TRIM_PERCENT, axis=0)
    pad = PAD_FRACTION * np.maximum(hi - lo, 1e-6 * max(radius, 1e-9))
    return RegionOfInterest(tuple(lo - pad), tuple(hi + pad),
                            None if plane is None else tuple(plane))


def support_plane(points, tolerance, seed=0):
    """Return the plane (unit n, d) the object stands on, or None when there is none.

    RANSAC (300 draws, fixed seed) for the plane holding most ``points`` within
    ``tolerance``, refined by least squares. It counts as a support when it holds
    ``PLANE_SHARE`` of the points, at least 20 points lie off it, and its inliers spread
    ``PLANE_REACH`` times wider than those points (a table, not the object's own flat
    top). The normal points to the side most off-plane points are on.
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 20:
        return None
    rng = np.random.default_rng(seed)
    best, best_count = None, 0
    for _ in range(300):
        a, b, c = points[rng.choice(len(points), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-12:
            continue
        n /= np.linalg.norm(n)
        count = int((np.abs((points - a) @ n) < tolerance).sum())
        if count > best_count:
            best, best_count = (n, -a @ n), count
    if best is None or best_count < PLANE_SHARE * len(points):
        return None
    inliers = points[np.abs(points @ best[0] + best[1]) < tolerance]
    mean = inliers.mean(0)
    n = np.linalg.svd(inliers - mean)[2][2]
    d = -mean @ n
    off = points[np.abs(points @ n + d) >= 2 * tolerance]
    if len(off) < 20:
        return None
    if np.median(off @ n + d) < 0:
        n, d = -n, -d
    off = off[off @ n + d > 0]
    if len(off) < 20:
        return None
    u = np.linalg.svd(inliers - mean)[2][:2]          # in-plane axes

    def spread(p):
        return float(np.ptp(np.percentile((p - mean) @ u.T, [2, 98], axis=0), axis=0).max())
    if spread(inliers) < PLANE_REACH * spread(off):
        return None
    return np.array([*n, d])
