"""IGS (paper 3.2): eq. (4), the MPS map, and pose recovery on the trained synthetic scene."""
import numpy as np
import pytest
import torch

from igspad_ros.core import cameras
from igspad_ros.core.igs import IGSConfig, invert_pose, masked_l1_loss, mps_weight_map
from igspad_ros.core.matching import make_matcher
from igspad_ros.core.scene import GaussianScene


@pytest.fixture(scope='module')
def scene(trained_scene_path):
    """The session's trained synthetic scene."""
    return GaussianScene.load_ply(trained_scene_path)


@pytest.fixture(scope='module')
def matcher():
    """The default matcher."""
    return make_matcher()


@pytest.fixture(scope='module')
def good_image(synthetic_category):
    """The first normal test image (it has a ground-truth viewmat)."""
    return next(t for t in synthetic_category.test if t.defect_type == 'good')


def test_mps_weight_map_marks_pixels_within_k_of_the_points():
    # a point at the centre of pixel (row 5, col 10): radius 1 reaches its 4 neighbours
    w = mps_weight_map(np.array([[10.5, 5.5], [-3.0, -3.0]]), 12, 16, 1.0)
    expected = np.zeros((12, 16), np.float32)
    expected[5, 9:12] = 1.0
    expected[4, 10] = expected[6, 10] = 1.0
    np.testing.assert_array_equal(w, expected)
    corner = mps_weight_map(np.array([[0.0, 0.0]]), 4, 4, 2.2)
    assert corner.sum() == 4.0 and corner[:2, :2].all()
    # a floor weighs the unmatched pixels instead of dropping them
    soft = mps_weight_map(np.array([[10.5, 5.5]]), 12, 16, 1.0, floor=0.2)
    np.testing.assert_array_equal(soft, np.where(expected > 0, 1.0, 0.2).astype(np.float32))
    with pytest.raises(ValueError, match='mps_floor'):
        IGSConfig(mps_floor=1.5)


def test_masked_l1_loss_is_eq4():
    target = torch.ones(4, 4, 3)
    rendered = torch.zeros(2, 4, 4, 3)
    rendered[1] = 0.5
    weight = torch.zeros(2, 4, 4)
    weight[:, :2, :2] = 1.0
    loss = masked_l1_loss(rendered, target, weight)
    np.testing.assert_allclose(loss.numpy(), [4.0 / 16.0, 2.0 / 16.0])


def test_config_and_inputs_are_checked(good_image, synthetic_category):
    with pytest.raises(ValueError, match='lr'):
        IGSConfig(lr=0.0)
    with pytest.raises(ValueError, match='pivot'):
        IGSConfig(pivot='elsewhere')
    with pytest.raises(ValueError, match='needs a matcher'):
        invert_pose(None, good_image.image, good_image.true_viewmat, synthetic_category.K)
    with pytest.raises(ValueError, match='n_hypotheses'):
        invert_pose(None, good_image.image, np.stack([good_image.true_viewmat] * 2),
                    synthetic_category.K, IGSConfig(mps=False))


def test_igs_recovers_a_perturbed_pose(scene, matcher, good_image, synthetic_category):
    rng = np.random.default_rng(0)
    start = cameras.perturb_viewmat(good_image.true_viewmat, 10.0, 0.10, rng)
    est = invert_pose(scene, good_image.image, start, synthetic_category.K, IGSConfig(),
                      matcher=matcher)
    assert cameras.rotation_error_deg(est.viewmat, good_image.true_viewmat) < 1.0
    assert cameras.translation_error_rel(est.viewmat, good_image.true_viewmat) < 0.01
    assert est.converged and est.steps < 300
    assert est.n_matches[0] >= 20


def test_multi_hypothesis_keeps_the_start_that_fits(scene, matcher, good_image,
                                                    synthetic_category):
    rng = np.random.default_rng(1)
    near = cameras.perturb_viewmat(good_image.true_viewmat, 5.0, 0.05, rng)
    far = cameras.look_at(-cameras.camera_center(good_image.true_viewmat))   # the back side
    config = IGSConfig(steps=40, lr_decay_step=30, n_hypotheses=2, trace=True)
    est = invert_pose(scene, good_image.image, [far, near], synthetic_category.K, config,
                      matcher=matcher)
    assert est.hypothesis == 1
    start_error = cameras.rotation_error_deg(near, good_image.true_viewmat)
    assert cameras.rotation_error_deg(est.viewmat, good_image.true_viewmat) < 0.8 * start_error
    assert len(est.trace) == est.steps and len(est.trace[0]['loss']) == 2


def test_a_large_image_is_inverted_at_the_scenes_size(scene, good_image, synthetic_category):
    # The 64 px scene seen in a 2x image: IGS works at 64 px (the image area-averaged back),
    # so it reaches exactly the pose it reaches on the 64 px image, at the same cost.
    h, w = good_image.image.shape[:2]
    large = np.repeat(np.repeat(good_image.image, 2, axis=0), 2, axis=1)
    K2 = cameras.scale_intrinsics(synthetic_category.K, (w, h), (2 * w, 2 * h))
    start = cameras.perturb_viewmat(good_image.true_viewmat, 10.0, 0.10,
                                    np.random.default_rng(0))
    config = IGSConfig(steps=60, lr_decay_step=40, mps=False)     # CPU default, MPS aside
    small = invert_pose(scene, good_image.image, start, synthetic_category.K, config,
                        scene_size=w)
    big = invert_pose(scene, large, start, K2, config, scene_size=w)
    np.testing.assert_allclose(big.viewmat, small.viewmat, atol=1e-6)
    assert big.steps == small.steps and big.loss == pytest.approx(small.loss, abs=1e-7)
    assert cameras.rotation_error_deg(big.viewmat, good_image.true_viewmat) < 1.0   # 0.62
    assert cameras.translation_error_rel(big.viewmat, good_image.true_viewmat) < 0.01  # 0.009
    # without the scene's size the renders are the input's: another optimisation path
    full = invert_pose(scene, large, start, K2, config)
    assert np.abs(full.viewmat - small.viewmat).max() > 1e-5
