"""Differentiable rendering of a GaussianScene: one ``render()`` with two backends.

``cuda`` calls gsplat's fused CUDA rasteriser; ``cpu`` is the tile-binned torch
rasteriser in ``cpu.py`` (same conventions, results equal within float tolerance).
Both are differentiable with respect to the scene tensors and the viewmat(s), and
both accept a batch of C viewmats.
"""
from dataclasses import dataclass

import numpy as np
import torch

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


def render(scene, viewmat, K, width, height, background=(1.0, 1.0, 1.0), backend='auto'):
    """Render ``scene`` from OpenCV world-to-camera ``viewmat`` (4,4) or (C,4,4).

    K is a (3,3) (or (C,3,3)) pinhole matrix in the pixel-edge convention, numpy or
    torch. ``backend`` 'auto' picks 'cuda' for a scene on a CUDA device, else 'cpu'.
    ``info`` carries what gsplat's DefaultStrategy needs (means2d with its graph,
    radii, width, height, n_cameras, gaussian_ids).
    """
    if backend not in BACKENDS:
        raise RenderInputError(f'render: backend must be one of {BACKENDS}, got {backend!r}')
    if backend == 'auto':
        backend = 'cuda' if scene.device.type == 'cuda' else 'cpu'
    width, height = _check_size(width, height)
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
    bg = torch.as_tensor(background, dtype=dtype, device=device).reshape(-1)
    if bg.shape != (3,):
        raise RenderInputError(f'render: background must be 3 values, got {tuple(bg.shape)}')
    if backend == 'cuda':
        from igspad_ros.core.render.cuda import rasterize_gsplat
        rgb, alpha, info = rasterize_gsplat(scene, viewmats, Ks, width, height, bg)
    else:
        from igspad_ros.core.render.cpu import rasterize_tiled
        rgb, alpha, info = rasterize_tiled(scene, viewmats, Ks, width, height, bg)
    if single:
        rgb, alpha = rgb[0], alpha[0]
    return RenderOutput(rgb=rgb, alpha=alpha, info=info)


def _check_size(width, height):
    for name, value in (('width', width), ('height', height)):
        if int(value) != value or not 0 < int(value) <= MAX_IMAGE_SIDE:
            raise RenderInputError(f'render: {name} must be an integer in [1, {MAX_IMAGE_SIDE}], '
                                   f'got {value!r}')
    return int(width), int(height)
