"""gsplat CUDA backend: a thin call to ``gsplat.rasterization`` (needs a CUDA device)."""
import torch

from igspad_ros.core.render.projection import EPS2D, NEAR_PLANE


def rasterize_gsplat(scene, viewmats, Ks, width, height, background):
    """Render C cameras with gsplat; returns (rgb (C,H,W,3), alpha (C,H,W,1), info).

    Non-packed, classic mode, so ``info`` has per-camera means2d/radii (C, N, ...) like
    the CPU backend; gsplat computes the viewmat gradients itself.
    """
    from gsplat import rasterization   # imported here: its CUDA kernels compile on use
    n_cams = viewmats.shape[0]
    rgb, alpha, info = rasterization(
        means=scene.means, quats=scene.quats, scales=torch.exp(scene.log_scales),
        opacities=torch.sigmoid(scene.opacity_logits), colors=scene.sh,
        viewmats=viewmats, Ks=Ks, width=width, height=height, near_plane=NEAR_PLANE,
        eps2d=EPS2D, sh_degree=scene.sh_degree, packed=False,
        backgrounds=background[None].expand(n_cams, 3), render_mode='RGB',
        rasterize_mode='classic')
    return rgb, alpha, info
