"""numpy images <-> sensor_msgs/Image fields, without a ROS install.

One conversion path for the node, the bag tools and the tests, with or without rclpy:
decoding goes through rosbags-image (``image_to_cvimage``), encoding is plain numpy.
Every field is checked before anything is allocated, so a message that claims
100000 x 100000 pixels, or carries fewer bytes than ``step * height``, is rejected with
an ``ImageDecodeError`` naming the field, never allocated.

Pictures decode to float32 RGB in [0, 1], shape (H, W, 3) (mono is repeated over the three
channels, alpha is dropped as cv_bridge does); ``32FC1`` is data, not a picture, and decodes
to its float32 values, shape (H, W).
"""
import io
from types import SimpleNamespace

import cv2
import numpy as np
from PIL import Image as PilImage
from rosbags.image import ImageError, image_to_cvimage

MAX_SIDE = 8192   # pixels per side; larger messages are rejected before allocating

# encoding -> (channels, numpy dtype of one channel); the encodings this module converts.
ENCODINGS = {
    'rgb8': (3, np.uint8), 'bgr8': (3, np.uint8), 'mono8': (1, np.uint8),
    'rgba8': (4, np.uint8), 'bgra8': (4, np.uint8),
    'rgb16': (3, np.uint16), 'bgr16': (3, np.uint16), 'mono16': (1, np.uint16),
    'rgba16': (4, np.uint16), 'bgra16': (4, np.uint16),
    '32FC1': (1, np.float32),
}
# Channel order of each picture encoding, as indices into RGB(A).
_ORDER = {'rgb': (0, 1, 2), 'bgr': (2, 1, 0), 'rgba': (0, 1, 2, 3), 'bgra': (2, 1, 0, 3)}
COMPRESSED_FORMATS = ('PNG', 'JPEG')
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)   # ITU-R BT.601, as cv2's RGB2GRAY


class ImageEncodingError(ValueError):
    """An image cannot be converted to or from sensor_msgs/Image fields."""


class ImageDecodeError(ImageEncodingError):
    """The fields of a sensor_msgs/Image message do not describe a decodable image."""


def decode_image(encoding, height=None, width=None, step=None, data=None, is_bigendian=0,
                 max_side=MAX_SIDE):
    """Decode sensor_msgs/Image fields to a float32 numpy image.

    ``encoding`` is either the encoding string, with the other fields given, or a whole
    sensor_msgs/Image message (rclpy or rosbags), whose fields are used. Returns (H, W, 3)
    RGB in [0, 1] for picture encodings and (H, W) float32 values for ``32FC1``. Raises
    ImageDecodeError naming the field for an unknown encoding, a zero or oversized image,
    a step shorter than a row, data shorter than ``step * height`` or non-finite floats.
    """
    if not isinstance(encoding, str):
        msg = encoding
        return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                            msg.is_bigendian, max_side)
    channels, dtype = _check_fields(encoding, height, width, step, data, max_side)
    row_bytes = width * channels * np.dtype(dtype).itemsize
    rows = _as_bytes(data)[:step * height].reshape(height, step)[:, :row_bytes]
    packed = SimpleNamespace(encoding=encoding, height=height, width=width,
                             is_bigendian=int(bool(is_bigendian)),
                             data=np.ascontiguousarray(rows).reshape(-1))
    if encoding == '32FC1':
        values = np.array(image_to_cvimage(packed), dtype=np.float32)
        if not np.isfinite(values).all():
            raise ImageDecodeError(f'data: {encoding} image holds '
                                   f'{int((~np.isfinite(values)).sum())} non-finite values')
        return values
    wide = dtype == np.uint16
    try:
        rgb = image_to_cvimage(packed, 'rgb16' if wide else 'rgb8')
    except ImageError as err:   # an encoding rosbags-image cannot colour-convert
        raise ImageDecodeError(f'encoding: {err}') from None
    # divide (not multiply by a reciprocal) so values equal cv2.imread(...) / 255 exactly
    return np.divide(rgb, np.float32(65535.0 if wide else 255.0), dtype=np.float32)


