"""A closed-form pose correction before IGS: render-to-image matches lifted to 3D, PnP.

Beyond the paper (issue 14: "a closed-form correction from render<->test matches lifted to
3D with the rendered depth"). IGS is a local search: from a retrieved view 10 to 20 degrees
away on a sparse capture it can stop in a wrong basin. Here the scene is rendered at the
start pose together with its depth; keypoints of the render matched to the image
(LightGlue) become 3D points through that depth, and RANSAC PnP finds the camera that
projects them onto their image matches. RANSAC also drops matches on anomalous regions
(they do not agree with the rest), as MPS does for the gradient steps. The corrected pose
is a start for IGS, which then aligns it to a fraction of a pixel.
"""
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from igspad_ros.core import cameras
from igspad_ros.core.render import render
from igspad_ros.core.scene import GaussianScene, rgb_to_sh_dc

MIN_INLIERS = 12          # fewer PnP inliers: keep the start
SOLID_ALPHA = 0.95        # depth only where the render is opaque (not on silhouettes)
DEPTH_EDGE = 0.02         # ... and where the 3x3 depth range is below this share of depth


@dataclass
class PnPResult:
    """The corrected viewmat (4, 4) float64, or None when PnP found no trustworthy pose."""

    viewmat: np.ndarray | None
    n_matches: int
    n_inliers: int


def depth_scene(scene, viewmat):
    """``scene`` whose colour is each Gaussian's depth in the camera of ``viewmat``.

    Rendered over a black background it gives sum_i w_i z_i; divided by alpha, the expected
    depth of every pixel (the renderer clamps colours at 0 only, and depths are positive).
    """
    v = torch.as_tensor(np.asarray(viewmat), dtype=scene.means.dtype, device=scene.means.device)
    z = (scene.means @ v[2, :3] + v[2, 3]).clamp_min(0.0)
    colour = z[:, None].expand(-1, 3)
    return GaussianScene(means=scene.means, quats=scene.quats, log_scales=scene.log_scales,
                         opacity_logits=scene.opacity_logits, sh=rgb_to_sh_dc(colour)[:, None])


@torch.no_grad()
def render_depth(scene, viewmat, K, width, height):
    """Return the (H, W) float32 expected depth of the scene at ``viewmat``.

    NaN where the render is not opaque or the depth jumps (a silhouette), so that no point
    is lifted from a mixed pixel.
    """
    out = render(depth_scene(scene, viewmat), torch.as_tensor(np.asarray(viewmat),
                                                              dtype=torch.float32),
                 K, width, height, background=(0.0, 0.0, 0.0))
    alpha = out.alpha[..., 0].cpu().numpy()
    depth = out.rgb[..., 0].cpu().numpy() / np.maximum(alpha, 1e-6)
    kernel = np.ones((3, 3), np.uint8)
    spread = cv2.dilate(depth, kernel) - cv2.erode(depth, kernel)
    bad = (alpha < SOLID_ALPHA) | (spread > DEPTH_EDGE * depth) | (depth <= 0)
    return np.where(bad, np.nan, depth).astype(np.float32)


def lift(points, depth, viewmat, K):
    """World points of pixel-edge ``points`` (M, 2) at ``depth`` (H, W); NaN rows where unknown."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    h, w = depth.shape
    col = np.clip(np.floor(points[:, 0]).astype(int), 0, w - 1)
    row = np.clip(np.floor(points[:, 1]).astype(int), 0, h - 1)
    z = depth[row, col].astype(np.float64)
    rays = np.linalg.solve(np.asarray(K, dtype=np.float64),
                           np.stack([points[:, 0], points[:, 1], np.ones(len(points))]))
    cam = (rays * z).T                                                    # (M, 3)
    c2w = cameras.rigid_inverse(np.asarray(viewmat, dtype=np.float64))
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def pnp_correct(scene, image, viewmat, K, matcher, image_features=None,
                background=(1.0, 1.0, 1.0), supersample=1, threshold_px=None, rendered=None):
    """Correct ``viewmat`` by PnP on the matches of its render with ``image`` (H, W, 3).

    ``K`` is the image's; ``image_features`` its keypoints if already extracted (at the
    image's size); ``rendered`` the (H, W, 3) render at ``viewmat`` if already made.
    RANSAC's reprojection threshold is ``threshold_px`` (default 1.5 % of the long side).
    Returns a PnPResult; ``viewmat`` None when fewer than MIN_INLIERS matches with a depth
    agree on one pose.
    """
    h, w = image.shape[:2]
    threshold_px = threshold_px or 0.015 * max(w, h)
    if rendered is None:
        with torch.no_grad():
            out = render(scene, torch.as_tensor(np.asarray(viewmat), dtype=torch.float32), K,
                         w, h, background=background, supersample=supersample)
        rendered = out.rgb.clamp(0.0, 1.0).cpu().numpy()
    feats = image_features if image_features is not None else matcher.extract(image)
    render_pts, image_pts, _ = matcher.match_scored(matcher.extract(rendered), feats)
    if len(render_pts) < MIN_INLIERS:
        return PnPResult(None, len(render_pts), 0)
    world = lift(render_pts, render_depth(scene, viewmat, K, w, h), viewmat, K)
    known = np.all(np.isfinite(world), axis=1)
    if known.sum() < MIN_INLIERS:
        return PnPResult(None, len(render_pts), 0)
    obj = world[known].astype(np.float64)
    img = np.asarray(image_pts, dtype=np.float64)[known]
    Kd = np.asarray(K, dtype=np.float64)
    rvec0, _ = cv2.Rodrigues(np.asarray(viewmat, dtype=np.float64)[:3, :3])
    tvec0 = np.asarray(viewmat, dtype=np.float64)[:3, 3].reshape(3, 1)
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(
        obj, img, Kd, None, rvec=rvec0.copy(), tvec=tvec0.copy(), useExtrinsicGuess=True,
        iterationsCount=200, reprojectionError=float(threshold_px), confidence=0.999,
        flags=cv2.SOLVEPNP_ITERATIVE)
    n_in = 0 if inliers is None else len(inliers)
    if not ok or n_in < MIN_INLIERS:
        return PnPResult(None, len(render_pts), n_in)
    idx = inliers[:, 0]
    rvec, tvec = cv2.solvePnPRefineLM(obj[idx], img[idx], Kd, None, rvec, tvec)
    out_vm = np.eye(4)
    out_vm[:3, :3] = cv2.Rodrigues(rvec)[0]
    out_vm[:3, 3] = tvec[:, 0]
    if not np.all(np.isfinite(out_vm)):
        return PnPResult(None, len(render_pts), n_in)
    return PnPResult(out_vm, len(render_pts), n_in)
