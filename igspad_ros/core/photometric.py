"""Photometric alignment of a render to a photo: exposure and white balance (beyond the paper).

A camera with auto-exposure or auto white balance sees the normal object brighter or
bluer than the training captures it was learnt from; eq. (5) would call that an anomaly.
Before scoring, the render is mapped per channel by ``gain * render + offset`` fitted to the
photo on the inspection region's pixels. The fit is robust, so a stain does not drive it:
iteratively reweighted least squares with Tukey's biweight, its scale the median absolute
residual (a defect covering less than half the region is ignored). Gains and offsets are
bounded (``GAIN_RANGE``, ``OFFSET_RANGE``), which keeps a mostly-defective view from being
"explained" by a colour change.
"""
from dataclasses import dataclass

import numpy as np

GAIN_RANGE = (0.5, 2.0)
OFFSET_RANGE = (-0.2, 0.2)
TUKEY_C = 4.685            # biweight constant for 95 % efficiency on Gaussian residuals
_ITERATIONS = 6
_MIN_PIXELS = 16
_MIN_SCALE = 1.0 / 255.0   # residual scale floor: one 8-bit step


@dataclass(frozen=True)
class ColourTransform:
    """Per-channel ``gain`` and ``offset`` (3 each): photo ~ gain * render + offset."""

    gain: tuple = (1.0, 1.0, 1.0)
    offset: tuple = (0.0, 0.0, 0.0)

    def apply(self, image):
        """Return the (H, W, 3) float32 image mapped channel by channel, clipped to [0, 1]."""
        out = (np.asarray(image, np.float32) * np.asarray(self.gain, np.float32)
               + np.asarray(self.offset, np.float32))
        return np.clip(out, 0.0, 1.0)

    @property
    def identity(self):
        """True when the transform changes nothing."""
        return self.gain == (1.0, 1.0, 1.0) and self.offset == (0.0, 0.0, 0.0)


IDENTITY = ColourTransform()


def fit_colour_transform(render, photo, mask=None, offset=True):
    """Robust per-channel fit of ``photo`` (H, W, 3) by ``gain * render + offset``.

    ``mask`` (H, W) bool selects the pixels used (the inspection region); saturated pixels
    (either image at 0 or 1 in a channel) are left out of that channel. ``offset=False``
    fits gains only. Returns the identity when fewer than 16 pixels are usable.
    """
    render = np.asarray(render, np.float64)
    photo = np.asarray(photo, np.float64)
    if render.shape != photo.shape or render.ndim != 3 or render.shape[2] != 3:
        raise ValueError(f'colour fit: render {render.shape} and photo {photo.shape} must be '
                         'the same (H, W, 3)')
    use = np.ones(render.shape[:2], bool) if mask is None else np.asarray(mask, bool)
    if use.shape != render.shape[:2]:
        raise ValueError(f'colour fit: mask {use.shape} differs from the image '
                         f'{render.shape[:2]}')
    gains, offsets = [], []
    for c in range(3):
        r, p = render[..., c][use], photo[..., c][use]
        ok = (r > 0.0) & (r < 1.0) & (p > 0.0) & (p < 1.0)
        g, o = _robust_line(r[ok], p[ok], offset) if ok.sum() >= _MIN_PIXELS else (1.0, 0.0)
        gains.append(float(np.clip(g, *GAIN_RANGE)))
        offsets.append(float(np.clip(o, *OFFSET_RANGE)))
    return ColourTransform(tuple(gains), tuple(offsets))


def _robust_line(x, y, with_offset):
    """(gain, offset) of y ~ gain x + offset by IRLS with Tukey's biweight."""
    A = np.stack([x, np.ones_like(x)], axis=1) if with_offset else x[:, None]
    w = np.ones_like(x)
    coef = np.array([1.0, 0.0]) if with_offset else np.array([1.0])
    for _ in range(_ITERATIONS):
        Aw = A * w[:, None]
        coef = np.linalg.lstsq(Aw.T @ A + 1e-9 * np.eye(A.shape[1]), Aw.T @ y, rcond=None)[0]
        resid = y - A @ coef
        scale = max(1.4826 * np.median(np.abs(resid)), _MIN_SCALE)
        u = resid / (TUKEY_C * scale)
        w = np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)
        if w.sum() < _MIN_PIXELS:
            break
    return float(coef[0]), (float(coef[1]) if with_offset else 0.0)
