"""Inspection region: parsing, projection into an image, the default box from 3D points."""
import numpy as np
import pytest

from igspad_ros.core import cameras
from igspad_ros.core.roi import (RegionOfInterest, RoiError, estimate_roi, marker_scene,
                                 visible_region)
from igspad_ros.core.scene import GaussianScene

K = np.array([[100.0, 0.0, 32.0], [0.0, 100.0, 32.0], [0.0, 0.0, 1.0]])
UNIT = RegionOfInterest((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))


def test_parse_and_round_trip():
    roi = RegionOfInterest.parse(' -1, -2,-3, 1,2, 3 ')
    assert roi.lo == (-1.0, -2.0, -3.0) and roi.hi == (1.0, 2.0, 3.0)
    assert RegionOfInterest.parse(roi.as_list()) == roi


@pytest.mark.parametrize('text, message', [
    ('1,2,3,4,5', "roi: '1,2,3,4,5' has 5 numbers; need six: xmin,ymin,zmin,xmax,ymax,zmax"),
    ('a,b,c,d,e,f', "roi: 'a,b,c,d,e,f' is not six numbers xmin,ymin,zmin,xmax,ymax,zmax"),
    ('0,0,0,1,1,0', 'roi: the minimum corner (0.0, 0.0, 0.0) must be below the maximum '
                    '(1.0, 1.0, 0.0) on every axis'),
])
def test_parse_errors_name_the_input(text, message):
    with pytest.raises(RoiError) as err:
        RegionOfInterest.parse(text)
    assert str(err.value) == message


def test_estimate_ignores_points_the_cameras_do_not_frame():
    rng = np.random.default_rng(0)
    obj = rng.uniform((-0.6, -0.4, -0.2), (0.6, 0.4, 0.2), size=(3000, 3))
    walls = rng.uniform(-8.0, 8.0, size=(3000, 3))
    walls = walls[np.linalg.norm(walls, axis=1) > 6.0]
    eyes = [(4 * np.cos(a), 4 * np.sin(a), 1.5) for a in np.linspace(0, 2 * np.pi, 12)]
    viewmats = [cameras.look_at(e) for e in eyes]
    roi = estimate_roi(np.concatenate([obj, walls]), viewmats, K, (64, 64))
    # the object's 1st..99th percentiles, padded by a tenth of their extent; no wall point
    lo, hi = np.percentile(obj, 1, axis=0), np.percentile(obj, 99, axis=0)
    np.testing.assert_allclose(roi.lo, lo - 0.1 * (hi - lo), rtol=0, atol=1e-12)
    np.testing.assert_allclose(roi.hi, hi + 0.1 * (hi - lo), rtol=0, atol=1e-12)
    np.testing.assert_allclose(roi.hi, (0.70, 0.47, 0.235), atol=0.02)
    with pytest.raises(RoiError, match='only 0 scene points lie within'):
        estimate_roi(walls, viewmats, K, (64, 64))
    # points weighted below one half (transparent Gaussians) do not count
    half = estimate_roi(obj, viewmats, K, (64, 64), weights=(obj[:, 0] < 0) * 1.0)
    assert half.hi[0] < 0.07 and half.lo == pytest.approx(roi.lo, abs=0.07)


def test_a_table_under_the_object_becomes_the_support_plane():
    rng = np.random.default_rng(1)
    obj = rng.uniform((-0.5, -0.4, 0.0), (0.5, 0.4, 0.5), size=(1500, 3))
    radius = np.sqrt(rng.uniform(0, 1, 3000)) * 2.5
    angle = rng.uniform(0, 2 * np.pi, 3000)
    table = np.stack([radius * np.cos(angle), radius * np.sin(angle), np.zeros(3000)], 1)
    eyes = [(3.5 * np.cos(a), 3.5 * np.sin(a), 1.5) for a in np.linspace(0, 2 * np.pi, 12)]
    viewmats = [cameras.look_at(e, target=(0.0, 0.0, 0.25)) for e in eyes]
    roi = estimate_roi(np.concatenate([obj, table]), viewmats, K, (64, 64))
    # the object's lowest points join the inliers: the fit is off by a hair
    np.testing.assert_allclose(roi.plane, (0.0, 0.0, 1.0, 0.0), atol=1e-3)
    # the box holds the object only: the table's points are left out
    assert roi.lo[2] > -0.06 and roi.hi[2] == pytest.approx(0.545, abs=0.01)
    assert RegionOfInterest.parse(roi.as_list()) == roi
    # the object alone has no support plane (its own flat top is no table)
    assert estimate_roi(obj, viewmats, K, (64, 64)).plane is None


def test_visible_region_is_where_the_boxed_gaussians_show():
    # two opaque Gaussians: one in the box, one outside it and in front of nothing
    scene = GaussianScene.from_points(np.array([[0.0, 0.0, 0.0], [0.0, 1.2, 0.0]]),
                                      np.full((2, 3), 0.5), sh_degree=0, scale=0.15,
                                      opacity=0.99)
    viewmat = cameras.look_at((0.0, 0.0, 4.0), up=(0.0, 1.0, 0.0))
    region = visible_region(marker_scene(scene, UNIT), viewmat, K, 64, 64)
    assert region[32, 32] and not region[32, 2]
    # the outside Gaussian projects 30 px up from the centre: not in the region
    assert not region[2, 32]
    # dilated by long side / 32 = 2 px around the half-opacity disc
    assert 120 < region.sum() < 400
