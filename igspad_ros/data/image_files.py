"""Image files of captures read safely, and brought to the views' pinhole once at load.

Sizes come from the file header (PNG, JPEG) and are checked before any pixel is decoded;
images decode to float32 RGB in [0, 1] (8/16-bit, grey, RGBA composited over white), masks
to bool (> half the sample range). ``ViewCamera`` is what every reader shares: one camera's
raw intrinsics and lens, the undistortion maps computed once, and the downscale to the
output size. Every error is a ``CaptureFormatError`` that names the offending file.
"""
import struct
import warnings
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from igspad_ros.core import cameras, undistort

MAX_PIXELS = 64_000_000   # refuse images claiming more before decoding them
FORMATS = ('PNG', 'JPEG')
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.PNG', '.JPG', '.JPEG')
_SIGNATURES = {'PNG': b'\x89PNG\r\n\x1a\n', 'JPEG': b'\xff\xd8\xff'}


class CaptureFormatError(ValueError):
    """A capture folder (MAD, transforms.json, COLMAP) or one of its files is malformed."""


def image_format(path, formats=FORMATS):
    """Name of the format among ``formats`` whose signature starts the file at ``path``."""
    try:
        with open(path, 'rb') as f:
            head = f.read(8)
    except OSError as err:
        raise CaptureFormatError(f'{path}: cannot read ({err.strerror})') from None
    for name in formats:
        if head.startswith(_SIGNATURES[name]):
            return name
    names = ' or '.join(formats)
    raise CaptureFormatError(f'{path}: unreadable {names} (not a {names} file)')


def image_size(path, formats=FORMATS):
    """(width, height) from the file header, checked against ``MAX_PIXELS`` before decoding."""
    if image_format(path, formats) == 'PNG':
        return _png_size(path)
    try:
        with warnings.catch_warnings():
            # the claim is checked against MAX_PIXELS below, tighter than PIL's warning
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(path, formats=['JPEG']) as im:
                width, height = im.size
    except Image.DecompressionBombError as err:
        raise CaptureFormatError(f'{path}: JPEG refused ({err})') from None
    except (OSError, SyntaxError, ValueError) as err:
        raise CaptureFormatError(f'{path}: unreadable JPEG ({err})') from None
    return check_pixels(path, 'JPEG', width, height)


def _png_size(path):
    with open(path, 'rb') as f:
        head = f.read(24)
    if len(head) < 24 or head[12:16] != b'IHDR':
        raise CaptureFormatError(f'{path}: unreadable PNG (not a PNG file)')
    width, height = struct.unpack('>II', head[16:24])
    return check_pixels(path, 'PNG', width, height)


def check_pixels(path, kind, width, height):
    """Return (width, height) as ints; refuse an empty size or one over ``MAX_PIXELS``."""
    if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
        raise CaptureFormatError(f'{path}: {kind} claims {width}x{height} pixels, refused')
    return int(width), int(height)


def decode(path, formats=FORMATS):
    """Raw samples of an image file: (H, W) or (H, W, 3|4) BGR(A), uint8 or uint16."""
    kind = image_format(path, formats)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim not in (2, 3) or (raw.ndim == 3 and raw.shape[2] not in (3, 4)):
        raise CaptureFormatError(f'{path}: unreadable {kind}')
    if raw.dtype not in (np.uint8, np.uint16):
        raise CaptureFormatError(f'{path}: unsupported {kind} sample type {raw.dtype}')
    return raw


def load_image(path, expected, formats=FORMATS, reason='like the first training view'):
    """Decode an RGB(A)/grey image of size ``expected`` (w, h) to float32 RGB in [0, 1].

    Alpha is composited over white. The size is checked from the header first; a mismatch
    is an error that ends with ``reason`` (where the expected size comes from).
    """
    size = image_size(path, formats)
    if size != tuple(expected):
        raise CaptureFormatError(f'{path}: image is {size[0]}x{size[1]}, expected '
                                 f'{expected[0]}x{expected[1]} {reason}')
    raw = decode(path, formats)
    scale = float(np.iinfo(raw.dtype).max)
    img = raw.astype(np.float32) / scale
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        alpha = img[..., 3:4]
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB) * alpha + (1.0 - alpha)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img, dtype=np.float32)


