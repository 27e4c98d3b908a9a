"""Real cameras' CameraInfo for the inspector node, without DDS.

CameraInfo -> intrinsics and Distortion, the pairing of images with the CameraInfo of their
stamp (``ros/pairing.py``), the per-camera map cache of ``ros/rectify.py``, its two warps,
and the bag's CameraInfo.

The node itself with a distorted camera (pose, verdict and map against a pinhole twin) is
``test_inspector_node.py::test_a_distorted_image_gets_the_pose_and_verdict_of_its_pinhole_twin``.
"""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from igspad_ros.core import cameras, undistort
from igspad_ros.data.bags import camera_info_message
from igspad_ros.ros import conversions
from igspad_ros.ros.pairing import (BAD_CAMERA_INFO, NO_CAMERA_INFO, BadCameraInfo,
                                    CameraInfoPairing, Paired)
from igspad_ros.ros.rectify import Rectifier

SIZE = (80, 60)
K = np.array([[70.0, 0.0, 41.0], [0.0, 72.0, 29.5], [0.0, 0.0, 1.0]])
LENSES = {
    'plumb_bob': [-0.15, 0.03, 0.002, -0.001, 0.0],
    'rational_polynomial': [0.4, -0.2, 0.001, 0.002, 0.01, 0.6, -0.15, 0.02],
    'equidistant': [0.05, -0.02, 0.004, -0.001],
}
MODELS = {'plumb_bob': 'radtan', 'rational_polynomial': 'rational', 'equidistant': 'fisheye'}


def _info(model, d, k=None):
    return CameraInfo(width=SIZE[0], height=SIZE[1], distortion_model=model, d=list(d),
                      k=(cameras.k_to_ros(K).reshape(-1) if k is None else k).tolist())


@pytest.mark.parametrize('model', sorted(LENSES))
def test_camera_info_gives_the_lens_model(model):
    distortion = conversions.camera_info_distortion(_info(model, LENSES[model]))
    assert distortion == undistort.Distortion(MODELS[model], LENSES[model])
    assert not distortion.is_identity
    K_info, size = conversions.camera_info_intrinsics(_info(model, LENSES[model]))
    np.testing.assert_allclose(K_info, K)
    assert size == SIZE


