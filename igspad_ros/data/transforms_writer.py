"""The contents of a nerfstudio ``transforms.json``: Blender poses, intrinsics, lens keys.

Intrinsics are ``fl_x fl_y cx cy w h`` with cx, cy in the pixel-edge convention (the centre
of pixel (0, 0) at (0.5, 0.5)), as in nerfstudio and instant-ngp (rays through pixel index +
0.5; cx, cy copied unchanged from COLMAP) and in this package's K, which is written as it is.
A ROS CameraInfo's K counts from the centre of pixel (0, 0): callers holding one convert it
with ``cameras.k_from_ros`` first. Lens models map to nerfstudio's ``camera_model`` and keys:

| ``undistort.Distortion`` | ``camera_model`` | keys |
|---|---|---|
| none | PINHOLE | |
| radtan (k1 k2 p1 p2 k3) | OPENCV | k1 k2 k3 p1 p2 |
| rational with k4 = k5 = k6 = 0 | OPENCV | k1 k2 k3 p1 p2 |
| fisheye (k1..k4) | OPENCV_FISHEYE | k1 k2 k3 k4 |

nerfstudio has no rational model (its OPENCV ``k4`` is an r^8 term, not OpenCV's
denominator k4), so a rational lens with nonzero k4..k6 is refused. Intrinsics are written
globally when every frame shares one camera, else per frame (``camera_model`` stays global;
frames without distortion get zero coefficients of the others' model). Poses are
``transform_matrix``: Blender camera-to-world (``cameras.viewmat_to_blender_c2w``).
"""
from dataclasses import dataclass

from igspad_ros.core import cameras, undistort


@dataclass(frozen=True)
class NerfstudioCamera:
    """One frame's camera: focal lengths, pixel-edge principal point, size, lens."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: undistort.Distortion = undistort.NO_DISTORTION


def lens_keys(distortion):
    """Return (nerfstudio camera_model, {key: coefficient}) of a lens; raises ValueError."""
    coeffs = distortion.coeffs
    if distortion.model == 'none':
        return 'PINHOLE', {}
    if distortion.model == 'fisheye':
        return 'OPENCV_FISHEYE', dict(zip(('k1', 'k2', 'k3', 'k4'), coeffs))
    if distortion.model == 'rational' and any(coeffs[5:]):
        raise ValueError(f'rational_polynomial with nonzero k4..k6 {list(coeffs[5:])} has no '
                         f'nerfstudio camera model')
    k1, k2, p1, p2, k3 = coeffs[:5]
    return 'OPENCV', {'k1': k1, 'k2': k2, 'k3': k3, 'p1': p1, 'p2': p2}


def transforms_meta(frames):
    """Return the transforms.json dict and whether intrinsics are per frame.

    ``frames`` is a non-empty list of dicts with ``file_path``, ``viewmat`` (OpenCV
    world-to-camera), ``camera`` (NerfstudioCamera) and any extra JSON keys, written as they
    are. Raises ValueError for a lens nerfstudio cannot hold or lens models that differ.
    """
    lenses = [lens_keys(f['camera'].distortion) for f in frames]
    models = {m for m, _ in lenses} - {'PINHOLE'}
    if len(models) > 1:
        raise ValueError(f'the lens model changes between frames ({", ".join(sorted(models))})')
    model = models.pop() if models else 'PINHOLE'
    zeros = dict.fromkeys(next((k for m, k in lenses if m == model), {}), 0.0)
    intrinsics = [{'fl_x': c.fx, 'fl_y': c.fy, 'cx': c.cx, 'cy': c.cy, 'w': c.width,
                   'h': c.height, **zeros, **keys}
                  for c, (_, keys) in zip((f['camera'] for f in frames), lenses)]
    per_frame = any(f['camera'] != frames[0]['camera'] for f in frames)
    out = []
    for frame, own in zip(frames, intrinsics):
        entry = {k: v for k, v in frame.items() if k not in ('viewmat', 'camera')}
        entry['transform_matrix'] = cameras.viewmat_to_blender_c2w(frame['viewmat']).tolist()
        out.append(entry | (own if per_frame else {}))
    meta = {'camera_model': model, **({} if per_frame else intrinsics[0]), 'frames': out}
    return meta, per_frame
