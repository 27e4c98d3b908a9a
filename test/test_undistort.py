"""Lens models and undistortion maps: conversions, validation, and maps that invert."""
import cv2
import numpy as np
import pytest

from igspad_ros.core.undistort import (NO_DISTORTION, Distortion, distortion_from_ros,
                                       distortion_maps, distortion_to_ros, remap,
                                       undistortion_maps)

K = np.array([[110.0, 0.0, 83.0], [0.0, 104.0, 58.0], [0.0, 0.0, 1.0]])
SIZE = (160, 120)
LENSES = [Distortion('radtan', (-0.2, 0.05, 0.001, -0.002, 0.0)),
          Distortion('rational', (-0.2, 0.05, 0.001, -0.002, 0.0, 0.01, 0.0, 0.0)),
          Distortion('fisheye', (0.05, -0.01, 0.002, 0.0))]


def test_distortion_pads_checks_and_converts():
    assert Distortion('radtan', (-0.1,)).coeffs == (-0.1, 0.0, 0.0, 0.0, 0.0)
    assert NO_DISTORTION.is_identity and not LENSES[0].is_identity
    assert LENSES[2].as_dict() == {'model': 'fisheye', 'coeffs': [0.05, -0.01, 0.002, 0.0]}
    with pytest.raises(ValueError, match="'kannala' is not one of"):
        Distortion('kannala', ())
    with pytest.raises(ValueError, match='needs 4 finite coefficients'):
        Distortion('fisheye', (0.1, 0.0, 0.0, 0.0, 0.2))
    assert distortion_from_ros('plumb_bob', [-0.2, 0.05, 0.001, -0.002, 0.0]) == LENSES[0]
    assert distortion_from_ros('equidistant', [0.05, -0.01, 0.002, 0.0]) == LENSES[2]
    assert distortion_from_ros('rational_polynomial', LENSES[1].coeffs) == LENSES[1]
    assert distortion_from_ros('anything', []) == NO_DISTORTION
    with pytest.raises(ValueError, match="distortion_model 'fov' is not one of"):
        distortion_from_ros('fov', [0.1])
    with pytest.raises(ValueError, match='plumb_bob takes 5 coefficients, d has 8'):
        distortion_from_ros('plumb_bob', [0.1] * 8)
    assert distortion_to_ros(LENSES[1]) == ('rational_polynomial', list(LENSES[1].coeffs))
    assert distortion_to_ros(NO_DISTORTION) == ('plumb_bob', [0.0] * 5)


@pytest.mark.parametrize('lens', LENSES, ids=lambda d: d.model)
def test_undistortion_and_distortion_maps_invert_each_other(lens):
    forward = undistortion_maps(K, lens, SIZE)
    back = distortion_maps(K, lens, SIZE, K, SIZE)
    # pinhole pixel -> where it lies in the photo -> back to the pinhole: the identity
    x = cv2.remap(back.map_x, forward.map_x, forward.map_y, cv2.INTER_LINEAR)
    y = cv2.remap(back.map_y, forward.map_x, forward.map_y, cv2.INTER_LINEAR)
    gx, gy = np.meshgrid(np.arange(SIZE[0]), np.arange(SIZE[1]))
    inner = np.s_[5:-5, 5:-5]
    assert forward.valid.all()     # barrel lenses: every pinhole pixel has a source
    assert np.abs(x - gx)[inner].max() < 0.005 and np.abs(y - gy)[inner].max() < 0.005
    assert 0.7 < back.valid.mean() < 0.9   # the photo sees more than the pinhole frame
    np.testing.assert_array_equal(forward.K, K)


def test_identity_lens_maps_every_pixel_onto_itself_in_our_convention():
    maps = undistortion_maps(K, NO_DISTORTION, SIZE)
    gx, gy = np.meshgrid(np.arange(SIZE[0]), np.arange(SIZE[1]))
    np.testing.assert_allclose(maps.map_x, gx, atol=1e-4)
    np.testing.assert_allclose(maps.map_y, gy, atol=1e-4)
    image = np.random.default_rng(0).random((SIZE[1], SIZE[0], 3)).astype(np.float32)
    np.testing.assert_allclose(remap(image, maps), image, atol=1e-4)


def test_pincushion_marks_the_corners_invalid():
    maps = undistortion_maps(K, Distortion('radtan', (0.3,)), SIZE)
    assert not maps.valid[0, 0] and not maps.valid[-1, -1] and maps.valid[60, 80]
    photo = np.ones((SIZE[1], SIZE[0]), np.float32)
    out = remap(photo, maps, fill=0.0)
    assert out[0, 0] == 0.0 and out[60, 80] == 1.0
