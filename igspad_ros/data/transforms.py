"""Reader for nerfstudio / instant-ngp captures (``transforms.json`` beside the images).

``frames[{file_path, transform_matrix}]`` hold Blender/OpenGL camera-to-world poses;
intrinsics (``fl_x fl_y cx cy w h``, ``camera_model`` PINHOLE / OPENCV / OPENCV_FISHEYE with
``k1..k4 p1 p2``, or instant-ngp's ``camera_angle_x`` [``camera_angle_y``]) sit at the top
level or in a frame, the frame's winning. Views come in the file's frame order, undistorted
once at load, with an optional per-frame ``mask_path``. Never writes.

``cx, cy`` are pixel-edge (the centre of pixel (0, 0) at (0.5, 0.5)), like COLMAP's and this
package's K: nerfstudio casts rays through pixel index + 0.5 before subtracting cx, and its
``colmap_to_json`` (like instant-ngp's colmap2nerf) copies COLMAP's cx, cy unchanged. So K
takes them as written, with no half-pixel shift; absent, they default to w / 2, h / 2.
"""
import json
import math
from pathlib import Path

import numpy as np

from igspad_ros.core import cameras, undistort
from igspad_ros.data.image_files import (IMAGE_SUFFIXES, CaptureFormatError, ViewCamera,
                                         check_pixels, image_size)
from igspad_ros.data.mad import load_test_split
from igspad_ros.data.views import Capture, TrainView

INTRINSIC_KEYS = ('camera_model', 'fl_x', 'fl_y', 'cx', 'cy', 'w', 'h', 'k1', 'k2', 'k3', 'k4',
                  'p1', 'p2', 'camera_angle_x', 'camera_angle_y')
CAMERA_MODELS = ('PINHOLE', 'OPENCV', 'OPENCV_FISHEYE')
_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.JPG')


def read_meta(path):
    """Parse the ``transforms.json`` at ``path``: a dict with a ``frames`` list."""
    if not path.is_file():
        raise CaptureFormatError(f'{path}: missing transforms.json')
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get('frames'), list):
            raise TypeError('no frames list')
    except (OSError, ValueError, TypeError) as err:
        raise CaptureFormatError(f'{path}: malformed transforms.json ({err})') from None
    return meta


def load_transforms(root, size=None, load_test=True, load_train=True):
    """Read the transforms.json capture at ``root`` into a ``Capture``.

    ``size`` is the longest side of every view after downscaling (each view by its own
    longest side; images INTER_AREA, masks nearest, K rescaled); None keeps the raw sizes.
    The test split (``test/``, ``ground_truth/``) uses the top-level camera, or the first
    frame's when every frame has its own. Raises CaptureFormatError naming the file.
    """
    root = Path(root)
    path = root / 'transforms.json'
    meta = read_meta(path)
    if not meta['frames']:
        raise CaptureFormatError(f'{path}: no frames')
    top = {k: meta[k] for k in INTRINSIC_KEYS if k in meta}
    cache = {}
    frames = [_frame(path, k, frame, top, size, cache) for k, frame in enumerate(meta['frames'])]
    train = []
    if load_train:
        for k, (image_path, mask_path, viewmat, camera) in enumerate(frames):
            image, mask = camera.image(image_path, mask_path)
            train.append(TrainView(k, image_path, image, viewmat, camera.K, mask))
    test = []
    if load_test:
        test_camera = frames[0][3]
        if 'fl_x' in top or 'camera_angle_x' in top:
            test_camera = _camera(path, 'the top-level camera', top, frames[0][0], size, cache)
        test = load_test_split(root, test_camera, IMAGE_SUFFIXES)
    first = frames[0][3]
    undistorted = {str(k): camera.describe() for k, camera in enumerate(cache.values())}
    return Capture(root, root.name, first.size[0], first.size[1], first.K, train, test,
                   format='transforms', undistorted=undistorted)


def _frame(path, k, frame, top, size, cache):
    """(image path, mask path or None, viewmat, ViewCamera) of frame ``k``."""
    try:
        rel = str(frame['file_path'])
        c2w = np.asarray(frame['transform_matrix'], dtype=np.float64)
        mask_rel = frame.get('mask_path')
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CaptureFormatError(f'{path}: frame {k} is malformed ({err})') from None
    if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
        raise CaptureFormatError(f'{path}: frame {k} transform_matrix is not a finite 4x4')
    image_path = _resolve(path, rel, 'frame file')
    mask_path = None if mask_rel is None else _resolve(path, str(mask_rel), 'mask')
    params = {**top, **{key: frame[key] for key in INTRINSIC_KEYS if key in frame}}
    camera = _camera(path, f'frame {k}', params, image_path, size, cache)
    return image_path, mask_path, cameras.blender_c2w_to_viewmat(c2w), camera


