"""Lens distortion: the models captures and cameras use, and undistortion to a pinhole.

Every view becomes a general pinhole (its own K, any size) once, where it enters: capture
readers undistort at load, the node undistorts each camera image (maps cached per
CameraInfo). Three OpenCV models cover what COLMAP, nerfstudio and ROS write:

- ``radtan`` (k1 k2 p1 p2 k3): COLMAP SIMPLE_RADIAL, RADIAL, OPENCV; nerfstudio OPENCV;
  ROS plumb_bob;
- ``rational`` (k1 k2 p1 p2 k3 k4 k5 k6): COLMAP FULL_OPENCV; ROS rational_polynomial;
- ``fisheye`` (k1 k2 k3 k4): COLMAP SIMPLE_RADIAL_FISHEYE, RADIAL_FISHEYE, OPENCV_FISHEYE;
  nerfstudio OPENCV_FISHEYE; ROS equidistant.

K here is in this package's pixel-edge convention (pixel (i, j) centred at (j + .5, i + .5));
OpenCV's functions take pixel centres at integers, so K is shifted by half a pixel on the
way in (``cameras.k_to_ros``) and maps come back in OpenCV's convention, which is what
``cv2.remap`` reads.
"""
from dataclasses import dataclass

import cv2
import numpy as np

from igspad_ros.core import cameras

N_COEFFS = {'none': 0, 'radtan': 5, 'rational': 8, 'fisheye': 4}
ROS_MODELS = {'plumb_bob': 'radtan', 'rational_polynomial': 'rational',
              'equidistant': 'fisheye'}


@dataclass(frozen=True)
class Distortion:
    """A lens model and its coefficients in OpenCV order (``N_COEFFS`` of them)."""

    model: str = 'none'
    coeffs: tuple = ()

    def __post_init__(self):
        if self.model not in N_COEFFS:
            raise ValueError(f'distortion model {self.model!r} is not one of '
                             f'{", ".join(N_COEFFS)}')
        coeffs = tuple(float(c) for c in self.coeffs)
        coeffs = coeffs + (0.0,) * (N_COEFFS[self.model] - len(coeffs))
        if len(coeffs) != N_COEFFS[self.model] or not np.all(np.isfinite(coeffs)):
            raise ValueError(f'distortion {self.model}: needs {N_COEFFS[self.model]} finite '
                             f'coefficients, got {list(self.coeffs)}')
        object.__setattr__(self, 'coeffs', coeffs)

    @property
    def is_identity(self):
        """True when the model leaves every pixel where it is."""
        return not any(self.coeffs)

    def as_dict(self):
        """{'model', 'coeffs'} for JSON (scene.meta.json, transforms.json writers)."""
        return {'model': self.model, 'coeffs': list(self.coeffs)}


NO_DISTORTION = Distortion()
# undistortPoints inverts the model iteratively; OpenCV's default 5 steps leave ~0.1 px
_ITERATIONS = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)


def distortion_from_ros(model, d):
    """Distortion of a CameraInfo's ``distortion_model`` and ``d``; raises ValueError.

    An empty ``d`` means no distortion whatever the model name says (drivers of rectified
    cameras leave it empty).
    """
    d = [float(v) for v in d]
    if not any(d):
        return NO_DISTORTION
    if model not in ROS_MODELS:
        raise ValueError(f'camera_info: distortion_model {model!r} is not one of '
                         f'{", ".join(ROS_MODELS)}')
    name = ROS_MODELS[model]
    if len(d) > N_COEFFS[name] and any(d[N_COEFFS[name]:]):
        raise ValueError(f'camera_info: {model} takes {N_COEFFS[name]} coefficients, '
                         f'd has {len(d)}')
    return Distortion(name, d[:N_COEFFS[name]])


def distortion_to_ros(distortion):
    """(distortion_model, d) of a CameraInfo for ``distortion`` (plumb_bob for none)."""
    names = {v: k for k, v in ROS_MODELS.items()}
    if distortion.model == 'none':
        return 'plumb_bob', [0.0] * 5
    return names[distortion.model], list(distortion.coeffs)


