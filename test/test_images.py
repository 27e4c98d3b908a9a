"""The one check of RGB image arrays that the core's entry points share."""
import numpy as np
import pytest

from igspad_ros.core.igs import invert_pose
from igspad_ros.core.images import MAX_IMAGE_SIDE, check_rgb
from igspad_ros.core.matching import make_matcher


def test_check_rgb_returns_contiguous_float32():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(3, 2, 3).transpose(1, 0, 2)
    out = check_rgb(image, 'who')
    assert out.dtype == np.float32 and out.flags['C_CONTIGUOUS'] and out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize('shape, min_side, message', [
    ((4, 4), 1, 'who: image must be (H, W, 3) RGB, got shape (4, 4)'),
    ((4, 4, 4), 1, 'who: image must be (H, W, 3) RGB, got shape (4, 4, 4)'),
    ((7, 9, 3), 8, 'who: image size 9x7 out of range: each side must lie in [8, 8192]'),
    ((1, MAX_IMAGE_SIDE + 1, 3), 1,
     'who: image size 8193x1 out of range: each side must lie in [1, 8192]')])
def test_check_rgb_names_the_caller_and_the_problem(shape, min_side, message):
    with pytest.raises(ValueError) as info:
        check_rgb(np.zeros(shape, np.uint8), 'who', min_side)
    assert str(info.value) == message


def test_entry_points_use_it():
    with pytest.raises(ValueError, match=r'^matcher: image must be \(H, W, 3\) RGB'):
        make_matcher('sift').extract(np.zeros((16, 16), np.float32))
    with pytest.raises(ValueError, match=r'^invert_pose: image size 4x4 out of range'):
        invert_pose(None, np.zeros((4, 4, 3), np.float32), np.eye(4), np.eye(3))
