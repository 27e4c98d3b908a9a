"""PAD-protocol metrics: pixel AUROC, image AUROC, pixel AP and AUPRO up to FPR 0.3.

As in the PAD benchmark (DESIGN.md, Metrics): every anomaly map is resized to 224 x 224
(bilinear) and every ground-truth mask to 224 x 224 (nearest); the pixel metrics pool all
pixels of all test images, good images included with empty masks; the image AUROC uses the
image scores. ROC and AP come from scikit-learn.

AUPRO: the per-region overlap (PRO) at a threshold is the fraction of each connected
ground-truth region (8-connected, per image) whose pixels score at or above the threshold,
averaged over all regions of all images; the false positive rate is the fraction of normal
pixels at or above it. The PRO-over-FPR curve is integrated (trapezoid) from FPR 0 to 0.3 and
divided by 0.3, so a perfect map scores 1. Every distinct score is a threshold, so the curve
is exact rather than sampled.
"""
import cv2
import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

METRIC_SIZE = 224
AUPRO_FPR_LIMIT = 0.3
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def pad_metrics(maps, masks, scores, labels, size=METRIC_SIZE):
    """Metrics of one category: dict(pixel_auroc, image_auroc, pixel_ap, aupro).

    ``maps`` anomaly maps (H, W) per image, ``masks`` boolean ground truth (H, W) per image
    (all False for good images), ``scores`` image scores, ``labels`` True for anomalous
    images. A metric that needs both classes is None when one class is absent.
    """
    n = len(maps)
    if not (n == len(masks) == len(scores) == len(labels)) or n == 0:
        raise ValueError(f'pad_metrics: need one map, mask, score and label per image, got '
                         f'{len(maps)}, {len(masks)}, {len(scores)}, {len(labels)}')
    maps_224 = np.stack([resize_map(m, size) for m in maps])
    masks_224 = np.stack([resize_mask(m, size) for m in masks])
    pixel_scores, pixel_truth = maps_224.ravel(), masks_224.ravel()
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    pixel_both = 0 < pixel_truth.sum() < pixel_truth.size
    return {
        'pixel_auroc': float(roc_auc_score(pixel_truth, pixel_scores)) if pixel_both else None,
        'image_auroc': (float(roc_auc_score(labels, scores))
                        if 0 < labels.sum() < labels.size else None),
        'pixel_ap': (float(average_precision_score(pixel_truth, pixel_scores))
                     if pixel_both else None),
        'aupro': aupro(maps_224, masks_224) if pixel_both else None,
    }


def resize_map(amap, size=METRIC_SIZE):
    """Resize an (H, W) anomaly map to size x size, bilinear, float32."""
    amap = np.asarray(amap, dtype=np.float32)
    if amap.ndim != 2 or amap.size == 0:
        raise ValueError(f'metrics: anomaly map must be (H, W), got {amap.shape}')
    if amap.shape == (size, size):
        return amap
    return cv2.resize(amap, (size, size), interpolation=cv2.INTER_LINEAR)


def resize_mask(mask, size=METRIC_SIZE):
    """Resize an (H, W) boolean mask to size x size, nearest neighbour."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f'metrics: mask must be (H, W), got {mask.shape}')
    if mask.shape == (size, size):
        return mask.astype(bool)
    return cv2.resize(mask.astype(np.uint8), (size, size),
                      interpolation=cv2.INTER_NEAREST).astype(bool)


def aupro(maps, masks, fpr_limit=AUPRO_FPR_LIMIT):
    """Area under the PRO curve up to ``fpr_limit``, divided by ``fpr_limit`` (in [0, 1]).

    ``maps`` (N, H, W) scores and ``masks`` (N, H, W) bool, already at the metric size.
    Returns None when there is no anomalous or no normal pixel.
    """
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f'aupro: maps and masks must be (N, H, W) of one shape, got '
                         f'{maps.shape} and {masks.shape}')
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f'aupro: fpr_limit must lie in (0, 1], got {fpr_limit}')
    fpr, pro = pro_curve(maps, masks)
    if fpr is None:
        return None
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit:
        # the curve is piecewise linear between thresholds: interpolate its value at the limit
        i = int(np.searchsorted(fpr, fpr_limit, side='right'))
        t = (fpr_limit - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
        x = np.append(x, fpr_limit)
        y = np.append(y, pro[i - 1] + t * (pro[i] - pro[i - 1]))
    return float(np.trapezoid(y, x) / fpr_limit)


def pro_curve(maps, masks):
    """(fpr, pro) at every distinct score as threshold, from (0, 0) to (1, 1).

    Each pixel counts towards the FPR (normal pixels, 1 / #normal each) or towards the PRO
    of its region (1 / (region size * #regions)); sorting by descending score and summing
    gives both curves at every threshold. Returns (None, None) without both classes.
    """
    region = np.zeros(masks.shape, dtype=np.int64)
    n_regions = 0
    for i, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        region[i] = np.where(labelled > 0, labelled + n_regions, 0)
        n_regions += count
    n_normal = int((region == 0).sum())
    if n_regions == 0 or n_normal == 0:
        return None, None
    region, scores = region.ravel(), maps.ravel()
    sizes = np.bincount(region, minlength=n_regions + 1).astype(np.float64)
    weight = np.where(region == 0, 0.0, 1.0 / (sizes[region] * n_regions))
    normal = (region == 0).astype(np.float64) / n_normal
    order = np.argsort(-scores, kind='stable')
    fpr, pro = np.cumsum(normal[order]), np.cumsum(weight[order])
    # tied scores form one threshold: keep the last pixel of each run of equal scores
    s = scores[order]
    last = np.r_[s[1:] != s[:-1], True]
    fpr = np.r_[0.0, np.minimum(fpr[last], 1.0)]
    pro = np.r_[0.0, np.minimum(pro[last], 1.0)]
    return fpr, pro