def encode_image(image, encoding):
    """Encode a numpy image into sensor_msgs/Image fields (little-endian, packed rows).

    Picture encodings take (H, W, 3) RGB or (H, W) / (H, W, 1) grey, float in [0, 1]
    (clipped) or already integer of the encoding's depth (uint8 / uint16); bool becomes
    0 / full scale. ``mono*`` of an RGB image is its BT.601 luma. ``32FC1`` takes (H, W)
    or (H, W, 1) values as they are. Returns a dict with ``height``, ``width``,
    ``encoding``, ``is_bigendian`` (0), ``step`` and ``data`` (bytes). Raises
    ImageEncodingError for an unknown encoding, a wrong shape, an empty image or
    non-finite values.
    """
    if encoding not in ENCODINGS:
        raise ImageEncodingError(f'encoding: {encoding!r} is not one of {sorted(ENCODINGS)}')
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ImageEncodingError(f'image: shape {array.shape} is neither (H, W) nor (H, W, 3)')
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageEncodingError(f'image: shape {array.shape} is empty')
    channels, dtype = ENCODINGS[encoding]
    if encoding == '32FC1':
        if array.ndim != 2:
            raise ImageEncodingError(f'image: 32FC1 needs one channel, got shape {array.shape}')
        pixels = array.astype('<f4')
        if not np.isfinite(pixels).all():
            raise ImageEncodingError('image: 32FC1 values must be finite')
    else:
        pixels = _to_integer(array, dtype)
        if channels == 1:
            pixels = pixels if pixels.ndim == 2 else _luma(pixels, dtype)
        else:
            if pixels.ndim == 2:
                pixels = np.repeat(pixels[:, :, None], 3, axis=2)
            if channels == 4:
                opaque = np.full(pixels.shape[:2] + (1,), np.iinfo(dtype).max, dtype)
                pixels = np.concatenate([pixels, opaque], axis=2)
            pixels = pixels[:, :, list(_ORDER[encoding.rstrip('0123456789')])]
        pixels = pixels.astype(np.dtype(dtype).newbyteorder('<'))
    height, width = pixels.shape[:2]
    return {'height': int(height), 'width': int(width), 'encoding': encoding,
            'is_bigendian': 0, 'step': int(width * channels * np.dtype(dtype).itemsize),
            'data': np.ascontiguousarray(pixels).tobytes()}


def _check_fields(encoding, height, width, step, data, max_side):
    """Validate the fields before allocating; returns (channels, dtype) of the encoding."""
    if encoding not in ENCODINGS:
        raise ImageDecodeError(f'encoding: {encoding!r} is not one of {sorted(ENCODINGS)}')
    for name, value in (('height', height), ('width', width), ('step', step)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise ImageDecodeError(f'{name}: {value!r} is not an integer')
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f'height/width: image is {width}x{height}, which is empty')
    if height > max_side or width > max_side:
        raise ImageDecodeError(f'height/width: image is {width}x{height}, '
                               f'larger than the {max_side} px per side allowed')
    channels, dtype = ENCODINGS[encoding]
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise ImageDecodeError(f'step: {step} bytes is shorter than one {encoding} row '
                               f'of {width} px ({row_bytes} bytes)')
    if data is None:
        raise ImageDecodeError('data: missing')
    if len(data) * _item_bytes(data) < step * height:
        raise ImageDecodeError(f'data: {len(data) * _item_bytes(data)} bytes, fewer than '
                               f'step * height = {step * height}')
    return channels, dtype


def _item_bytes(data):
    """Return the bytes per element of a buffer (1 for bytes, array('B') and uint8 arrays)."""
    return getattr(data, 'itemsize', 1)


def _as_bytes(data):
    """Return a flat uint8 view of a message's data (bytes, array.array, numpy array or list)."""
    try:
        return np.frombuffer(memoryview(data).cast('B'), np.uint8)
    except TypeError:   # a list of ints, or a non-contiguous buffer
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _to_integer(array, dtype):
    """Return full-scale integers of ``dtype`` from float [0, 1], bool or same-depth integers."""
    full = np.iinfo(dtype).max
    if array.dtype == np.bool_:
        return np.where(array, full, 0).astype(dtype)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > full):
            raise ImageEncodingError(f'image: integer values outside [0, {full}] '
                                     f'for a {np.dtype(dtype).name} encoding')
        return array.astype(dtype)
    if not np.isfinite(array).all():
        raise ImageEncodingError('image: values must be finite')
    return np.round(np.clip(array, 0.0, 1.0) * full).astype(dtype)


def _luma(rgb, dtype):
    """Return the grey of an integer RGB image, rounded to ``dtype``."""
    return np.round(rgb.astype(np.float32) @ _LUMA).astype(dtype)


def decode_compressed(data, max_side=MAX_SIDE, flags=cv2.IMREAD_UNCHANGED):
    """Decode PNG/JPEG bytes (a CompressedImage's ``data``) with ``cv2.imdecode(flags)``.

    The size is read from the file header first, so a small file that claims a huge image
    is rejected before anything is decompressed. Raises ImageDecodeError naming the field.
    """
    data = bytes(data)
    if not data:
        raise ImageDecodeError('data: compressed image is empty')
    try:
        with PilImage.open(io.BytesIO(data)) as probe:
            kind, (width, height) = probe.format, probe.size
    except (OSError, ValueError, PilImage.DecompressionBombError) as err:
        raise ImageDecodeError(f'data: not a readable compressed image ({err})') from None
    if kind not in COMPRESSED_FORMATS:
        raise ImageDecodeError(f'format: {kind} is not one of {", ".join(COMPRESSED_FORMATS)}')
    if width > max_side or height > max_side:
        raise ImageDecodeError(f'data: image is {width}x{height}, larger than the '
                               f'{max_side} px per side allowed')
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if pixels is None:
        raise ImageDecodeError(f'data: corrupt {kind} data')
    return pixels
