"""Anomaly map, image score and threshold calibration (paper 3.3).

Given the feature maps of the test image ``f_t`` and of the normal render at the IGS pose
``f_r`` (``core.features``), the pixel score is eq. (5), one minus their cosine similarity,
upsampled bilinearly to the image and optionally smoothed by a Gaussian; the image score is
eq. (6), the maximum of the average-pooled pixel map. The verdict threshold is calibrated on
normal views only (never on test labels): ``calibrate_threshold`` takes the image scores of
normal images against their renders and returns the median + k robust standard deviations
(1.4826 x the median absolute deviation), so one held-out view whose pose failed does not
lift the threshold over every defect, as mean + k std did; or the highest normal score when
that is lower.

Default smoothing and pooling scale with the image: sigma = long side / 64 (4 px at 256 px,
as PatchCore smooths) and a pool of long side / 16 px.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

SIGMA_FRACTION = 1.0 / 64.0
POOL_FRACTION = 1.0 / 16.0
DEFAULT_K_STD = 3.0
SIGMA_FLOOR = 0.1         # robust sigma at least this fraction of the median
MAD_TO_SIGMA = 1.4826     # MAD of a Gaussian times this is its standard deviation


def anomaly_map(feat_test, feat_render, size=None, sigma=None, shift_radius=0):
    """Eq. (5): S_P(i, j) = 1 - cos(f_t(:, i, j), f_r(:, i, j)), upsampled and smoothed.

    ``feat_test`` and ``feat_render`` are (C, h, w) or (B, C, h, w) maps of the same shape.
    ``size`` (H, W) is the image size to upsample to (bilinear; default: the map's own size).
    ``sigma`` is the Gaussian smoothing in output pixels (None: long side / 64; 0: none).
    ``shift_radius`` r > 0 (beyond the paper) compares each test cell with the render's cells
    up to r cells away and keeps the smallest score, which tolerates a residual pose error of
    about r cells; r = 0 is eq. (5) exactly. Returns (H, W) or (B, H, W) float32 in [0, 2].
    """
    ft, fr = torch.as_tensor(feat_test), torch.as_tensor(feat_render)
    if ft.shape != fr.shape or ft.ndim not in (3, 4):
        raise ValueError(f'anomaly map: feature maps must be (C, h, w) or (B, C, h, w) of one '
                         f'shape, got {tuple(ft.shape)} and {tuple(fr.shape)}')
    if int(shift_radius) < 0:
        raise ValueError(f'anomaly map: shift_radius must be >= 0, got {shift_radius}')
    single = ft.ndim == 3
    ft, fr = (ft[None], fr[None]) if single else (ft, fr)
    ft, fr = ft.float(), fr.to(ft.device).float()
    amap = shift_tolerant_distance(ft, fr, int(shift_radius))      # (B, h, w)
    size = tuple(int(s) for s in (size or amap.shape[-2:]))
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f'anomaly map: size must be (H, W) with positive sides, got {size}')
    if tuple(amap.shape[-2:]) != size:
        amap = F.interpolate(amap[:, None], size=size, mode='bilinear',
                             align_corners=False)[:, 0]
    sigma = SIGMA_FRACTION * max(size) if sigma is None else float(sigma)
    if sigma < 0:
        raise ValueError(f'anomaly map: sigma must be >= 0, got {sigma}')
    if sigma > 0:
        amap = gaussian_smooth(amap, sigma)
    amap = amap.clamp(0.0, 2.0)
    return amap[0] if single else amap


def shift_tolerant_distance(ft, fr, radius):
    """Min over offsets |dy|, |dx| <= radius of 1 - cos(f_t(i, j), f_r(i + dy, j + dx)).

    (B, C, h, w) maps -> (B, h, w); the render's map is edge-replicated at its border.
    """
    if radius == 0:
        return 1.0 - F.cosine_similarity(ft, fr, dim=1, eps=1e-8)
    ft, fr = F.normalize(ft, dim=1, eps=1e-8), F.normalize(fr, dim=1, eps=1e-8)
    h, w = fr.shape[-2:]
    padded = F.pad(fr, (radius, radius, radius, radius), mode='replicate')
    best = None
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            dist = 1.0 - (ft * padded[:, :, dy:dy + h, dx:dx + w]).sum(1)
            best = dist if best is None else torch.minimum(best, dist)
    return best


def gaussian_smooth(maps, sigma):
    """Separable Gaussian blur of (B, H, W) maps, kernel truncated at 4 sigma, reflect border."""
    radius = max(1, int(math.ceil(4.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=maps.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = maps[:, None].float()
    h, w = out.shape[-2:]
    # reflect padding needs pad < size; replicate covers maps smaller than the kernel
    mode = 'reflect' if radius < min(h, w) else 'replicate'
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode=mode), kernel.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode=mode), kernel.view(1, 1, -1, 1))
    return out[:, 0]


def image_score(amap, pool_size=None):
    """Eq. (6): S_I = max(AP(S_P)), the maximum of the average-pooled pixel map.

    ``amap`` (H, W) torch or numpy; ``pool_size`` the side of the square pooling window in
    pixels, stride 1, no padding (None: long side / 16; clipped to the map).
    """
    amap = torch.as_tensor(np.asarray(amap) if not isinstance(amap, torch.Tensor) else amap)
    if amap.ndim != 2 or amap.numel() == 0:
        raise ValueError(f'image score: anomaly map must be (H, W), got {tuple(amap.shape)}')
    h, w = amap.shape
    if pool_size is None:
        pool_size = max(1, round(POOL_FRACTION * max(h, w)))
    if int(pool_size) < 1:
        raise ValueError(f'image score: pool_size must be >= 1, got {pool_size}')
    k = (min(int(pool_size), h), min(int(pool_size), w))
    pooled = F.avg_pool2d(amap.float()[None, None], kernel_size=k, stride=1)
    return float(pooled.max())


def calibrate_threshold(normal_scores, k=DEFAULT_K_STD):
    """Verdict threshold from image scores of normal views: median + k * robust sigma at most.

    ``normal_scores`` are eq. (6) scores of normal images against renders at their
    estimated poses; at least two finite values are needed. sigma is 1.4826 times the
    median absolute deviation, floored at ``SIGMA_FLOOR`` times the median (a handful of
    nearly equal scores would otherwise give a threshold at the median itself). With k = 3
    about 0.1 % of normal images exceed it if their scores were Gaussian; scores far above
    the rest (a failed pose) barely move it. Scores of normal views are skewed, though, and
    the Gaussian rule can land far above every normal score seen (on a held-out animal at
    0.032, above half its faint defects, where the highest of 16 normal views scored 0.020):
    the threshold is then the highest normal score, but no lower than median + k * the
    floored sigma. So a normal view alarms with about the chance that it scores above every
    calibration view (if the calibration views are like the inspected ones).
    """
    scores = np.asarray(normal_scores, dtype=np.float64).ravel()
    if scores.size < 2 or not np.all(np.isfinite(scores)):
        raise ValueError(f'threshold calibration: need >= 2 finite normal scores, got '
                         f'{scores.size} values')
    if k < 0:
        raise ValueError(f'threshold calibration: k must be >= 0, got {k}')
    median = float(np.median(scores))
    sigma = max(MAD_TO_SIGMA * float(np.median(np.abs(scores - median))), SIGMA_FLOOR * median)
    lowest = median + k * SIGMA_FLOOR * median
    return float(np.clip(scores.max(), lowest, median + k * sigma))