@dataclass
class UndistortMaps:
    """Where each pixel of the undistorted image lies in the distorted one.

    ``map_x``, ``map_y`` (H, W) float32 in OpenCV's pixel-centre convention, for
    ``cv2.remap``; ``valid`` (H, W) bool, False where the pixel falls outside the source;
    ``K`` the undistorted pinhole (pixel-edge) for an image of ``size`` (w, h).
    """

    map_x: np.ndarray
    map_y: np.ndarray
    valid: np.ndarray
    K: np.ndarray
    size: tuple


def undistortion_maps(K, distortion, size, new_K=None, new_size=None):
    """Return the maps from a distorted image (K, ``size``) to a pinhole (``new_K``, ``new_size``).

    The defaults keep K and the size, so an image and its undistorted version share their
    intrinsics; pixels near the border of a pincushion lens then fall outside the source
    and are marked invalid.
    """
    K = np.asarray(K, dtype=np.float64)
    new_K = K if new_K is None else np.asarray(new_K, dtype=np.float64)
    new_size = tuple(int(s) for s in (size if new_size is None else new_size))
    src = cameras.k_to_ros(K)
    dst = cameras.k_to_ros(new_K)
    coeffs = np.asarray(distortion.coeffs, dtype=np.float64)
    if distortion.model == 'fisheye':
        map_x, map_y = cv2.fisheye.initUndistortRectifyMap(src, coeffs, np.eye(3), dst,
                                                           new_size, cv2.CV_32FC1)
    else:
        map_x, map_y = cv2.initUndistortRectifyMap(src, coeffs if len(coeffs) else None, None,
                                                   dst, new_size, cv2.CV_32FC1)
    w, h = (int(s) for s in size)
    valid = (map_x >= -0.5) & (map_x <= w - 0.5) & (map_y >= -0.5) & (map_y <= h - 0.5)
    return UndistortMaps(map_x, map_y, valid, new_K, new_size)


def distortion_maps(K, distortion, size, pinhole_K, pinhole_size):
    """Return the maps from a pinhole image (``pinhole_K``, ``pinhole_size``) to the camera.

    For each pixel of the distorted image (K, ``size``) the place in the pinhole image that
    shows the same ray: the inverse of ``undistortion_maps``. The node uses it to bring the
    anomaly map back into the input's pixel geometry; the synthetic generator to make a
    distorted photo from a pinhole render (a larger pinhole canvas covers a barrel lens).
    """
    w, h = (int(s) for s in size)
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float64),
                                np.arange(h, dtype=np.float64)), -1).reshape(-1, 1, 2)
    src = cameras.k_to_ros(K)
    dst = cameras.k_to_ros(pinhole_K)
    coeffs = np.asarray(distortion.coeffs, dtype=np.float64)
    if distortion.model == 'fisheye':
        pts = cv2.fisheye.undistortPoints(grid, src, coeffs, P=dst)
    else:
        pts = cv2.undistortPoints(grid, src, coeffs if len(coeffs) else None, R=None, P=dst,
                                  criteria=_ITERATIONS)
    pts = pts.reshape(h, w, 2).astype(np.float32)
    pw, ph = (int(s) for s in pinhole_size)
    map_x, map_y = pts[..., 0], pts[..., 1]
    valid = (map_x >= -0.5) & (map_x <= pw - 0.5) & (map_y >= -0.5) & (map_y <= ph - 0.5)
    return UndistortMaps(map_x, map_y, valid, np.asarray(K, dtype=np.float64), (w, h))


def remap(image, maps, interpolation=cv2.INTER_LINEAR, fill=0.0):
    """Apply ``maps`` to an (H, W[, C]) image; pixels outside the source get ``fill``."""
    out = cv2.remap(np.ascontiguousarray(image), maps.map_x, maps.map_y, interpolation,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return out
