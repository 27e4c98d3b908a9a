"""Reader for MAD-format categories (MAD-Sim layout, see DESIGN.md); never writes.

Training views come in the numeric order of their unpadded file names with poses from
``transforms.json`` (Blender camera-to-world, converted to OpenCV viewmats in
``core.cameras``). Test images carry their defect type (the folder name) and a mask
(``ground_truth/<type>/<n>_mask.png`` or ``<n>.png``; empty for good). Synthetic
categories add ``test_poses.json``, read into ``TestImage.true_viewmat``.
"""
import json
import struct
from pathlib import Path

import cv2
import numpy as np

from igspad_ros.core import cameras
from igspad_ros.data.views import Capture, TestImage, TrainView

MAX_PIXELS = 64_000_000   # refuse images claiming more before decoding them
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


class MadFormatError(ValueError):
    """A MAD-format category folder or one of its files is missing or malformed."""


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
    native = _png_size(frames[0][1])
    out_size = _output_size(native, size)
    K = cameras.scale_intrinsics(cameras.intrinsics_from_fov(angle, *native), native, out_size)
    train = []
    if load_train:
        for index, path, c2w in frames:
            image = _load_image(path, native, out_size)
            train.append(TrainView(index, path, image, cameras.blender_c2w_to_viewmat(c2w), K))
    test = _load_test(root, native, out_size) if load_test else []
    return Capture(root, root.name, out_size[0], out_size[1], K, train, test, format='mad')


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
        frames.append((_numeric_key(image_path), image_path, c2w))
    frames.sort(key=lambda f: f[0])
    return angle, [(int(key[0]) if key[0] != float('inf') else k, p, c2w)
                   for k, (key, p, c2w) in enumerate(frames)]


def _load_test(root, native, out_size):
    poses = _read_test_poses(root / 'test_poses.json')
    test_dir = root / 'test'
    if not test_dir.is_dir():
        return []
    images = []
    for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        kind = type_dir.name
        for path in sorted(type_dir.glob('*.png'), key=_numeric_key):
            rel = f'test/{kind}/{path.name}'
            image = _load_image(path, native, out_size)
            if kind == 'good':
                mask = np.zeros((out_size[1], out_size[0]), bool)
            else:
                mask = _load_mask(root / 'ground_truth' / kind, path, native, out_size)
            images.append(TestImage(rel, path, kind, image, mask, poses.get(rel)))
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


def _load_mask(gt_dir, image_path, native, out_size):
    stem = image_path.stem
    for name in (f'{stem}_mask.png', f'{stem}.png'):
        path = gt_dir / name
        if path.is_file():
            break
    else:
        raise MadFormatError(f'{gt_dir / (stem + "_mask.png")}: mask for {image_path} '
                             f'does not exist')
    size = _png_size(path)
    if size != native:
        raise MadFormatError(f'{path}: mask is {size[0]}x{size[1]} but its image is '
                             f'{native[0]}x{native[1]}')
    raw = _decode(path)
    value = raw.max(axis=2) if raw.ndim == 3 else raw
    mask = value > (np.iinfo(raw.dtype).max // 2)
    if out_size != native:
        mask = cv2.resize(mask.astype(np.uint8), out_size,
                          interpolation=cv2.INTER_NEAREST).astype(bool)
    return mask


def _load_image(path, native, out_size):
    """Decode an RGB(A)/grey PNG to float32 RGB in [0, 1], alpha composited over white."""
    size = _png_size(path)
    if size != native:
        raise MadFormatError(f'{path}: image is {size[0]}x{size[1]}, expected '
                             f'{native[0]}x{native[1]} like the first training view')
    raw = _decode(path)
    scale = float(np.iinfo(raw.dtype).max)
    img = raw.astype(np.float32) / scale
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        alpha = img[..., 3:4]
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB) * alpha + (1.0 - alpha)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if out_size != native:
        img = cv2.resize(img, out_size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img, dtype=np.float32)


def _png_size(path):
    """(width, height) from the PNG header, checked before any pixel is decoded."""
    try:
        with open(path, 'rb') as f:
            head = f.read(24)
    except OSError as err:
        raise MadFormatError(f'{path}: cannot read ({err.strerror})') from None
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b'IHDR':
        raise MadFormatError(f'{path}: unreadable PNG (not a PNG file)')
    width, height = struct.unpack('>II', head[16:24])
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        raise MadFormatError(f'{path}: PNG claims {width}x{height} pixels, refused')
    return int(width), int(height)


def _decode(path):
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim not in (2, 3) or (raw.ndim == 3 and raw.shape[2] not in (3, 4)):
        raise MadFormatError(f'{path}: unreadable PNG')
    if raw.dtype not in (np.uint8, np.uint16):
        raise MadFormatError(f'{path}: unsupported PNG sample type {raw.dtype}')
    return raw


def _output_size(native, size):
    if size is None:
        return native
    longest = max(native)
    if not isinstance(size, (int, np.integer)) or not 1 <= size <= longest:
        raise ValueError(f'size must be an integer in [1, {longest}] (the native longest '
                         f'side), got {size}')
    scale = size / longest
    return max(1, round(native[0] * scale)), max(1, round(native[1] * scale))


def _numeric_key(path):
    """Sort key for unpadded numeric names: (number, name); non-numeric names sort last."""
    stem = Path(path).stem
    return (int(stem), stem) if stem.isdigit() else (float('inf'), stem)
