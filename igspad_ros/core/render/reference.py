"""Dense brute-force rasteriser: the reference for tests and benchmarks, not for use.

Every pixel is composited against every visible Gaussian (pixels x Gaussians), in the
order and with the rules of gsplat's rasteriser, written as plainly as possible so
that the tiled CPU rasteriser (``cpu.py``) can be checked against it; its cost grows
with pixels x Gaussians. ``random_scene`` is the seeded scene the tests and
``bench/render_cpu.py`` render.
"""
import torch

from igspad_ros.core.scene import GaussianScene

from igspad_ros.core.render.cpu import ALPHA_MAX, ALPHA_MIN, T_MIN
from igspad_ros.core.render.projection import project


def rasterize_dense(scene, viewmats, Ks, width, height, background):
    """Render C cameras densely; returns (rgb (C,H,W,3), alpha (C,H,W,1), means2d)."""
    proj = project(scene, viewmats, Ks, width, height)
    dtype = scene.means.dtype
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype) + 0.5,
                            torch.arange(width, dtype=dtype) + 0.5, indexing='ij')
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)      # (P, 2)
    rgbs, alphas = [], []
    for ci in range(viewmats.shape[0]):
        order = torch.argsort(proj.depths[ci], stable=True)
        order = order[(proj.radii[ci, order] > 0).all(-1)]
        d = pix[:, None, :] - proj.means2d[ci, order][None]          # (P, N, 2)
        a, b, c = proj.conics[ci, order].unbind(-1)
        sigma = 0.5 * (a * d[..., 0] ** 2 + c * d[..., 1] ** 2) + b * d[..., 0] * d[..., 1]
        alpha = torch.clamp_max(proj.opacities[order] * torch.exp(-sigma), ALPHA_MAX)
        alpha = torch.where((alpha >= ALPHA_MIN) & (sigma >= 0), alpha, 0.0)
        t_after = torch.cumprod(1.0 - alpha, dim=1)
        t_before = torch.cat([torch.ones_like(t_after[:, :1]), t_after[:, :-1]], dim=1)
        weight = alpha * t_before * (t_after > T_MIN)
        acc = weight.sum(1, keepdim=True)
        rgb = weight @ proj.colors[ci, order] + background * (1.0 - acc)
        rgbs.append(rgb.view(height, width, 3))
        alphas.append(acc.view(height, width, 1))
    return torch.stack(rgbs), torch.stack(alphas), proj.means2d


def random_scene(n, seed=0, dtype=torch.float32, sh_degree=2):
    """Seeded test scene: anisotropic Gaussians of mixed opacity in a 1.2 cube at the origin.

    Sized like a MAD object (seen from 3.5 units with MAD's field of view it fills about
    half the image); standard deviations around 0.05 with a log-normal spread.
    """
    g = torch.Generator().manual_seed(seed)
    points = (torch.rand(n, 3, generator=g) - 0.5) * 1.2
    scene = GaussianScene.from_points(points, torch.rand(n, 3, generator=g),
                                      sh_degree=sh_degree, scale=0.05)
    scene.log_scales += 0.4 * torch.randn(n, 3, generator=g)
    scene.quats = torch.randn(n, 4, generator=g)
    scene.opacity_logits = 1.5 * torch.randn(n, generator=g)
    scene.sh[:, 1:] = 0.2 * torch.randn(n, scene.sh.shape[1] - 1, 3, generator=g)
    return scene.to(dtype=dtype)