def _resolve(path, rel, what):
    """Find the file ``rel`` names beside ``path``, trying image extensions after it."""
    rel = rel[2:] if rel.startswith('./') else rel
    base = path.parent / rel
    if base.is_file():
        return base
    for ext in _EXTENSIONS:
        candidate = base.with_name(base.name + ext)
        if candidate.is_file():
            return candidate
    raise CaptureFormatError(f'{base}: {what} listed in {path} does not exist (also tried '
                             f'{", ".join(_EXTENSIONS)})')


def _camera(path, where, params, image_path, size, cache):
    """Return the ViewCamera of merged intrinsics ``params``, one per distinct camera."""
    if 'w' in params or 'h' in params:
        raw_size = check_pixels(path, f'{where}: camera', _integer(path, where, params, 'w'),
                                _integer(path, where, params, 'h'))
        reason = f'as {path} says'
    else:
        raw_size = image_size(image_path)
        reason = f'like {image_path} (size of {where})'
    K = _intrinsics(path, where, params, raw_size)
    distortion = _distortion(path, where, params)
    key = (K.tobytes(), raw_size, distortion)
    if key not in cache:
        cache[key] = ViewCamera(K, raw_size, distortion, size, reason)
    return cache[key]


def _intrinsics(path, where, params, raw_size):
    """Pixel-edge K from ``fl_x fl_y cx cy`` or from ``camera_angle_x`` [``camera_angle_y``]."""
    w, h = raw_size
    if 'fl_x' in params:
        fx = _number(path, where, params, 'fl_x', positive=True)
        fy = _number(path, where, params, 'fl_y', positive=True) if 'fl_y' in params else fx
        # cx, cy are pixel-edge as written (no shift); absent: the image centre w / 2, h / 2
        cx = _number(path, where, params, 'cx') if 'cx' in params else 0.5 * w
        cy = _number(path, where, params, 'cy') if 'cy' in params else 0.5 * h
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    if 'camera_angle_x' not in params:
        raise CaptureFormatError(f'{path}: {where} has no intrinsics (needs fl_x or '
                                 f'camera_angle_x)')
    # principal point w / 2, h / 2 (pixel-edge image centre), as MAD's
    K = cameras.intrinsics_from_fov(_angle(path, where, params, 'camera_angle_x'), w, h)
    if 'camera_angle_y' in params:
        K[1, 1] = 0.5 * h / math.tan(0.5 * _angle(path, where, params, 'camera_angle_y'))
    return K


def _distortion(path, where, params):
    """Return the lens of ``camera_model`` and ``k1..k4 p1 p2`` (no model: OPENCV)."""
    model = params.get('camera_model', 'OPENCV')
    if model not in CAMERA_MODELS:
        raise CaptureFormatError(f'{path}: {where} camera_model {model!r} is not supported '
                                 f'(supported: {", ".join(CAMERA_MODELS)})')
    k1, k2, k3, k4, p1, p2 = (_number(path, where, params, key) if key in params else 0.0
                              for key in ('k1', 'k2', 'k3', 'k4', 'p1', 'p2'))
    if model == 'OPENCV_FISHEYE':
        distortion = undistort.Distortion('fisheye', (k1, k2, k3, k4))
    elif k4:
        # nerfstudio's k4 multiplies r^8 in the radial polynomial: no OpenCV model has it
        raise CaptureFormatError(f'{path}: {where} {model} with k4 = {k4} (an r^8 radial term) '
                                 f'is not supported; only OPENCV_FISHEYE takes k4')
    else:
        # nerfstudio applies k1 k2 k3 p1 p2 to PINHOLE cameras as well as to OPENCV ones
        distortion = undistort.Distortion('radtan', (k1, k2, p1, p2, k3))
    return undistort.NO_DISTORTION if distortion.is_identity else distortion


def _number(path, where, params, key, positive=False):
    value = params[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        kind = 'a positive number' if positive else 'a finite number'
        raise CaptureFormatError(f'{path}: {where} {key} must be {kind}, got {value!r}')
    return float(value)


def _integer(path, where, params, key):
    value = params.get(key)
    # instant-ngp writes sizes as floats (800.0)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value != int(value):
        raise CaptureFormatError(f'{path}: {where} {key} must be an integer, got {value!r}')
    return int(value)


def _angle(path, where, params, key):
    angle = _number(path, where, params, key)
    if not 0.0 < angle < math.pi:
        raise CaptureFormatError(f'{path}: {where} {key} {angle} is not in (0, pi)')
    return angle
