"""Reader for MAD-format categories (MAD-Sim layout, see DESIGN.md); never writes.

Training views come in the numeric order of their unpadded file names with poses from
``transforms.json`` (Blender camera-to-world, converted to OpenCV viewmats in
``core.cameras``). Test images carry their defect type (the folder name) and a mask
(``ground_truth/<type>/<n>_mask.png`` or ``<n>.png``; empty for good). Synthetic
categories add ``test_poses.json``, read into ``TestImage.true_viewmat``. The test-split
walk is shared with the other capture readers, whose folders may carry the same split.
"""
import json
from pathlib import Path

import numpy as np

from igspad_ros.core import cameras
from igspad_ros.data.image_files import CaptureFormatError, ViewCamera, image_size, numeric_key
from igspad_ros.data.views import Capture, TestImage, TrainView

# The error every capture reader raises; MAD's name is kept for the tools that catch it.
MadFormatError = CaptureFormatError
_PNG = ('PNG',)


def load_category(root, size=None, load_test=True, load_train=True):
    """Read the MAD-format category at ``root``.

    ``size`` is the longest image side after downscaling (images INTER_AREA, masks
    nearest, K rescaled); None keeps the native size, which is also the largest allowed.
    Raises MadFormatError naming the offending file for any format problem.
    """
    root = Path(root)
    if not root.is_dir():
        raise MadFormatError(f'{root}: not a folder')
    angle, frames = _read_transforms(root / 'transforms.json')
    if not frames:
        raise MadFormatError(f'{root / "transforms.json"}: no frames')
    native = image_size(frames[0][1], _PNG)
    camera = ViewCamera(cameras.intrinsics_from_fov(angle, *native), native, longest=size,
                        formats=_PNG)
    train = []
    if load_train:
        for index, path, c2w in frames:
            image, _ = camera.image(path)
            train.append(TrainView(index, path, image, cameras.blender_c2w_to_viewmat(c2w),
                                   camera.K))
    test = load_test_split(root, camera, ('.png',)) if load_test else []
    return Capture(root, root.name, camera.size[0], camera.size[1], camera.K, train, test,
                   format='mad')


def _read_transforms(path):
    """Return (camera_angle_x, [(index, image path, c2w)] sorted by index)."""
    if not path.is_file():
        raise MadFormatError(f'{path}: missing transforms.json')
    try:
        meta = json.loads(path.read_text())
        angle = float(meta['camera_angle_x'])
        raw = meta['frames']
        if not isinstance(raw, list):
            raise TypeError('frames is not a list')
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MadFormatError(f'{path}: malformed transforms.json ({err})') from None
    if not 0.0 < angle < np.pi:
        raise MadFormatError(f'{path}: camera_angle_x {angle} is not in (0, pi)')
    frames = []
    for k, frame in enumerate(raw):
        try:
            rel = str(frame['file_path'])
            c2w = np.asarray(frame['transform_matrix'], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as err:
            raise MadFormatError(f'{path}: frame {k} is malformed ({err})') from None
        if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
            raise MadFormatError(f'{path}: frame {k} transform_matrix is not a finite 4x4')
        rel = rel[2:] if rel.startswith('./') else rel
        image_path = path.parent / (rel if rel.lower().endswith('.png') else rel + '.png')
        if not image_path.is_file():
            raise MadFormatError(f'{image_path}: frame file listed in {path} does not exist')
        frames.append((numeric_key(image_path), image_path, c2w))
    frames.sort(key=lambda f: f[0])
    return angle, [(int(key[0]) if key[0] != float('inf') else k, p, c2w)
                   for k, (key, p, c2w) in enumerate(frames)]


def load_test_split(root, camera, suffixes):
    """Read the test split of a capture folder in MAD's layout, taken with ``camera``.

    ``test/<type>/<n>.<suffix>`` in numeric order per type, masks from
    ``ground_truth/<type>/<n>_mask.png`` (or ``<n>.png``; all False for good), true poses
    from ``test_poses.json`` when present. Images and masks go through ``camera``
    (a ``ViewCamera``: size check, undistortion, downscale).
    """
    poses = _read_test_poses(root / 'test_poses.json')
    test_dir = root / 'test'
    if not test_dir.is_dir():
        return []
    images = []
    for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        kind = type_dir.name
        paths = (p for p in type_dir.iterdir() if p.suffix in suffixes)
        for path in sorted(paths, key=numeric_key):
            rel = f'test/{kind}/{path.name}'
            image, _ = camera.image(path)
            if kind == 'good':
                mask = np.zeros((camera.size[1], camera.size[0]), bool)
            else:
                mask = camera.mask(_mask_path(root / 'ground_truth' / kind, path))
            images.append(TestImage(rel, path, kind, image, mask, poses.get(rel), camera.K))
    return images


def _read_test_poses(path):
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {str(rel): cameras.blender_c2w_to_viewmat(np.asarray(c2w, dtype=np.float64))
                for rel, c2w in raw.items()}
    except (OSError, ValueError, AttributeError, TypeError) as err:
        raise MadFormatError(f'{path}: malformed test poses ({err})') from None


def _mask_path(gt_dir, image_path):
    stem = image_path.stem
    for name in (f'{stem}_mask.png', f'{stem}.png'):
        path = gt_dir / name
        if path.is_file():
            return path
    raise MadFormatError(f'{gt_dir / (stem + "_mask.png")}: mask for {image_path} '
                         f'does not exist')
