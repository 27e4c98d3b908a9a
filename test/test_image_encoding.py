"""numpy <-> sensor_msgs/Image fields: round trips per encoding and rejection of bad fields."""
import array

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from igspad_ros.data.image_encoding import (ENCODINGS, ImageDecodeError, ImageEncodingError,
                                            decode_image, encode_image)

RGB_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'rgb16', 'bgr16', 'rgba16', 'bgra16')
MONO_ENCODINGS = ('mono8', 'mono16')


def _rgb(height=5, width=7, seed=0):
    return np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)


def _decode_fields(fields, **override):
    args = dict(fields)
    args.update(override)
    return decode_image(args['encoding'], args['height'], args['width'], args['step'],
                        args['data'], args['is_bigendian'])


@pytest.mark.parametrize('encoding', RGB_ENCODINGS)
def test_colour_round_trip_within_quantisation(encoding):
    image = _rgb()
    fields = encode_image(image, encoding)
    channels, dtype = ENCODINGS[encoding]
    assert fields['step'] == 7 * channels * np.dtype(dtype).itemsize
    assert len(fields['data']) == fields['step'] * 5
    decoded = _decode_fields(fields)
    assert decoded.shape == (5, 7, 3) and decoded.dtype == np.float32
    full = np.iinfo(dtype).max
    assert np.abs(decoded - image).max() <= 0.5 / full + 1e-6


@pytest.mark.parametrize('encoding', RGB_ENCODINGS)
def test_colour_encodings_put_channels_in_their_byte_order(encoding):
    image = np.zeros((1, 1, 3), np.float32)
    image[0, 0] = (1.0, 0.0, 0.0)           # pure red
    channels, dtype = ENCODINGS[encoding]
    raw = np.frombuffer(encode_image(image, encoding)['data'], np.dtype(dtype).newbyteorder('<'))
    red_at = 0 if encoding.startswith('rgb') else 2
    expected = np.zeros(channels, np.int64)
    expected[red_at] = np.iinfo(dtype).max
    if channels == 4:
        expected[3] = np.iinfo(dtype).max    # opaque alpha
    np.testing.assert_array_equal(raw, expected)


@pytest.mark.parametrize('encoding', MONO_ENCODINGS)
def test_mono_round_trip_repeats_grey_over_rgb(encoding):
    grey = np.linspace(0.0, 1.0, 35, dtype=np.float32).reshape(5, 7)
    decoded = _decode_fields(encode_image(grey, encoding))
    assert decoded.shape == (5, 7, 3)
    np.testing.assert_array_equal(decoded[:, :, 0], decoded[:, :, 2])
    full = np.iinfo(ENCODINGS[encoding][1]).max
    assert np.abs(decoded[:, :, 1] - grey).max() <= 0.5 / full + 1e-6


def test_mono8_of_rgb_is_bt601_luma():
    image = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], np.float32)
    data = np.frombuffer(encode_image(image, 'mono8')['data'], np.uint8)
    np.testing.assert_array_equal(data, [76, 150, 29])


def test_32fc1_round_trip_is_exact_and_two_dimensional():
    values = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32) * 100
    fields = encode_image(values, '32FC1')
    assert fields['step'] == 24
    decoded = _decode_fields(fields)
    assert decoded.shape == (4, 6) and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, values)


def test_uint8_and_bool_inputs_encode_without_rescaling():
    pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    data = np.frombuffer(encode_image(pixels, 'rgb8')['data'], np.uint8)
    np.testing.assert_array_equal(data, np.arange(12))
    # decoding equals the usual uint8 / 255 bit for bit (what the MAD reader computes)
    decoded = decode_image('rgb8', 2, 2, 6, data.tobytes())
    np.testing.assert_array_equal(decoded, pixels.astype(np.float32) / 255)
    mask = np.array([[True, False]])
    np.testing.assert_array_equal(np.frombuffer(encode_image(mask, 'mono8')['data'], np.uint8),
                                  [255, 0])


def test_padded_rows_are_skipped():
    image = _rgb(3, 4)
    fields = encode_image(image, 'rgb8')
    rows = np.frombuffer(fields['data'], np.uint8).reshape(3, 12)
    padded = np.concatenate([rows, np.full((3, 4), 99, np.uint8)], axis=1)
    decoded = decode_image('rgb8', 3, 4, 16, padded.tobytes())
    np.testing.assert_array_equal(decoded, _decode_fields(fields))


