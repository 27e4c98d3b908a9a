"""Retrieval of the initial pose (paper 3.2.2) on the synthetic category."""
import numpy as np
import pytest

from igspad_ros.core import cameras
from igspad_ros.core.matching import MatcherConfig, make_matcher
from igspad_ros.core.retrieval import RetrievalIndex, RetrievalIndexError

ELEVATION_STEP_DEG = 105.0 / 13.0   # 14 rings from -30 to 75 degrees
AZIMUTH_STEP_DEG = 24.0             # 15 azimuths


@pytest.fixture(scope='module')
def index(synthetic_category):
    """Index over all 210 training views with the default matcher."""
    views = synthetic_category.train
    return RetrievalIndex.build([v.image for v in views], [v.viewmat for v in views],
                                make_matcher(), shortlist=16)


def _elevation_azimuth(viewmat):
    c = cameras.camera_center(viewmat)
    return (np.degrees(np.arcsin(c[2] / np.linalg.norm(c))),
            np.degrees(np.arctan2(c[1], c[0])))


def _grid_steps(viewmat_a, viewmat_b):
    """(elevation, azimuth) difference of two cameras in grid steps."""
    ea, aa = _elevation_azimuth(viewmat_a)
    eb, ab = _elevation_azimuth(viewmat_b)
    d_az = abs((aa - ab + 180.0) % 360.0 - 180.0)
    return abs(ea - eb) / ELEVATION_STEP_DEG, d_az / AZIMUTH_STEP_DEG


def test_training_view_retrieves_itself(index, synthetic_category):
    for view_id in (3, 100, 200):
        best = index.query(synthetic_category.train[view_id].image)[0]
        assert best.view_id == view_id
        np.testing.assert_array_equal(best.viewmat, synthetic_category.train[view_id].viewmat)


def test_good_test_images_retrieve_a_neighbouring_view(index, synthetic_category):
    good = [t for t in synthetic_category.test if t.defect_type == 'good'][:3]
    assert len(good) == 3
    for test in good:
        best = index.query(test.image)[0]
        d_elev, d_az = _grid_steps(best.viewmat, test.true_viewmat)
        assert d_elev <= 1.0 and d_az <= 1.0, (test.rel_path, d_elev, d_az)


def test_shortlist_picks_the_same_view_as_matching_all(index, synthetic_category):
    for test in synthetic_category.test[4:5]:
        full = index.query(test.image, top_k=1, shortlist=0)[0]
        short = index.query(test.image, top_k=1)[0]
        assert (short.view_id, short.n_matches) == (full.view_id, full.n_matches)


def test_top_k_is_sorted_and_diverse_starts_are_apart(index, synthetic_category):
    test = synthetic_category.test[0]
    cands = index.query(test.image, top_k=4)
    assert len(cands) == 4
    counts = [c.n_matches for c in cands]
    assert counts == sorted(counts, reverse=True)
    apart = index.query(test.image, top_k=3, min_angle_deg=60.0)
    centres = [cameras.camera_center(c.viewmat) for c in apart]
    for i in range(3):
        for j in range(i):
            cos = centres[i] @ centres[j] / np.linalg.norm(centres[i]) / np.linalg.norm(centres[j])
            assert np.degrees(np.arccos(np.clip(cos, -1, 1))) >= 60.0


def test_save_load_round_trip(index, synthetic_category, tmp_path):
    path = tmp_path / 'scene.index.npz'
    index.save(path)
    with np.load(path, allow_pickle=False) as z:
        assert z['viewmats'].shape == (210, 4, 4)
    loaded = RetrievalIndex.load(path, index.matcher, shortlist=16)
    for a, b in zip(index.features[::50], loaded.features[::50]):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.descriptors, b.descriptors)
    test = synthetic_category.test[1]
    assert index.query(test.image)[0].view_id == loaded.query(test.image)[0].view_id


def test_load_rejects_other_matcher_and_corrupt_files(index, tmp_path):
    path = tmp_path / 'scene.index.npz'
    index.save(path)
    with pytest.raises(RetrievalIndexError, match='built with matcher'):
        RetrievalIndex.load(path, make_matcher('sift'))
    with pytest.raises(RetrievalIndexError, match='built with matcher'):
        RetrievalIndex.load(path, make_matcher(config=MatcherConfig(max_keypoints=64)))
    bad = tmp_path / 'bad.index.npz'
    bad.write_bytes(b'not an npz')
    with pytest.raises(RetrievalIndexError, match='unreadable'):
        RetrievalIndex.load(bad, index.matcher)
