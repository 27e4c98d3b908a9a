"""Inverting 3D Gaussian Splatting (IGS): camera pose by gradient descent (paper 3.2).

The pose is a left increment on the initial viewmat, ``exp(xi) @ viewmat0``
(``cameras.apply_pose_increment``), with the twist ``xi`` (6-vector, float32) optimised by
Adam through the differentiable renderer. The loss is eq. (4): the L1 difference between
the render and the test image, weighted by the Matching Points Sampling map (3.2.3), which
is 1 within ``k`` px of the test image's points matched to the current render and 0
elsewhere, so anomalous regions (which match nothing) do not pull the pose.

Beyond the paper: optionally a closed-form PnP correction of each start before the
gradient steps (``pnp``, ``core.pnp``); early stop when the pose stops moving; several
initial poses (top-k retrieved views) optimised together in one batched render, keeping the
lowest masked loss; renders at most at the scene's training size (supersampled well below
it), with optional last steps at a larger size (``fine_steps``), so a large image costs
little more than a small one.
"""
import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch

from igspad_ros.core import cameras
from igspad_ros.core.images import check_rgb
from igspad_ros.core.matching import torch_threads
from igspad_ros.core.pnp import pnp_correct
from igspad_ros.core.render import render, supersample_factor

MIN_MPS_MATCHES = 8
WHITE = (1.0, 1.0, 1.0)   # MAD's background