def test_big_endian_16_bit_and_float_are_byte_swapped():
    grey = np.array([[0, 1000, 65535]], np.uint16)
    decoded = decode_image('mono16', 1, 3, 6, grey.astype('>u2').tobytes(), is_bigendian=1)
    np.testing.assert_allclose(decoded[0, :, 0], grey[0] / 65535.0, rtol=1e-6)
    values = np.array([[1.5, -2.25]], np.float32)
    decoded = decode_image('32FC1', 1, 2, 8, values.astype('>f4').tobytes(), is_bigendian=1)
    np.testing.assert_array_equal(decoded, values)


def test_decodes_message_objects_of_rosbags_and_rclpy_buffers():
    image = _rgb(4, 3)
    fields = encode_image(image, 'bgr8')
    types = get_typestore(Stores.ROS2_JAZZY).types
    header = types['std_msgs/msg/Header'](types['builtin_interfaces/msg/Time'](0, 0), 'cam')
    msg = types['sensor_msgs/msg/Image'](header, 4, 3, 'bgr8', 0, fields['step'],
                                         np.frombuffer(fields['data'], np.uint8))
    expected = _decode_fields(fields)
    np.testing.assert_array_equal(decode_image(msg), expected)
    # rclpy keeps uint8[] fields as array.array('B')
    np.testing.assert_array_equal(_decode_fields(fields, data=array.array('B', fields['data'])),
                                  expected)


@pytest.mark.parametrize('override, reason', [
    ({'encoding': 'yuv422'}, 'encoding'),
    ({'encoding': ''}, 'encoding'),
    ({'height': 0}, 'empty'),
    ({'width': 0}, 'empty'),
    ({'height': -3}, 'empty'),
    ({'height': 100000, 'width': 100000}, 'larger than'),
    ({'width': 9000}, 'larger than'),
    ({'step': 11}, 'step'),
    ({'data': b'\x00' * 59}, 'fewer than'),
    ({'data': b''}, 'fewer than'),
    ({'data': None}, 'data'),
    ({'height': 5.0}, 'not an integer'),
])
def test_bad_fields_are_rejected_with_the_reason(override, reason):
    fields = encode_image(_rgb(5, 4), 'rgb8')    # step 12, 60 bytes
    with pytest.raises(ImageDecodeError, match=reason):
        _decode_fields(fields, **override)


def test_oversized_claim_is_rejected_before_allocating():
    # 8192 x 8192 rgb8 would need 192 MiB; the check must fail on the short data first
    with pytest.raises(ImageDecodeError, match='fewer than'):
        decode_image('rgb8', 8192, 8192, 8192 * 3, b'\x00' * 16)
    with pytest.raises(ImageDecodeError, match='larger than the 64 px'):
        decode_image('rgb8', 65, 1, 3, b'\x00' * 195, max_side=64)


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_non_finite_float_images_are_rejected(bad):
    values = np.zeros((2, 2), np.float32)
    values[1, 0] = bad
    with pytest.raises(ImageDecodeError, match='1 non-finite'):
        decode_image('32FC1', 2, 2, 8, values.tobytes())
    with pytest.raises(ImageEncodingError, match='finite'):
        encode_image(values, '32FC1')
    with pytest.raises(ImageEncodingError, match='finite'):
        encode_image(np.stack([values] * 3, axis=2), 'rgb8')


def test_encode_rejects_unknown_encoding_and_bad_shapes():
    with pytest.raises(ImageEncodingError, match='encoding'):
        encode_image(_rgb(), 'jpeg')
    with pytest.raises(ImageEncodingError, match='shape'):
        encode_image(np.zeros((2, 2, 2), np.float32), 'rgb8')
    with pytest.raises(ImageEncodingError, match='empty'):
        encode_image(np.zeros((0, 2, 3), np.float32), 'rgb8')
    with pytest.raises(ImageEncodingError, match='one channel'):
        encode_image(_rgb(), '32FC1')
    with pytest.raises(ImageEncodingError, match=r'\[0, 255\]'):
        encode_image(np.full((1, 1), 300, np.int32), 'mono8')
    assert issubclass(ImageDecodeError, ValueError)
