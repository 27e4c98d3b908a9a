"""Reader for COLMAP captures as COLMAP writes them: ``images/`` + ``sparse/0/`` or ``sparse/``.

The model (binary or text) is read with pycolmap. Registered images, sorted by name, become
views: COLMAP's pose is already an OpenCV world-to-camera transform, and COLMAP places the
centre of the upper-left pixel at (0.5, 0.5), the pixel-edge convention of this package, so
K is taken as written. Unregistered images are skipped and counted; the SfM points are kept
for initialisation. Never writes.
"""
from pathlib import Path

import numpy as np
import pycolmap

from igspad_ros.core import undistort
from igspad_ros.data.image_files import (IMAGE_SUFFIXES, CaptureFormatError, ViewCamera,
                                         check_pixels)
from igspad_ros.data.mad import load_test_split
from igspad_ros.data.views import Capture, TrainView

# COLMAP model: (number of focal lengths, lens model); the extra parameters after
# f[, f], cx, cy are the OpenCV coefficients in order (missing ones are zero).
CAMERA_MODELS = {
    'SIMPLE_PINHOLE': (1, 'none'),
    'PINHOLE': (2, 'none'),
    'SIMPLE_RADIAL': (1, 'radtan'),
    'RADIAL': (1, 'radtan'),
    'OPENCV': (2, 'radtan'),
    'FULL_OPENCV': (2, 'rational'),
    'OPENCV_FISHEYE': (2, 'fisheye'),
    'SIMPLE_RADIAL_FISHEYE': (1, 'fisheye'),
    'RADIAL_FISHEYE': (1, 'fisheye'),
}


def find_model(root):
    """Return the COLMAP model folder of ``root`` (``sparse/0`` before ``sparse``) or None."""
    for folder in (Path(root) / 'sparse' / '0', Path(root) / 'sparse'):
        if any((folder / f'cameras.{ext}').is_file() for ext in ('bin', 'txt')):
            return folder
    return None


def load_colmap(root, size=None, load_test=True, load_train=True):
    """Read the COLMAP capture at ``root`` into a ``Capture``.

    ``size`` is the longest side of every view after downscaling (each view by its own
    longest side; images INTER_AREA, masks nearest, K rescaled); None keeps the raw sizes.
    The test split (``test/``, ``ground_truth/``) uses the camera of the first registered
    image. Raises CaptureFormatError naming the file.
    """
    root = Path(root)
    model = find_model(root)
    if model is None:
        raise CaptureFormatError(f'{root}: no COLMAP model (no sparse/0/ or sparse/ with '
                                 f'cameras.bin or cameras.txt)')
    images_dir = root / 'images'
    if not images_dir.is_dir():
        raise CaptureFormatError(f'{images_dir}: missing, the images of the COLMAP model '
                                 f'in {model}')
    try:
        reconstruction = pycolmap.Reconstruction(str(model))
    except (ValueError, RuntimeError, MemoryError) as err:
        raise CaptureFormatError(f'{model}: unreadable COLMAP model ({err})') from None
    cameras_file = next(model / name for name in ('cameras.bin', 'cameras.txt')
                        if (model / name).is_file())
    registered = sorted((im for im in reconstruction.images.values() if im.has_pose),
                        key=lambda im: im.name)
    if not registered:
        raise CaptureFormatError(f'{model}: no registered images')
    view_cameras = {}
    views = []
    for image in registered:
        if image.camera_id not in view_cameras:
            view_cameras[image.camera_id] = _camera(
                cameras_file, reconstruction.cameras[image.camera_id], size)
        path = images_dir / image.name
        if not path.is_file():
            raise CaptureFormatError(f'{path}: image {image.name!r} of the COLMAP model in '
                                     f'{model} does not exist')
        viewmat = np.vstack([image.cam_from_world().matrix(), [0.0, 0.0, 0.0, 1.0]])
        views.append((path, viewmat, view_cameras[image.camera_id]))
    train = []
    if load_train:
        for k, (path, viewmat, camera) in enumerate(views):
            picture, mask = camera.image(path)
            train.append(TrainView(k, path, picture, viewmat, camera.K, mask))
    first = views[0][2]
    test = load_test_split(root, first, IMAGE_SUFFIXES) if load_test else []
    points, colors = _points(reconstruction)
    return Capture(root, root.name, first.size[0], first.size[1], first.K, train, test,
                   format='colmap', skipped=_count_skipped(images_dir, reconstruction, registered),
                   points=points, point_colors=colors,
                   undistorted={str(cid): cam.describe() for cid, cam in view_cameras.items()})


def _camera(cameras_file, camera, size):
    """ViewCamera of a pycolmap camera; unsupported models are an error naming the file."""
    name = camera.model.name
    if name not in CAMERA_MODELS:
        raise CaptureFormatError(f'{cameras_file}: camera {camera.camera_id} uses the {name} '
                                 f'model, not supported (supported: {", ".join(CAMERA_MODELS)})')
    n_focal, lens = CAMERA_MODELS[name]
    params = [float(p) for p in camera.params]
    fx, fy = (params[0], params[0]) if n_focal == 1 else (params[0], params[1])
    cx, cy = params[n_focal], params[n_focal + 1]
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    try:
        distortion = undistort.Distortion(lens, params[n_focal + 2:])
    except ValueError as err:
        raise CaptureFormatError(f'{cameras_file}: camera {camera.camera_id}: {err}') from None
    raw_size = check_pixels(cameras_file, f'camera {camera.camera_id}', camera.width,
                            camera.height)
    return ViewCamera(K, raw_size, undistort.NO_DISTORTION if distortion.is_identity
                      else distortion, size, f'as {cameras_file} says')


def _count_skipped(images_dir, reconstruction, registered):
    """Images in ``images/`` or in the model that are not registered views."""
    files = {p.relative_to(images_dir).as_posix() for p in images_dir.rglob('*')
             if p.suffix in IMAGE_SUFFIXES and p.is_file()}
    listed = {im.name for im in reconstruction.images.values()}
    return len((files | listed) - {im.name for im in registered})


def _points(reconstruction):
    """SfM points (N, 3) float64 and their colours (N, 3) float in [0, 1], by point id."""
    ids = sorted(reconstruction.points3D)
    xyz = np.array([reconstruction.points3D[i].xyz for i in ids], dtype=np.float64)
    rgb = np.array([reconstruction.points3D[i].color for i in ids], dtype=np.float64) / 255.0
    return xyz.reshape(-1, 3), rgb.reshape(-1, 3)
