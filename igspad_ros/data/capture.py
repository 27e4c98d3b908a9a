"""One loader in front of the capture readers: MAD categories, transforms.json, COLMAP.

``load_capture`` tells the formats apart by what the folder holds: a MAD category is
``train/good/`` with a ``transforms.json`` that has only ``camera_angle_x`` and frames in
``train/good/``; any other ``transforms.json`` is a nerfstudio / instant-ngp capture; else
a ``sparse/0/`` or ``sparse/`` model is COLMAP. Every reader raises ``CaptureFormatError``
(the same class as ``mad.MadFormatError``) naming the offending file.
"""
from pathlib import Path

from igspad_ros.data import colmap, mad, transforms
from igspad_ros.data.image_files import CaptureFormatError

__all__ = ['CaptureFormatError', 'FORMATS', 'detect_format', 'load_capture']

READERS = {'mad': mad.load_category, 'transforms': transforms.load_transforms,
           'colmap': colmap.load_colmap}
FORMATS = tuple(READERS)
# keys that only a nerfstudio / instant-ngp transforms.json carries, never MAD's
_PINHOLE_KEYS = ('camera_model', 'fl_x', 'fl_y', 'cx', 'cy', 'w', 'h')


def load_capture(root, size=None, load_test=True, load_train=True, format=None):
    """Read the capture folder at ``root`` with the reader of its format.

    ``format`` (one of ``FORMATS``) forces a reader; None detects it. ``size`` is the
    longest image side after downscaling, None the native size. Returns a
    ``views.Capture``; raises CaptureFormatError naming the offending file or folder.
    """
    if format is None:
        format = detect_format(root)
    elif format not in READERS:
        raise ValueError(f'format must be one of {", ".join(FORMATS)}, got {format!r}')
    return READERS[format](root, size=size, load_test=load_test, load_train=load_train)


def detect_format(root):
    """Return the format of the capture at ``root``: ``mad``, ``transforms`` or ``colmap``."""
    root = Path(root)
    if not root.is_dir():
        raise CaptureFormatError(f'{root}: not a folder')
    path = root / 'transforms.json'
    if path.is_file():
        return 'mad' if _is_mad(root, transforms.read_meta(path)) else 'transforms'
    if colmap.find_model(root) is not None:
        return 'colmap'
    raise CaptureFormatError(f'{root}: not a capture folder: no transforms.json (MAD category '
                             f'or nerfstudio / instant-ngp capture), no sparse/0 or sparse/ '
                             f'COLMAP model (cameras.bin or cameras.txt)')


def _is_mad(root, meta):
    """Tell MAD's layout: train/good/, camera_angle_x only, every frame in train/good/."""
    if not (root / 'train' / 'good').is_dir() or 'camera_angle_x' not in meta:
        return False
    if any(key in meta for key in _PINHOLE_KEYS):
        return False
    for frame in meta['frames']:
        if not isinstance(frame, dict) or any(key in frame for key in _PINHOLE_KEYS):
            return False
        rel = str(frame.get('file_path', ''))
        if not (rel[2:] if rel.startswith('./') else rel).startswith('train/good/'):
            return False
    return True
