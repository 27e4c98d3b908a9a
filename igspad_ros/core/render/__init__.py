"""Differentiable rendering of a GaussianScene: one ``render()`` with two backends.

``cuda`` calls gsplat's fused CUDA rasteriser; ``cpu`` is the tile-binned torch
rasteriser in ``cpu.py`` (same conventions, results equal within float tolerance).
Both are differentiable with respect to the scene tensors and the viewmat(s), and
both accept a batch of C viewmats.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from igspad_ros.core.images import MAX_IMAGE_SIDE

BACKENDS = ('auto', 'cpu', 'cuda')


class RenderInputError(ValueError):
    """An argument of ``render()`` has the wrong shape, size or value."""


@dataclass
class RenderOutput:
    """Rendered image(s): rgb (H,W,3) or (C,H,W,3); alpha (H,W,1) or (C,H,W,1); info."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    info: dict


def supersample_factor(scene_size, width, height):
    """Integer factor to render a ``width`` x ``height`` view of a scene trained at ``scene_size``.

    A scene's Gaussians are as small as its training pixels; rendered at half that size or
    less they alias (a 128 px scene seen at 64 px: IGS ended 1.99 degrees off, median of 8
    images, 0.47 supersampled; ``bench/cost_curve.py``). Rendering at about the scene's
    size and area-averaging down, as a camera integrates its pixels, avoids that.
    ``scene_size`` None (unknown) gives 1.
    """
    if not scene_size:
        return 1
    return max(1, round(float(scene_size) / max(int(width), int(height))))


def render(scene, viewmat, K, width, height, background=(1.0, 1.0, 1.0), backend='auto',
           supersample=1):
    """Render ``scene`` from OpenCV world-to-camera ``viewmat`` (4,4) or (C,4,4).

    K is a (3,3) (or (C,3,3)) pinhole matrix in the pixel-edge convention, numpy or
    torch. ``backend`` 'auto' picks 'cuda' for a scene on a CUDA device, else 'cpu'.
    ``supersample`` s > 1 renders at s times the size and area-averages s x s blocks
    (``supersample_factor``); rgb and alpha are then of the asked size, ``info`` of the
    large render. ``info`` carries what gsplat's DefaultStrategy needs (means2d with its
    graph, radii, width, height, n_cameras, gaussian_ids).
    """
    if backend not in BACKENDS:
        raise RenderInputError(f'render: backend must be one of {BACKENDS}, got {backend!r}')
    if backend == 'auto':
        backend = 'cuda' if scene.device.type == 'cuda' else 'cpu'
    width, height = _check_size(width, height)
    if int(supersample) != supersample or supersample < 1:
        raise RenderInputError(f'render: supersample must be an integer >= 1, '
                               f'got {supersample!r}')
    supersample = int(supersample)
    _check_size(width * supersample, height * supersample)
    dtype, device = scene.means.dtype, scene.device
    viewmats = torch.as_tensor(viewmat).to(dtype=dtype, device=device)
    single = viewmats.ndim == 2
    if single:
        viewmats = viewmats[None]
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4) or viewmats.shape[0] == 0:
        raise RenderInputError(f'render: viewmat must be (4, 4) or (C, 4, 4), '
                               f'got {tuple(torch.as_tensor(viewmat).shape)}')
    n_cams = viewmats.shape[0]
    Ks = torch.as_tensor(np.asarray(K) if not torch.is_tensor(K) else K)
    Ks = Ks.to(dtype=dtype, device=device)
    if Ks.shape == (3, 3):
        Ks = Ks[None].expand(n_cams, 3, 3)
    if Ks.shape != (n_cams, 3, 3) or not bool(torch.isfinite(Ks).all()):
        raise RenderInputError(f'render: K must be a finite (3, 3) or ({n_cams}, 3, 3) matrix, '
                               f'got shape {tuple(Ks.shape)}')
    if supersample > 1:
        Ks = Ks * torch.tensor([supersample, supersample, 1.0], dtype=dtype,
                               device=device)[:, None]
    bg = torch.as_tensor(background, dtype=dtype, device=device).reshape(-1)
    if bg.shape != (3,):
        raise RenderInputError(f'render: background must be 3 values, got {tuple(bg.shape)}')
    if backend == 'cuda':
        from igspad_ros.core.render.cuda import rasterize_gsplat
        rgb, alpha, info = rasterize_gsplat(scene, viewmats, Ks, width * supersample,
                                            height * supersample, bg)
    else:
        from igspad_ros.core.render.cpu import rasterize_tiled
        rgb, alpha, info = rasterize_tiled(scene, viewmats, Ks, width * supersample,
                                           height * supersample, bg)
    if supersample > 1:
        rgb, alpha = (_area_down(x, supersample) for x in (rgb, alpha))
    if single:
        rgb, alpha = rgb[0], alpha[0]
    return RenderOutput(rgb=rgb, alpha=alpha, info=info)


def _area_down(images, factor):
    """(C, H*f, W*f, D) -> (C, H, W, D) by averaging f x f blocks."""
    return F.avg_pool2d(images.permute(0, 3, 1, 2), factor).permute(0, 2, 3, 1)


def _check_size(width, height):
    for name, value in (('width', width), ('height', height)):
        if int(value) != value or not 0 < int(value) <= MAX_IMAGE_SIDE:
            raise RenderInputError(f'render: {name} must be an integer in [1, {MAX_IMAGE_SIDE}], '
                                   f'got {value!r}')
    return int(width), int(height)