def load_mask(path, expected, formats=FORMATS):
    """Read a mask file of size ``expected`` (w, h): (H, W) bool, any channel above half."""
    size = image_size(path, formats)
    if size != tuple(expected):
        raise CaptureFormatError(f'{path}: mask is {size[0]}x{size[1]} but its image is '
                                 f'{expected[0]}x{expected[1]}')
    raw = decode(path, formats)
    value = raw.max(axis=2) if raw.ndim == 3 else raw
    return value > (np.iinfo(raw.dtype).max // 2)


def output_size(native, size):
    """(w, h) of an image of ``native`` size downscaled so its longest side is ``size``."""
    if size is None:
        return tuple(native)
    longest = max(native)
    if not isinstance(size, (int, np.integer)) or not 1 <= size <= longest:
        raise ValueError(f'size must be an integer in [1, {longest}] (the native longest '
                         f'side), got {size}')
    scale = size / longest
    return max(1, round(native[0] * scale)), max(1, round(native[1] * scale))


def resize_mask(mask, out_size):
    """Nearest-neighbour resize of a bool mask to ``out_size`` (w, h)."""
    if (mask.shape[1], mask.shape[0]) == tuple(out_size):
        return mask
    return cv2.resize(mask.astype(np.uint8), out_size,
                      interpolation=cv2.INTER_NEAREST).astype(bool)


def numeric_key(path):
    """Sort key for unpadded numeric names: (number, name); non-numeric names sort last."""
    stem = Path(path).stem
    return (int(stem), stem) if stem.isdigit() else (float('inf'), stem)


class ViewCamera:
    """One raw camera and how its image files become views of a pinhole.

    ``K_raw`` (pixel-edge convention) and ``distortion`` describe the lens for images of
    ``size_raw`` (w, h). Images are undistorted to the pinhole of the same K and size (maps
    computed once, on first use), then downscaled to ``size`` (longest side ``longest``,
    None keeps the raw size) with ``K`` rescaled. ``reason`` says where the raw size comes
    from, for size-mismatch errors; ``formats`` are the image formats accepted.
    """

    def __init__(self, K_raw, size_raw, distortion=undistort.NO_DISTORTION, longest=None,
                 reason='like the first training view', formats=FORMATS):
        self.K_raw = np.asarray(K_raw, dtype=np.float64)
        self.size_raw = tuple(int(s) for s in size_raw)
        self.distortion = distortion
        self.size = output_size(self.size_raw, longest)
        self.K = cameras.scale_intrinsics(self.K_raw, self.size_raw, self.size)
        self.reason = reason
        self.formats = formats

    @cached_property
    def maps(self):
        """Undistortion maps of this camera, None for a lens without distortion."""
        if self.distortion.is_identity:
            return None
        return undistort.undistortion_maps(self.K_raw, self.distortion, self.size_raw)

    def describe(self):
        """JSON-ready description of the raw camera (for ``scene.meta.json``)."""
        return {**self.distortion.as_dict(), 'K_raw': self.K_raw.tolist(),
                'size_raw': list(self.size_raw)}

    def image(self, path, mask_path=None):
        """(image, mask) of one view at ``size``: float32 RGB and bool mask or None.

        The mask is False where undistortion found no source pixel and, with
        ``mask_path``, where that mask file is False; None when neither applies.
        """
        img = load_image(path, self.size_raw, self.formats, self.reason)
        mask = None
        if self.maps is not None:
            img = undistort.remap(img, self.maps)
            mask = self.maps.valid.copy()
        if mask_path is not None:
            given = self._undistorted_mask(mask_path)
            mask = given if mask is None else mask & given
        if self.size != self.size_raw:
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        return (np.ascontiguousarray(img, dtype=np.float32),
                None if mask is None else resize_mask(mask, self.size))

    def mask(self, path):
        """Read a mask file of this camera, undistorted (nearest) and resized to ``size``."""
        return resize_mask(self._undistorted_mask(path), self.size)

    def _undistorted_mask(self, path):
        mask = load_mask(path, self.size_raw, self.formats)
        if self.maps is None:
            return mask
        return undistort.remap(mask.astype(np.uint8), self.maps,
                               interpolation=cv2.INTER_NEAREST).astype(bool)
