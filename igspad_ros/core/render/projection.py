"""Projection of 3D Gaussians to the image plane, shared by the CPU rasterisers.

Uses gsplat's pure-torch reference functions so that the CPU path keeps gsplat's
conventions exactly: EWA projection with the frustum-clamped Jacobian, a 0.3 px^2
blur (eps2d), near plane 0.01, radii of 3.33 standard deviations, SH colours
evaluated along the camera-to-Gaussian direction plus 0.5, clamped at 0.
"""
from dataclasses import dataclass

import torch
from gsplat.cuda._torch_impl import (_fully_fused_projection, _quat_scale_to_covar_preci,
                                     _spherical_harmonics)

EPS2D = 0.3
NEAR_PLANE = 0.01


@dataclass
class Projection:
    """Per-camera projected Gaussians; shapes (C, N, ...)."""

    means2d: torch.Tensor       # (C, N, 2) pixel coordinates (pixel-edge convention)
    conics: torch.Tensor        # (C, N, 3) inverse 2D covariance (a, b, c)
    depths: torch.Tensor        # (C, N) camera z
    radii: torch.Tensor         # (C, N, 2) int32, 0 where culled (gsplat's rule)
    opacities: torch.Tensor     # (N,) in (0, 1)
    colors: torch.Tensor        # (C, N, 3) view-dependent RGB


def project(scene, viewmats, Ks, width, height):
    """Project ``scene`` into C cameras: viewmats (C, 4, 4), Ks (C, 3, 3)."""
    scales = torch.exp(scene.log_scales)
    covars, _ = _quat_scale_to_covar_preci(scene.quats, scales, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        scene.means, covars, viewmats, Ks, width, height, eps2d=EPS2D, near_plane=NEAR_PLANE)
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    campos = -(R.transpose(1, 2) @ t[:, :, None])[:, :, 0]          # (C, 3)
    dirs = scene.means[None, :, :] - campos[:, None, :]              # (C, N, 3)
    coeffs = scene.sh[None].expand(viewmats.shape[0], -1, -1, -1)   # (C, N, K, 3)
    colors = _spherical_harmonics(scene.sh_degree, dirs, coeffs)
    colors = torch.clamp_min(colors + 0.5, 0.0)
    return Projection(means2d=means2d, conics=conics, depths=depths, radii=radii,
                      opacities=torch.sigmoid(scene.opacity_logits), colors=colors)
