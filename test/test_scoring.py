"""Eq. (5) anomaly map, eq. (6) image score and threshold calibration, on exact numbers."""
import numpy as np
import pytest
import torch

from igspad_ros.core.scoring import (anomaly_map, calibrate_threshold, gaussian_smooth,
                                     image_score)


def test_anomaly_map_is_one_minus_cosine():
    # three cells: same direction (any length), orthogonal, opposite
    ft = torch.tensor([[[1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0]]])         # (C=2, h=1, w=3)
    fr = torch.tensor([[[3.0, 0.0, -2.0]], [[0.0, 5.0, 0.0]]])
    amap = anomaly_map(ft, fr, sigma=0)
    assert amap.shape == (1, 3)
    assert amap.numpy() == pytest.approx(np.array([[0.0, 1.0, 2.0]]), abs=1e-6)
    ft45 = torch.tensor([[[1.0]], [[1.0]]])
    fr0 = torch.tensor([[[1.0]], [[0.0]]])
    assert float(anomaly_map(ft45, fr0, sigma=0)) == pytest.approx(1 - np.sqrt(0.5), abs=1e-6)


def test_anomaly_map_upsamples_bilinearly_to_the_image():
    ft = torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]]])     # (2, 1, 2): scores 0 and 1
    fr = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    amap = anomaly_map(ft, fr, size=(2, 4), sigma=0)
    # align_corners=False: output x centres at 0.25, 0.75, 1.25, 1.75 of the input cells
    assert amap.numpy() == pytest.approx(np.array([[0.0, 0.25, 0.75, 1.0]] * 2), abs=1e-6)


def test_anomaly_map_batch_and_smoothing():
    rng = np.random.default_rng(0)
    ft = torch.from_numpy(rng.standard_normal((2, 8, 6, 6)).astype(np.float32))
    amap = anomaly_map(ft, ft.clone(), size=(24, 24))
    assert amap.shape == (2, 24, 24) and float(amap.abs().max()) < 1e-5
    fr = torch.from_numpy(rng.standard_normal((2, 8, 6, 6)).astype(np.float32))
    raw = anomaly_map(ft, fr, size=(24, 24), sigma=0)
    smooth = anomaly_map(ft, fr, size=(24, 24), sigma=2.0)
    assert float(smooth.std()) < 0.8 * float(raw.std())
    assert float(smooth.mean()) == pytest.approx(float(raw.mean()), rel=0.05)
    with pytest.raises(ValueError, match='of one shape'):
        anomaly_map(ft, fr[:, :4])


def test_gaussian_smooth_keeps_constants_and_mass():
    const = torch.full((1, 9, 9), 0.7)
    assert gaussian_smooth(const, 1.5).numpy() == pytest.approx(np.full((1, 9, 9), 0.7), abs=1e-6)
    spike = torch.zeros((1, 41, 41))
    spike[0, 20, 20] = 1.0
    out = gaussian_smooth(spike, 2.0)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-4)
    # the 1D Gaussian at its centre is 1 / (sqrt(2 pi) sigma); the 2D peak is its square
    assert float(out[0, 20, 20]) == pytest.approx(1.0 / (2 * np.pi * 4.0), rel=1e-3)


def test_image_score_is_max_of_average_pool():
    amap = np.zeros((8, 8), np.float32)
    amap[3, 4] = 1.0
    amap[6:8, 0:2] = 0.5
    assert image_score(amap, pool_size=1) == pytest.approx(1.0)
    assert image_score(amap, pool_size=2) == pytest.approx(0.5)      # the 2x2 block of 0.5
    assert image_score(amap, pool_size=3) == pytest.approx(2.0 / 9.0)  # 4 x 0.5 in one window
    assert image_score(torch.from_numpy(amap), pool_size=100) == pytest.approx(3.0 / 64.0)
    # default pool: long side / 16 -> 1 px on an 8 px map
    assert image_score(amap) == pytest.approx(1.0)
    with pytest.raises(ValueError, match='pool_size'):
        image_score(amap, pool_size=0)


def test_calibrate_threshold_median_plus_k_robust_std():
    # median 2.5, MAD 1 -> sigma 1.4826
    assert calibrate_threshold([1.0, 2.0, 3.0, 8.0]) == pytest.approx(2.5 + 3 * 1.4826)
    assert calibrate_threshold([1.0, 2.0, 3.0, 8.0], k=1.0) == pytest.approx(3.9826)
    # k = 3 would be 6.45, above every normal score: the highest of them is the threshold
    assert calibrate_threshold([1.0, 2.0, 3.0]) == pytest.approx(3.0)
    # but not below median + k * the floored sigma (1.3 x the median at k = 3)
    assert calibrate_threshold([1.0, 2.0, 2.1]) == pytest.approx(2.6)
    # one failed pose among eight views barely moves it (mean + 3 std gave 0.411 here)
    scores = [0.352, 0.030, 0.074, 0.059, 0.043, 0.038, 0.047, 0.063]
    assert calibrate_threshold(scores) == pytest.approx(0.053 + 3 * 1.4826 * 0.0125)
    # nearly equal scores: sigma floored at a tenth of the median
    assert calibrate_threshold([0.1, 0.1, 0.1]) == pytest.approx(0.13)
    with pytest.raises(ValueError, match='>= 2 finite'):
        calibrate_threshold([0.4])
    with pytest.raises(ValueError, match='>= 2 finite'):
        calibrate_threshold([0.4, float('nan')])
