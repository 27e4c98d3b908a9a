"""PAD-protocol metrics against brute-force references and hand-computed cases."""
import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from igspad_ros.core.metrics import aupro, pad_metrics, pro_curve, resize_map, resize_mask


def _brute_force_aupro(maps, masks, thresholds, fpr_limit=0.3):
    """PRO and FPR evaluated threshold by threshold, trapezoid up to the limit."""
    regions = []
    for m, mask in zip(maps, masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(m, labelled == r) for r in range(1, count + 1)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in sorted(thresholds, reverse=True):
        pro = np.mean([(m[region] >= t).mean() for m, region in regions])
        fpr = (maps[normal] >= t).sum() / normal.sum()
        points.append((fpr, pro))
    fpr, pro = np.array(points).T
    grid = np.linspace(0.0, fpr_limit, 30001)
    # np.interp needs increasing x: the curve is monotone in FPR
    curve = np.interp(grid, fpr, pro)
    return np.trapezoid(curve, grid) / fpr_limit


def _random_case(rng, n=3, size=12):
    masks = np.zeros((n, size, size), bool)
    masks[0, 2:5, 3:7] = True
    masks[0, 8:10, 8:11] = True          # a second region in the same image
    masks[1, 6:11, 1:3] = True
    masks[2, [1, 2, 3], [1, 2, 3]] = True  # one diagonal, 8-connected region
    maps = rng.random((n, size, size))
    maps[masks] += rng.random(masks.sum()) * 0.8
    return np.round(maps, 2), masks       # rounding creates ties between pixels


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_aupro_matches_brute_force(seed):
    maps, masks = _random_case(np.random.default_rng(seed))
    expected = _brute_force_aupro(maps, masks, np.unique(maps))
    assert aupro(maps, masks) == pytest.approx(expected, abs=2e-4)
    assert 0.0 < expected < 1.0


def test_aupro_extremes():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    assert aupro(masks.astype(float), masks) == pytest.approx(1.0)
    # inverted map: every normal pixel scores above every anomalous one
    assert aupro(1.0 - masks, masks) == pytest.approx(0.0)
    # constant map: one threshold takes the curve from (0, 0) to (1, 1) in one step
    assert aupro(np.zeros((2, 8, 8)), masks) == pytest.approx(0.15)
    assert aupro(np.zeros((2, 8, 8)), np.zeros((2, 8, 8), bool)) is None


def test_pro_curve_ends_and_monotone():
    maps, masks = _random_case(np.random.default_rng(3))
    fpr, pro = pro_curve(maps, masks)
    assert (fpr[0], pro[0]) == (0.0, 0.0)
    assert fpr[-1] == pytest.approx(1.0) and pro[-1] == pytest.approx(1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)


def test_pad_metrics_matches_sklearn_at_224():
    rng = np.random.default_rng(4)
    masks = np.zeros((4, 32, 32), bool)
    masks[1, 5:15, 5:12] = True
    masks[2, 20:30, 0:6] = True
    maps = rng.random((4, 32, 32)).astype(np.float32) + 0.7 * masks
    scores = np.array([0.1, 0.8, 0.7, 0.75])
    labels = np.array([False, True, True, False])
    out = pad_metrics(list(maps), list(masks), scores, labels)
    assert set(out) == {'pixel_auroc', 'image_auroc', 'pixel_ap', 'aupro'}
    big_maps = np.stack([resize_map(m) for m in maps])
    big_masks = np.stack([resize_mask(m) for m in masks])
    assert big_maps.shape == (4, 224, 224) and big_masks.sum() == masks.sum() * 49
    assert out['pixel_auroc'] == pytest.approx(roc_auc_score(big_masks.ravel(),
                                                             big_maps.ravel()))
    # (anomalous, good) pairs ranked right: 0.8 > 0.1, 0.8 > 0.75, 0.7 > 0.1, not 0.7 > 0.75
    assert out['image_auroc'] == pytest.approx(0.75)
    assert 0.5 < out['pixel_ap'] <= 1.0 and 0.5 < out['aupro'] <= 1.0


def test_pad_metrics_perfect_and_undefined():
    # at the metric size already: bilinear resizing would blur the square's corners
    masks = np.zeros((3, 224, 224), bool)
    masks[0, 40:90, 40:90] = True
    maps = masks.astype(np.float32) * 2.0
    out = pad_metrics(maps, masks, [1.0, 0.0, 0.0], [True, False, False])
    assert out == pytest.approx({'pixel_auroc': 1.0, 'image_auroc': 1.0, 'pixel_ap': 1.0,
                                 'aupro': 1.0})
    only_good = pad_metrics(maps[1:], masks[1:], [0.1, 0.2], [False, False])
    assert only_good == {'pixel_auroc': None, 'image_auroc': None, 'pixel_ap': None,
                         'aupro': None}


def test_pad_metrics_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match='one map, mask, score and label'):
        pad_metrics([np.zeros((4, 4))], [], [0.0], [False])
    with pytest.raises(ValueError, match='anomaly map must be'):
        resize_map(np.zeros(5))
