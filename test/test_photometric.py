"""Photometric alignment: a robust per-channel gain and offset from a render to a photo."""
import numpy as np
import pytest

from igspad_ros.core.photometric import IDENTITY, ColourTransform, fit_colour_transform


def _texture(seed=0, size=(48, 64)):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.15, 0.75, size=(6, 8, 3)).astype(np.float32)
    return np.kron(base, np.ones((size[0] // 6, size[1] // 8, 1), np.float32))


def test_fit_recovers_exposure_and_white_balance_despite_a_stain():
    render = _texture()
    truth = ColourTransform((1.2, 1.1, 0.95), (0.02, -0.01, 0.03))
    photo = truth.apply(render)
    photo[10:30, 20:44] = (0.6, 0.05, 0.05)       # a stain over a sixth of the image
    fit = fit_colour_transform(render, photo)
    np.testing.assert_allclose(fit.gain, truth.gain, atol=2e-3)
    np.testing.assert_allclose(fit.offset, truth.offset, atol=2e-3)
    # the stain stays: the aligned render differs from the photo only there
    diff = np.abs(fit.apply(render) - photo).max(axis=2)
    assert diff[10:30, 20:44].min() > 0.1
    diff[10:30, 20:44] = 0.0
    assert diff.max() < 5e-3


def test_gain_only_fit_and_mask():
    render = _texture(1)
    photo = np.clip(render * 0.8, 0, 1)
    mask = np.zeros(render.shape[:2], bool)
    mask[:24] = True
    photo[24:] = 0.5                                  # outside the mask: ignored
    fit = fit_colour_transform(render, photo, mask, offset=False)
    np.testing.assert_allclose(fit.gain, (0.8, 0.8, 0.8), atol=1e-4)
    assert fit.offset == (0.0, 0.0, 0.0)


def test_bounds_and_degenerate_inputs():
    render = _texture(2)
    assert fit_colour_transform(render, np.clip(render * 3.0, 0, 1)).gain == (2.0, 2.0, 2.0)
    few = np.zeros(render.shape[:2], bool)
    few[0, :10] = True
    assert fit_colour_transform(render, render * 0.5, few) == IDENTITY
    assert IDENTITY.identity and not ColourTransform((1.0, 1.0, 0.9)).identity
    with pytest.raises(ValueError, match=r'colour fit: render \(48, 64, 3\) and photo'):
        fit_colour_transform(render, render[:10])
