"""IGS on the held-out object family: a LEGO-like animal this project was not tuned on.

The animal (development seed 1, a quadruped with thin legs, near mirror-symmetric) gets
its own small scene, trained as the session's brick scene is (1000 steps) but at 96 px: at
64 px the animal's pose is only known to a third of a pixel, and IGS from every start and
in every variant tried ended 1.04 to 1.15 % away (the 64 px scene fitted the image better
at the IGS pose than at the true one).
"""
import numpy as np
import pytest

from igspad_ros.core import cameras
from igspad_ros.core.igs import IGSConfig, invert_pose
from igspad_ros.core.matching import make_matcher
from igspad_ros.data.mad import load_category
from igspad_ros.data.synthetic import make_category
from igspad_ros.data.synthetic_animals import DEVELOPMENT_SEEDS, animal_kind

from conftest import train_small_scene


@pytest.fixture(scope='module')
def animal(tmp_path_factory):
    """(loaded category, trained scene) of the development animal, 96 px, 210 views."""
    seed = DEVELOPMENT_SEEDS[1]
    root = make_category(tmp_path_factory.mktemp('animal'), 'animal', size=96, n_train=210,
                         n_test=4, seed=seed, family='animal')
    cat = load_category(root)
    scene, report = train_small_scene(cat)
    assert report.psnr > 25.0
    return cat, scene


def test_igs_recovers_the_animal_pose_from_10_degrees(animal):
    cat, scene = animal
    assert animal_kind(DEVELOPMENT_SEEDS[1]) == 'quadruped'
    good = next(t for t in cat.test if t.defect_type == 'good')
    start = cameras.perturb_viewmat(good.true_viewmat, 10.0, 0.10, np.random.default_rng(0))
    est = invert_pose(scene, good.image, start, cat.K, IGSConfig(), matcher=make_matcher())
    # measured: 0.34 degrees, 0.54 % (96 px scene, 30.5 dB held out)
    assert cameras.rotation_error_deg(est.viewmat, good.true_viewmat) < 1.0
    assert cameras.translation_error_rel(est.viewmat, good.true_viewmat) < 0.01