def test_empty_or_zero_d_is_a_pinhole_and_bad_camera_info_is_refused():
    for model, d in (('', []), ('plumb_bob', [0.0] * 5), ('equidistant', [0.0] * 4),
                     ('kannala_brandt', [0.0] * 4)):
        assert conversions.camera_info_distortion(_info(model, d)) is undistort.NO_DISTORTION
        assert Rectifier().maps(K, undistort.NO_DISTORTION, SIZE) is None    # no remap
    with pytest.raises(ValueError, match="distortion_model 'kannala_brandt'"):
        conversions.camera_info_distortion(_info('kannala_brandt', [0.1, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match='plumb_bob takes 5 coefficients'):
        conversions.camera_info_distortion(_info('plumb_bob', [0.1] * 8))
    with pytest.raises(ValueError, match='k is all zero'):
        conversions.camera_info_intrinsics(_info('plumb_bob', [], k=np.zeros(9)))


def test_camera_info_k_is_in_pixel_edges_and_rescales_with_the_image():
    # CameraInfo puts pixel centres at integers; the node works in pixel-edge coordinates
    camera = conversions.camera_info_intrinsics(_info('plumb_bob', []))
    np.testing.assert_array_equal(camera[0], cameras.k_from_ros(cameras.k_to_ros(K)))
    half = conversions.intrinsics_for(SIZE[0] // 2, SIZE[1] // 2, None, None, camera)
    np.testing.assert_allclose(half, cameras.scale_intrinsics(K, SIZE, (40, 30)))
    assert half[0, 0] == 35.0 and half[1, 2] == 14.75


def test_images_pair_with_the_camera_info_of_their_stamp():
    pairing = CameraInfoPairing(cache_size=3, pending_size=2)
    assert pairing.add_image(5, 'before any') == [Paired('before any', None)]   # scene K
    assert pairing.add_info(10, 'A') == [] and pairing.expected
    assert pairing.add_image(10, 'exact') == [Paired('exact', 'A')]
    assert pairing.add_image(20, 'early') == [] and pairing.pending == 1       # waits
    assert pairing.add_info(20, 'B') == [Paired('early', 'B')]
    # a stamp between two CameraInfos never gets one: rejected at once
    assert pairing.add_image(15, 'between') == [Paired('between', None, NO_CAMERA_INFO)]
    # waiting images settle when a CameraInfo past them arrives, in arrival order
    assert pairing.add_image(30, 'w30') == [] and pairing.add_image(25, 'w25') == []
    assert pairing.add_info(30, 'C') == [Paired('w30', 'C'),
                                         Paired('w25', None, NO_CAMERA_INFO)]
    # bounded: the oldest CameraInfo goes; the oldest waiting image gives up
    pairing.add_info(40, 'D')
    assert pairing.add_image(10, 'evicted') == [Paired('evicted', None, NO_CAMERA_INFO)]
    assert [pairing.add_image(s, s) for s in (41, 42, 43)] == [[], [], [Paired(
        41, None, NO_CAMERA_INFO)]]
    bad = BadCameraInfo('camera_info: k is all zero (an uncalibrated camera)')
    assert pairing.add_info(42, bad) == [Paired(42, bad, BAD_CAMERA_INFO)]
    assert pairing.reset() == [43] and not pairing.expected and pairing.pending == 0


def test_the_tolerance_pairs_the_nearest_camera_info_within_it():
    pairing = CameraInfoPairing(tolerance_ns=3)
    pairing.add_info(100, 'A')
    pairing.add_info(110, 'B')
    assert pairing.add_image(103, 'a') == [Paired('a', 'A')]
    assert pairing.add_image(108, 'b') == [Paired('b', 'B')]
    assert pairing.add_image(105, 'c') == [Paired('c', None, NO_CAMERA_INFO)]   # 5 from both
    assert pairing.add_image(112, 'd') == [Paired('d', 'B')]
    assert pairing.add_image(120, 'e') == []
    assert pairing.add_info(122, 'C') == [Paired('e', 'C')]
    required = CameraInfoPairing(required=True)
    assert required.expected and required.add_image(1, 'x') == []             # waits
    assert required.add_info(1, 'A') == [Paired('x', 'A')]


def test_maps_are_cached_per_camera_values_and_bounded():
    rectifier = Rectifier(capacity=2)
    lens = LENSES['plumb_bob']

    def maps(d, k=K, size=SIZE):
        # a new message and new arrays every time, as a driver publishing with each image
        info = _info('plumb_bob', d, cameras.k_to_ros(k).reshape(-1))
        return rectifier.maps(conversions.camera_info_intrinsics(info)[0],
                              conversions.camera_info_distortion(info), size)

    first = maps(lens)
    assert maps(lens) is first and (rectifier.hits, rectifier.misses) == (1, 1)
    changed_d = maps([lens[0] + 1e-3] + lens[1:])
    assert changed_d is not first and rectifier.misses == 2
    assert maps(lens, size=(40, 30)) is not first            # another size: other maps
    assert len(rectifier) == 2 and rectifier.misses == 3     # the oldest went ...
    assert maps([lens[0] + 1e-3] + lens[1:]) is changed_d
    again = maps(lens)
    assert again is not first and rectifier.misses == 4      # ... and is rebuilt
    np.testing.assert_array_equal(again.undistort.map_x, first.undistort.map_x)
    assert maps(lens, k=K + np.diag([1e-6, 0.0, 0.0])) is not again   # another K
    assert len(rectifier) == 2 and rectifier.misses == 5


@pytest.mark.parametrize('model', sorted(LENSES))
def test_the_warps_bring_a_photo_to_its_pinhole_and_a_map_back(model):
    # a smooth pinhole scene on a canvas with margin; the photo is it seen through the lens
    distortion = conversions.camera_info_distortion(_info(model, LENSES[model]))
    margin = 30
    canvas_K = K.copy()
    canvas_K[:2, 2] += margin
    canvas = (SIZE[0] + 2 * margin, SIZE[1] + 2 * margin)
    y, x = np.mgrid[0:canvas[1], 0:canvas[0]].astype(np.float32)
    scene = np.stack([0.5 + 0.4 * np.sin(x / 7.0), 0.5 + 0.4 * np.cos(y / 5.0),
                      0.5 + 0.4 * np.sin((x + y) / 9.0)], -1).astype(np.float32)
    lens = undistort.distortion_maps(K, distortion, SIZE, canvas_K, canvas)
    assert lens.valid.all()
    photo = undistort.remap(scene, lens)
    pinhole = scene[margin:-margin, margin:-margin]
    maps = Rectifier().maps(K, distortion, SIZE)
    rectified = maps.to_pinhole(photo)
    inner = _inside(maps.undistort.valid)
    assert inner.mean() > 0.5
    assert np.abs(rectified - pinhole)[inner].max() < 0.02
    # a map of the pinhole comes back in the photo's geometry, 0 where it has no source
    amap = pinhole[..., 0]
    back = maps.to_input(amap)
    assert back.shape == photo.shape[:2] and (back[~maps.distort.valid] == 0).all()
    seen = _inside(maps.distort.valid)
    assert seen.mean() > 0.5 and np.abs(back - photo[..., 0])[seen].max() < 0.02


def _inside(valid):
    """``valid`` less 2 px at its edges and the image's (what bilinear taps reach beyond)."""
    inner = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    inner[:2], inner[-2:], inner[:, :2], inner[:, -2:] = False, False, False, False
    return inner


def test_bag_camera_info_carries_the_distortion():
    plain = camera_info_message(K, *SIZE, 0)
    assert plain.distortion_model == 'plumb_bob' and list(plain.d) == [0.0] * 5
    for model, d in LENSES.items():
        msg = camera_info_message(K, *SIZE, 0, distortion=undistort.Distortion(MODELS[model],
                                                                               d))
        assert msg.distortion_model == model and list(msg.d) == d
        assert conversions.camera_info_distortion(msg) == undistort.Distortion(MODELS[model],
                                                                               d)