@dataclass
class IGSConfig:
    """IGS options; the defaults are the paper's schedule (300 steps, lr 0.01 -> 0.001)."""

    steps: int = 300
    lr: float = 0.01
    lr_decay_step: int = 200
    lr_final: float = 0.001
    mps: bool = True
    mps_radius: float | None = None     # k in px of the input image; None = 8 % of its long side
    mps_every: int = 25                 # recompute the MPS map every N steps
    mps_floor: float = 0.0              # weight of unmatched pixels (paper: 0)
    mps_min_matches: int = MIN_MPS_MATCHES  # fewer matches: every pixel weighs 1
    early_stop: bool = True             # a still pose ends the high rate early, then the run
    early_stop_window: int = 20         # steps over which the pose must stay still
    early_stop_deg: float = 0.05        # rotation change (degrees) that counts as still
    early_stop_frac: float = 5e-4       # camera-centre change / distance that counts as still
    n_hypotheses: int = 1
    # before the gradient steps, correct each start by PnP on its render's matches with the
    # image lifted to 3D by the rendered depth (``core.pnp``; needs a matcher)
    pnp: bool = False
    pivot: str = 'object'               # rotate about the object centre ('object') or camera
    # Long side of the renders during IGS, at most the input's; None = the scene's training
    # size when known (a larger render holds no detail the scene has), else the input size.
    working_size: int | None = None
    fine_steps: int = 0                 # last steps at fine_size (at most a third of steps)
    fine_size: int | None = None        # long side of the fine steps; None = input size
    trace: bool = False
    # Torch threads on a CPU scene (restored afterwards; None = unchanged): renders of this
    # size do not share well, one IGS step at 64 px took 0.065 s on one thread and 1.6 s on
    # two on a loaded 2-core machine.
    torch_threads: int | None = 1

    def __post_init__(self):
        """Range-check every option."""
        checks = [
            ('steps', self.steps >= 1), ('lr', self.lr > 0), ('lr_final', self.lr_final > 0),
            ('lr_decay_step', self.lr_decay_step >= 0), ('mps_every', self.mps_every >= 1),
            ('mps_radius', self.mps_radius is None or self.mps_radius > 0),
            ('mps_floor', 0.0 <= self.mps_floor <= 1.0),
            ('mps_min_matches', self.mps_min_matches >= 1),
            ('early_stop_window', self.early_stop_window >= 2),
            ('early_stop_deg', self.early_stop_deg >= 0),
            ('early_stop_frac', self.early_stop_frac >= 0),
            ('n_hypotheses', self.n_hypotheses >= 1),
            ('pivot', self.pivot in ('object', 'camera')),
            ('working_size', self.working_size is None or self.working_size >= 16),
            ('fine_steps', self.fine_steps >= 0),
            ('fine_size', self.fine_size is None or self.fine_size >= 16),
            ('torch_threads', self.torch_threads is None or self.torch_threads >= 1)]
        bad = [name for name, ok in checks if not ok]
        if bad:
            raise ValueError(f'IGSConfig: out of range: {", ".join(bad)}')

    def with_steps(self, steps):
        """Return this schedule stretched to ``steps``.

        The decay stays at the same share of the run (two thirds in the paper, a third in
        ``pnp_igs_config``), the fine stage is at most a third.
        """
        return replace(self, steps=steps,
                       lr_decay_step=round(steps * self.lr_decay_step / self.steps),
                       fine_steps=min(self.fine_steps, steps // 3))


@dataclass
class PoseEstimate:
    """Result of ``invert_pose``: the viewmat (4, 4) float64 and how the optimisation went."""

    viewmat: np.ndarray
    loss: float
    steps: int
    converged: bool
    trace: list | None = None
    hypothesis: int = 0
    n_matches: list = field(default_factory=list)


def masked_l1_loss(rendered, target, weight):
    """Eq. (4): sum over pixels of |I_r - I_t| * W divided by the pixel count n^2.

    ``rendered`` (..., H, W, 3), ``target`` (H, W, 3), ``weight`` (..., H, W); the colour
    difference is averaged over the channels. Returns one loss per leading index.
    """
    diff = (rendered - target).abs().mean(-1)
    h, w = diff.shape[-2:]
    return (diff * weight).sum((-2, -1)) / float(h * w)


def mps_weight_map(points, height, width, radius, floor=0.0):
    """Build the Matching Points Sampling map (3.2.3): 1 within ``radius`` px of a point, else 0.

    ``points`` (M, 2) pixel-edge (x, y); pixel (i, j) counts from its centre (j + .5, i + .5).
    ``floor`` (beyond the paper) is the weight of the pixels far from every point instead
    of 0, so that no region of the image drops out of eq. (4) entirely.
    Returns (height, width) float32.
    """
    weight = np.full((height, width), float(floor), np.float32)
    r = float(radius)
    for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2):
        j0, j1 = max(0, math.floor(x - r - 0.5)), min(width, math.ceil(x + r + 0.5))
        i0, i1 = max(0, math.floor(y - r - 0.5)), min(height, math.ceil(y + r + 0.5))
        if j0 >= j1 or i0 >= i1:
            continue
        dx = np.arange(j0, j1) + 0.5 - x
        dy = np.arange(i0, i1) + 0.5 - y
        inside = dy[:, None] ** 2 + dx[None, :] ** 2 <= r * r
        weight[i0:i1, j0:j1][inside] = 1.0
    return weight


def invert_pose(scene, image, init_viewmat, K, config=None, matcher=None, width=None,
                height=None, test_features=None, background=WHITE, scene_size=None):
    """Estimate the viewmat of ``image`` (H, W, 3) float32 by inverting the scene's renderer.

    ``init_viewmat`` is a (4, 4) viewmat, or with ``config.n_hypotheses > 1`` a list or
    (C, 4, 4) array of starts optimised together. ``K`` holds for an image of
    ``width`` x ``height`` (default: the image's size) and is rescaled to the image. MPS
    needs ``matcher``; ``test_features`` are the image's Features if already extracted.
    ``background`` is the scene's background colour (the one it was trained over).
    ``scene_size`` is the long side of the views it was trained on, if known: the working
    size unless ``config.working_size`` says, and renders at half that or less are supersampled
    (``render.supersample_factor``). The returned loss is the working size's, so that it
    compares with other images' whatever their size.
    """
    config = config or IGSConfig()
    threads = config.torch_threads if scene is not None and scene.device.type == 'cpu' else None
    with torch_threads(threads):
        return _invert_pose(scene, image, init_viewmat, K, config, matcher, width, height,
                            test_features, tuple(float(c) for c in background), scene_size)


def _invert_pose(scene, image, init_viewmat, K, config, matcher, width, height, test_features,
                 background, scene_size):
    image = check_rgb(image, 'invert_pose', 8)
    img_h, img_w = image.shape[:2]
    K = cameras.scale_intrinsics(K, (width or img_w, height or img_h), (img_w, img_h))
    starts = _check_starts(init_viewmat, config.n_hypotheses)
    if (config.mps or config.pnp) and matcher is None:
        raise ValueError(f'invert_pose: {"MPS (config.mps)" if config.mps else "config.pnp"} '
                         'needs a matcher')
    # k is not given in the paper; 8 % of the long side (5 px at 64, 64 px at 800) ended a
    # 10 deg / 10 % start on the 64 px test scene at 0.59 deg / 0.95 %, 4 % at 0.79 / 1.10 %
    radius = config.mps_radius or 0.08 * max(img_w, img_h)
    device = scene.device
    working = min(config.working_size or scene_size or max(img_w, img_h), max(img_w, img_h))
    coarse = _Level(image, K, working, device, scene_size)
    if config.pnp:
        starts = np.stack([_pnp_start(scene, v, coarse, matcher, test_features, background)
                           for v in starts])
    v0 = torch.tensor(starts, dtype=torch.float32, device=device)
    pose = _PivotedPose(v0, scene, config.pivot)
    xi = torch.zeros((len(starts), 6), dtype=torch.float32, device=device, requires_grad=True)
    optimiser = torch.optim.Adam([xi], lr=config.lr)
    fine = (_Level(image, K, config.fine_size, device, scene_size) if config.fine_steps
            else coarse)
    # a fine level no larger than the coarse level is no stage of its own
    fine_steps = (min(config.fine_steps, config.steps // 3)
                  if fine.w * fine.h > coarse.w * coarse.h else 0)
    fine = fine if fine_steps else coarse
    history = [np.stack([cameras.camera_center(v) for v in starts])]
    rotations = [starts[:, :3, :3]]
    trace = [] if config.trace else None
    weights, level, converged, step = None, None, False, 0
    decay_step = config.lr_decay_step
    fine_from, end = config.steps - fine_steps, config.steps
    for step in range(config.steps):
        if step >= end:
            step -= 1
            break
        new_level = fine if step >= fine_from else coarse
        lr = config.lr if step < decay_step else config.lr_final
        for group in optimiser.param_groups:
            group['lr'] = lr
        viewmats = pose(xi)
        if config.mps and (step % config.mps_every == 0 or new_level is not level):
            weights, _ = _mps_weights(scene, viewmats.detach(), new_level, matcher,
                                      test_features, radius, background, config)
        elif not config.mps and new_level is not level:
            weights = torch.ones((len(starts), new_level.h, new_level.w), device=device)
        level = new_level
        out = render(scene, viewmats, level.K, level.w, level.h, background=background,
                     supersample=level.supersample)
        losses = masked_l1_loss(out.rgb, level.target, weights)
        optimiser.zero_grad()
        losses.sum().backward()
        optimiser.step()
        current = pose(xi.detach()).double().cpu().numpy()
        history.append(np.stack([cameras.camera_center(v) for v in current]))
        rotations.append(current[:, :3, :3])
        if trace is not None:
            trace.append({'step': step, 'lr': lr, 'loss': losses.detach().cpu().numpy().tolist(),
                          'viewmats': current})
        if config.early_stop and _pose_still(history, rotations, config):
            if fine_steps and step + 1 >= decay_step and step + 1 < fine_from:
                # still at the coarse size: the fine steps follow now, then the run ends
                fine_from, end = step + 1, step + 1 + fine_steps
                history, rotations = history[-1:], rotations[-1:]
                continue
            if step + 1 >= decay_step:
                converged = True
                break
            # still at the high rate: move on to the low rate now instead of waiting for
            # the scheduled step, and measure stillness afresh from here
            decay_step = step + 1
            history, rotations = history[-1:], rotations[-1:]
    final = pose(xi.detach())
    best, final_losses, n_matches = _select(scene, final, coarse, config, matcher,
                                            test_features, radius, background)
    if not converged:
        converged = _pose_still(history, rotations, config)
    return PoseEstimate(viewmat=final[best].double().cpu().numpy(),
                        loss=float(final_losses[best]), steps=step + 1, converged=converged,
                        trace=trace, hypothesis=int(best), n_matches=n_matches)


def _pnp_start(scene, viewmat, level, matcher, test_features, background):
    """``viewmat`` corrected by ``pnp.pnp_correct`` at the level's size when that fits better.

    The PnP pose is kept only when the plain L1 difference of its render with the image is
    lower than the start's, so a PnP on a handful of wrong matches cannot make it worse.
    """
    def fit(pose):
        with torch.no_grad():
            out = render(scene, torch.tensor(pose, dtype=torch.float32, device=scene.device),
                         level.K, level.w, level.h, background=background,
                         supersample=level.supersample)
        rgb = out.rgb.clamp(0.0, 1.0)
        return float((rgb - level.target).abs().mean()), rgb.cpu().numpy()

    start_fit, rendered = fit(viewmat)
    found = pnp_correct(scene, level._small, viewmat, level.K, matcher,
                        level.features(matcher, test_features), background, level.supersample,
                        rendered=rendered)
    if found.viewmat is None:
        return viewmat
    return found.viewmat if fit(found.viewmat)[0] < start_fit else viewmat


class _PivotedPose:
    """Viewmats exp(xi) applied in a camera frame moved to the pivot: P^-1 exp(xi) P V0.

    With the pivot at the object centre (its depth on the optical axis) a rotation orbits
    the camera about the object and a translation slides the object in the image, so the
    six twist coordinates act nearly independently, which suits Adam's per-coordinate step.
    The pivot at the camera centre (P = I) is the plain left increment.
    """

    def __init__(self, v0, scene, pivot):
        self.v0 = v0
        centre = scene.means.detach().median(0).values if pivot == 'object' else None
        self.frames = cameras.pivot_frames(v0, centre)

    def __call__(self, xi):
        return cameras.apply_pivoted_increment(xi, self.v0, self.frames)


class _Level:
    """The target image and intrinsics at one working resolution."""

    def __init__(self, image, K, working_size, device, scene_size=None):
        h, w = image.shape[:2]
        scale = 1.0 if working_size is None else min(1.0, working_size / max(w, h))
        self.w, self.h = max(1, round(w * scale)), max(1, round(h * scale))
        self.supersample = supersample_factor(scene_size, self.w, self.h)
        self.scale = (self.w / w, self.h / h)
        self.K = cameras.scale_intrinsics(K, (w, h), (self.w, self.h))
        small = image if (self.w, self.h) == (w, h) else cv2.resize(
            image, (self.w, self.h), interpolation=cv2.INTER_AREA)
        self.target = torch.from_numpy(np.ascontiguousarray(small)).to(device)
        self._small = small
        self._features = None

    def features(self, matcher, image_features):
        """Return the test image's keypoints at this level, in its pixels.

        MPS matches the level's render with the image at one scale: features of a 512 px
        image against a 128 px render matched poorly (IGS ended 0.71 degrees off at 512 px,
        0.32 at 128 px; 0.35 at 512 px matched at one scale, ``bench/cost_curve.py``).
        ``image_features`` are the full image's, if known.
        """
        if self._features is None:
            full = self.scale == (1.0, 1.0) and image_features is not None
            self._features = image_features if full else matcher.extract(self._small)
        return self._features


@torch.no_grad()
def _mps_weights(scene, viewmats, level, matcher, test_features, radius, background, config):
    """Match each hypothesis' render to the test image; map around the matched test points.

    Unmatched pixels weigh ``config.mps_floor`` (0 in the paper); with fewer than
    ``config.mps_min_matches`` matches the map is all ones.
    """
    out = render(scene, viewmats, level.K, level.w, level.h, background=background,
                 supersample=level.supersample)
    maps, counts = [], []
    for rgb in out.rgb:
        rendered = rgb.clamp(0.0, 1.0).cpu().numpy()
        _, test_points, _ = matcher.match_scored(matcher.extract(rendered),
                                                 level.features(matcher, test_features))
        counts.append(int(len(test_points)))
        if len(test_points) < config.mps_min_matches:
            # too few matches to trust: weigh every pixel rather than stop the gradient
            maps.append(np.ones((level.h, level.w), np.float32))
            continue
        maps.append(mps_weight_map(test_points, level.h, level.w, radius * level.scale[0],
                                   floor=config.mps_floor))
    return torch.from_numpy(np.stack(maps)).to(scene.device), counts


@torch.no_grad()
def _select(scene, viewmats, level, config, matcher, test_features, radius, background):
    """Index of the hypothesis with the lowest eq. (4) loss under one common weight map.

    With several hypotheses the map is the union of their final MPS maps (normal regions of
    the test image matched by any of them), so the losses compare on the same pixels.
    """
    out = render(scene, viewmats, level.K, level.w, level.h, background=background,
                 supersample=level.supersample)
    if config.mps:
        weights, counts = _mps_weights(scene, viewmats, level, matcher, test_features, radius,
                                       background, config)
        common = weights.amax(0) if len(viewmats) > 1 else weights[0]
    else:
        common, counts = torch.ones((level.h, level.w), device=scene.device), []
    losses = masked_l1_loss(out.rgb, level.target, common).cpu().numpy()
    return int(np.argmin(losses)), losses, counts


def _pose_still(history, rotations, config):
    """Tell whether every hypothesis moved less than the tolerances over the last window."""
    n = config.early_stop_window
    if len(history) <= n:
        return False
    dist = np.linalg.norm(history[-1], axis=1)
    moved = np.linalg.norm(history[-1] - history[-1 - n], axis=1) / np.maximum(dist, 1e-9)
    r_now, r_then = rotations[-1], rotations[-1 - n]
    cos = (np.einsum('cij,cij->c', r_now, r_then) - 1.0) / 2.0
    turned = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return bool(np.all(moved < config.early_stop_frac) and np.all(turned < config.early_stop_deg))


def _check_starts(init_viewmat, n_hypotheses):
    starts = np.asarray(init_viewmat, dtype=np.float64)
    if starts.shape == (4, 4):
        starts = starts[None]
    if starts.ndim != 3 or starts.shape[1:] != (4, 4) or not np.all(np.isfinite(starts)):
        raise ValueError(f'invert_pose: init_viewmat must be (4, 4) or (C, 4, 4) finite, '
                         f'got {starts.shape}')
    if len(starts) > n_hypotheses:
        raise ValueError(f'invert_pose: {len(starts)} initial viewmats for n_hypotheses='
                         f'{n_hypotheses}')
    return starts
