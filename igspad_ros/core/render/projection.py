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
    """Project ``scene`` into C cameras: viewmats (C, 4, 4), Ks (C, 3, 3).

    A Gaussian before a camera's near plane is culled (gsplat's rule) and kept out of the
    autograd graph for that camera: in the camera's own image plane its 2D covariance is
    infinite, and the 0 * inf of its (unused) backward turned every gradient into NaN.
    It is projected from a stand-in point on the camera's axis instead, radii 0.
    """
    scales = torch.exp(scene.log_scales)
    covars, _ = _quat_scale_to_covar_preci(scene.quats, scales, compute_preci=False)
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    n_cams, n = viewmats.shape[0], scene.means.shape[0]
    depth = (scene.means[None] @ R[:, 2, :, None])[..., 0] + t[:, None, 2]      # (C, N)
    culled = (depth < NEAR_PLANE).detach()
    campos = -(R.transpose(1, 2) @ t[:, :, None])[:, :, 0]          # (C, 3)
    means = scene.means[None].expand(n_cams, n, 3)
    if bool(culled.any()):
        stand_in = (campos + R[:, 2, :]).detach()                    # 1 unit ahead
        means = torch.where(culled[..., None], stand_in[:, None, :], means)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        means, covars[None].expand(n_cams, n, 3, 3), viewmats[:, None], Ks[:, None], width,
        height, eps2d=EPS2D, near_plane=NEAR_PLANE)
    radii, means2d, depths, conics = radii[:, 0], means2d[:, 0], depths[:, 0], conics[:, 0]
    radii = radii.masked_fill(culled[..., None], 0)
    depths = torch.where(culled, depth.detach(), depths)
    dirs = means - campos[:, None, :]                                # (C, N, 3)
    coeffs = scene.sh[None].expand(n_cams, -1, -1, -1)               # (C, N, K, 3)
    colors = _spherical_harmonics(scene.sh_degree, dirs, coeffs)
    colors = torch.clamp_min(colors + 0.5, 0.0)
    return Projection(means2d=means2d, conics=conics, depths=depths, radii=radii,
                      opacities=torch.sigmoid(scene.opacity_logits), colors=colors)
