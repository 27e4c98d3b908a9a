"""Fit a GaussianScene to posed images (3DGS optimisation, paper section 3.1).

The 3DGS recipe with gsplat's pieces: Adam per parameter group, the L1 + D-SSIM
objective (lambda 0.2) over a plain background colour (white for MAD), densification and
pruning by gsplat's ``DefaultStrategy`` (pure torch, so it runs with either render
backend), SH degree raised progressively. Every view has its own pinhole K and size, and
optionally a mask of the pixels to fit (a capture's masks, the valid area after
undistortion). Gaussians start at the capture's SfM points when it has them (COLMAP's
points3D); MAD has none, so they start at random points in the sphere the cameras see
around the point they look at, optionally carved to the object's visual hull (points that
project onto non-background pixels in most views).
Every ``holdout_every``-th view is held out and scores the model (PSNR) at the end.

Two options for real captures (beyond the paper). ``pose_opt``: noisy training poses (SfM,
a robot's TF) are refined jointly with the scene, one SE(3) correction per view as
gsplat's trainer does (a camera-frame twist, ``cameras.apply_pose_increment``); held-out
views, which the scene never fits, get theirs by IGS against the trained scene before
they are scored. ``appearance``: each training view has its own colour transform
(per-channel gain and offset, zero mean over the views so the scene keeps the average
look), which absorbs auto-exposure and white balance; held-out views are colour-matched
(``photometric.fit_colour_transform``) before the PSNR.
"""
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from gsplat.strategy import DefaultStrategy

from igspad_ros.core import cameras
from igspad_ros.core.igs import IGSConfig, invert_pose
from igspad_ros.core.photometric import IDENTITY, fit_colour_transform
from igspad_ros.core.render import render
from igspad_ros.core.scene import GaussianScene

SSIM_LAMBDA = 0.2
BACKGROUND = (1.0, 1.0, 1.0)
DIVERGENCE_CHECK_EVERY = 100   # steps between checks that every parameter is finite


@dataclass
class TrainConfig:
    """Training settings; ``for_device`` gives the GPU (paper) or CPU (minutes) defaults.

    Learning rates follow 3DGS / gsplat's trainer; ``lr_scale`` multiplies all of them
    (short CPU runs take larger steps). Densification thresholds are those of gsplat's
    DefaultStrategy, with ``grow_grad2d`` lowered for small images.
    """

    iters: int = 30_000
    size: int | None = 800          # longest image side the data is loaded at (None: native)
    batch_size: int = 1
    sh_degree: int = 3
    sh_degree_interval: int = 1000  # raise the active SH degree every this many steps
    n_init: int = 100_000
    init_carve: bool = True         # keep initial points inside the object's visual hull
    init_opacity: float = 0.1
    init_background: float = 0.0   # share of random initial points beyond the object (room)
    lr_means: float = 1.6e-4        # times the scene scale, decayed 100x over the run
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 2.5e-3
    lr_shN: float = 2.5e-3 / 20
    lr_scale: float = 1.0
    grow_grad2d: float = 2e-4
    prune_opa: float = 5e-3
    refine_start_iter: int = 500
    refine_stop_iter: int = 15_000
    refine_every: int = 100
    reset_every: int = 3000
    holdout_every: int = 8          # every 8th view is held out for the PSNR (0: none)
    background: tuple = BACKGROUND  # RGB in [0, 1] behind the Gaussians
    pose_opt: bool = False          # refine one SE(3) correction per training view
    pose_lr: float = 1e-3           # Adam on the twist (rotation rad, translation / scale)
    pose_opt_start: int = 100       # step the corrections start moving
    # rotate each view's correction about the point the cameras look at ('object': an orbit
    # is one coordinate, as in IGS) or about the camera centre ('camera', gsplat's trainer)
    pose_pivot: str = 'object'
    appearance: bool = False        # one colour transform (gain, offset) per training view
    appearance_lr: float = 5e-3
    seed: int = 0

    def __post_init__(self):
        checks = {'iters': self.iters >= 1, 'batch_size': self.batch_size >= 1,
                  'sh_degree': 0 <= self.sh_degree <= 3, 'n_init': self.n_init >= 1,
                  'init_opacity': 0 < self.init_opacity < 1, 'lr_scale': self.lr_scale > 0,
                  'init_background': 0.0 <= self.init_background < 1.0,
                  'holdout_every': self.holdout_every == 0 or self.holdout_every >= 2,
                  'size': self.size is None or 8 <= self.size <= 8192,
                  'refine_every': self.refine_every >= 1,
                  'sh_degree_interval': self.sh_degree_interval >= 1,
                  'pose_lr': self.pose_lr > 0, 'pose_opt_start': self.pose_opt_start >= 0,
                  'pose_pivot': self.pose_pivot in ('object', 'camera'),
                  'appearance_lr': self.appearance_lr > 0,
                  'background': len(self.background) == 3
                  and all(0.0 <= float(c) <= 1.0 for c in self.background)}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f'TrainConfig: invalid {", ".join(bad)}')

    @classmethod
    def for_device(cls, device, **overrides):
        """Defaults for ``device``: the paper's scale on CUDA, a minutes-long run on CPU."""
        if str(device).startswith('cuda'):
            base = {}
        else:
            base = dict(iters=1000, size=128, batch_size=1, sh_degree=1, sh_degree_interval=500,
                        n_init=4000, init_opacity=0.3, lr_scale=3.0, grow_grad2d=2e-4,
                        refine_start_iter=200, refine_stop_iter=700, refine_every=100,
                        reset_every=100_000)
        base.update(overrides)
        return cls(**base)


@dataclass
class TrainReport:
    """What a training run reached: held-out PSNR (dB), Gaussians, seconds, steps.

    With ``pose_opt``, ``viewmats`` are every view's refined pose (training order, held-out
    views by IGS) and ``pose_correction`` summarises how far they moved: median and maximum
    rotation (degrees) and camera-centre shift (fraction of the scene scale).
    """

    psnr: float | None
    n_gaussians: int
    seconds: float
    iters: int
    n_train_views: int
    n_holdout_views: int
    pose_correction: dict | None = None
    viewmats: list | None = field(default=None, repr=False)

    def as_dict(self):
        """Return the report as a plain dict (for JSON), without the refined viewmats."""
        out = asdict(self)
        out.pop('viewmats')
        return out


def train_scene(images, viewmats, K, config=None, device='cpu', progress=None, masks=None,
                points=None, point_colors=None):
    """Fit a scene to ``images`` (list of (H,W,3) float32) seen from ``viewmats`` (OpenCV).

    ``K`` is one (3,3) pinhole for all images or one per image (V,3,3); images may differ in
    size when ``config.batch_size`` is 1. ``masks`` (list of (H,W) bool or None) restrict
    the objective to the pixels that show the scene. ``points`` (N,3) and ``point_colors``
    (N,3) in [0,1] seed the Gaussians (SfM points). ``progress(n)`` is called after every n
    steps. Returns (GaussianScene on the CPU, TrainReport).
    """
    config = config or TrainConfig.for_device(device)
    start = time.perf_counter()
    images = [np.asarray(im, dtype=np.float32) for im in images]
    viewmats = [np.asarray(v, dtype=np.float64) for v in viewmats]
    Ks = _per_view(K, len(images))
    masks = list(masks) if masks is not None else [None] * len(images)
    if not images or len(images) != len(viewmats) or len(masks) != len(images):
        raise ValueError(f'train_scene: {len(images)} images, {len(viewmats)} viewmats and '
                         f'{len(masks)} masks')
    sizes = {im.shape for im in images}
    if any(im.ndim != 3 or im.shape[2] != 3 for im in images):
        raise ValueError('train_scene: images must all be (H, W, 3)')
    if len(sizes) > 1 and config.batch_size > 1:
        raise ValueError('train_scene: images of different sizes need batch_size 1')
    if any(m is not None and m.shape != im.shape[:2] for m, im in zip(masks, images)):
        raise ValueError('train_scene: a mask differs in size from its image')
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    held = [i for i in range(len(images)) if config.holdout_every
            and i % config.holdout_every == 0 and len(images) > 1]
    train = [i for i in range(len(images)) if i not in set(held)]

    gt = [torch.from_numpy(im).to(device) for im in images]                       # (H, W, 3)
    fit = [None if m is None else torch.from_numpy(np.asarray(m, bool)).to(device)[..., None]
           for m in masks]                                                        # (H, W, 1)
    vms = torch.from_numpy(np.stack(viewmats)).float().to(device)                # (V, 4, 4)
    Ks_t = torch.from_numpy(Ks).float().to(device)                               # (V, 3, 3)
    centres = np.stack([cameras.camera_center(v) for v in viewmats])
    scene_scale = 1.1 * float(np.linalg.norm(centres - centres.mean(0), axis=1).max())
    scene_scale = scene_scale if scene_scale > 0 else 1.0
    background = tuple(float(c) for c in config.background)

    init = _initial_scene([images[i] for i in train], [viewmats[i] for i in train],
                          Ks[train], [masks[i] for i in train], config, rng, points,
                          point_colors)
    params, optimizers = _optimisation_state(init, config, scene_scale, device)
    strategy = DefaultStrategy(prune_opa=config.prune_opa, grow_grad2d=config.grow_grad2d,
                               refine_start_iter=config.refine_start_iter,
                               refine_stop_iter=config.refine_stop_iter,
                               refine_every=config.refine_every,
                               reset_every=config.reset_every)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=scene_scale)
    decay = 0.01 ** (1.0 / max(config.iters, 1))
    window = _ssim_window(device)
    views = _ViewCorrections(viewmats, config, scene_scale, device)

    for step in range(config.iters):
        idx = rng.choice(train, size=min(config.batch_size, len(train)), replace=False)
        height, width = images[idx[0]].shape[:2]
        degree = min(step // config.sh_degree_interval, config.sh_degree)
        pick = torch.as_tensor(idx, device=device)
        out = render(_scene_of(params, degree), views.viewmats(vms, pick, step), Ks_t[pick],
                     width, height, background=background)
        rgb = views.colour(out.rgb, pick)
        target = torch.stack([gt[i] if fit[i] is None
                              else torch.where(fit[i], gt[i], rgb[k].detach())
                              for k, i in enumerate(idx)])
        loss = photometric_loss(rgb, target, window)
        strategy.step_pre_backward(params, optimizers, state, step, out.info)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        for group in optimizers['means'].param_groups:
            group['lr'] *= decay
        views.step(step, decay)
        strategy.step_post_backward(params, optimizers, state, step, out.info, packed=False)
        if (step + 1) % DIVERGENCE_CHECK_EVERY == 0 or step + 1 == config.iters:
            _check_finite(params, views, step + 1)
        if progress is not None:
            progress(1)

    scene = _scene_of(params, config.sh_degree).detach()
    refined = views.refined(vms)
    if config.pose_opt and held:    # the scene never saw them: their poses come from IGS
        igs = IGSConfig(steps=60, lr_decay_step=40, mps=False)
        for i in held:
            refined[i] = invert_pose(scene, images[i], viewmats[i], Ks[i], igs,
                                     background=background).viewmat
    psnr = None
    if held:   # scored on the training device (gsplat on CUDA)
        psnr = float(np.mean([render_psnr(scene, refined[i], Ks[i], images[i], masks[i],
                                          background, match_colour=config.appearance)
                              for i in held]))
    scene = scene.to('cpu')
    report = TrainReport(psnr=psnr, n_gaussians=scene.n, seconds=time.perf_counter() - start,
                         iters=config.iters, n_train_views=len(train), n_holdout_views=len(held))
    if config.pose_opt:
        report.viewmats = refined
        report.pose_correction = pose_change(viewmats, refined, scene_scale)
    return scene, report


class _ViewCorrections:
    """Per-view pose twists and colour transforms optimised with the scene (when enabled)."""

    def __init__(self, viewmats, config, scene_scale, device):
        n_views = len(viewmats)
        self.config = config
        self.scale = torch.tensor([scene_scale] * 3 + [1.0] * 3, device=device)
        self.twists = self.colours = None
        self.optimizers = []
        if config.pose_opt:
            self.twists = torch.nn.Parameter(torch.zeros(n_views, 6, device=device))
            centre = (torch.tensor(look_at_centre(viewmats), device=device)
                      if config.pose_pivot == 'object' else None)
            self.frames = cameras.pivot_frames(
                torch.tensor(np.stack(viewmats), dtype=torch.float32, device=device), centre)
            self.optimizers.append(torch.optim.Adam([self.twists], lr=config.pose_lr))
        if config.appearance:     # (gain - 1, offset) per channel
            self.colours = torch.nn.Parameter(torch.zeros(n_views, 2, 3, device=device))
            self.optimizers.append(torch.optim.Adam([self.colours], lr=config.appearance_lr))

    def viewmats(self, vms, pick, step):
        """Viewmats of the picked views, corrected once the corrections may move."""
        if self.twists is None or step < self.config.pose_opt_start:
            return vms[pick]
        return self._corrected(vms[pick], pick)

    def _corrected(self, vms, pick):
        """Return the views ``pick`` (all: a full slice) with their corrections applied."""
        return cameras.apply_pivoted_increment(self.twists[pick] * self.scale, vms,
                                               self.frames[pick])

    def colour(self, rgb, pick):
        """Return the rendered (B, H, W, 3) images in each picked view's own colours."""
        if self.colours is None:
            return rgb
        c = self.colours[pick]
        return rgb * (1.0 + c[:, None, None, 0]) + c[:, None, None, 1]

    def step(self, step, decay):
        """Apply the gradients; keep the colours' mean at zero (the scene holds the mean)."""
        for opt in self.optimizers:
            if opt.param_groups[0]['params'][0].grad is not None:
                opt.step()
            opt.zero_grad(set_to_none=True)
            for group in opt.param_groups:
                group['lr'] *= decay ** 0.5
        if self.colours is not None:
            with torch.no_grad():
                self.colours -= self.colours.mean(0, keepdim=True)

    def refined(self, vms):
        """Every view's corrected viewmat, (4, 4) float64 numpy each."""
        if self.twists is None:
            return [v.double().cpu().numpy() for v in vms]
        with torch.no_grad():
            out = self._corrected(vms, slice(None))
        return [v.double().cpu().numpy() for v in out]


def pose_change(before, after, scale):
    """Median and max rotation (deg) and centre shift (fraction of ``scale``) between poses."""
    rot = [cameras.rotation_error_deg(a, b) for a, b in zip(after, before)]
    shift = [np.linalg.norm(cameras.camera_center(a) - cameras.camera_center(b)) / scale
             for a, b in zip(after, before)]
    return {'rot_deg_median': float(np.median(rot)), 'rot_deg_max': float(np.max(rot)),
            'shift_median': float(np.median(shift)), 'shift_max': float(np.max(shift))}


def _per_view(K, n):
    """(n, 3, 3) float64 intrinsics from one K or one per view."""
    Ks = np.asarray(K, dtype=np.float64)
    if Ks.shape == (3, 3):
        Ks = np.broadcast_to(Ks, (n, 3, 3))
    if Ks.shape != (n, 3, 3) or not np.all(np.isfinite(Ks)):
        raise ValueError(f'train_scene: K must be (3, 3) or ({n}, 3, 3) finite, got {Ks.shape}')
    return np.ascontiguousarray(Ks)


def _initial_scene(images, viewmats, Ks, masks, config, rng, points, point_colors):
    """Gaussians at the SfM points (up to n_init, subsampled) or at carved random points."""
    if points is not None and len(points):
        points = np.asarray(points, dtype=np.float64)
        colors = (np.full(points.shape, 0.5) if point_colors is None
                  else np.asarray(point_colors, dtype=np.float64))
        if colors.shape != points.shape:
            raise ValueError(f'train_scene: {len(colors)} point colours for {len(points)} points')
        keep = np.sort(rng.choice(len(points), size=min(config.n_init, len(points)),
                                  replace=False))
        points, colors = points[keep].astype(np.float32), np.clip(colors[keep], 0, 1)
    else:
        n_far = int(round(config.init_background * config.n_init))
        points = initial_points(images, viewmats, Ks, config.n_init - n_far, config.init_carve,
                                rng, background=config.background, masks=masks)
        if n_far:
            points = np.concatenate([points, surrounding_points(viewmats, n_far, rng)])
        colors = np.clip(0.5 + 0.05 * rng.standard_normal(points.shape), 0, 1)
    return GaussianScene.from_points(points, colors, sh_degree=config.sh_degree,
                                     opacity=config.init_opacity)


def photometric_loss(rendered, target, window=None):
    """3DGS objective: (1 - lambda) L1 + lambda (1 - SSIM), images (..., H, W, 3)."""
    l1 = (rendered - target).abs().mean()
    return (1.0 - SSIM_LAMBDA) * l1 + SSIM_LAMBDA * (1.0 - ssim(rendered, target, window))


def ssim(a, b, window=None):
    """Mean SSIM of images (..., H, W, 3) in [0, 1]: 11x11 Gaussian window, sigma 1.5."""
    window = _ssim_window(a.device) if window is None else window
    x = a.reshape(-1, *a.shape[-3:]).permute(0, 3, 1, 2)
    y = b.reshape(-1, *b.shape[-3:]).permute(0, 3, 1, 2).to(x.dtype)
    w = window.to(x.dtype).expand(3, 1, 11, 11)

    def blur(t):
        return F.conv2d(t, w, padding=5, groups=3)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (num / den).mean()


@torch.no_grad()
def render_psnr(scene, viewmat, K, image, mask=None, background=BACKGROUND, match_colour=False):
    """PSNR (dB) of the scene rendered at ``viewmat`` against ``image`` (H,W,3) in [0,1].

    With ``mask`` (H,W) bool only those pixels count; with ``match_colour`` the render is
    first colour-matched to the image (``photometric.fit_colour_transform``).
    """
    height, width = image.shape[:2]
    rgb = render(scene, torch.as_tensor(viewmat, dtype=torch.float32), K, width, height,
                 background=background).rgb.clamp(0, 1).cpu()
    if match_colour:
        colour = fit_colour_transform(rgb.numpy(), image, mask)
        rgb = rgb if colour == IDENTITY else torch.from_numpy(colour.apply(rgb.numpy()))
    err = ((rgb - torch.as_tensor(image)) ** 2).mean(-1)
    mse = float(err.mean() if mask is None else err[torch.as_tensor(np.asarray(mask, bool))]
                .mean())
    return -10.0 * math.log10(max(mse, 1e-12))


def initial_points(images, viewmats, K, n, carve, rng, background=BACKGROUND, masks=None):
    """``n`` random points in the sphere the cameras see around the point they look at.

    The centre is that point (``look_at_centre``), the radius the median camera distance
    to it times the half field of view. With ``carve`` four fifths of the points are drawn
    from the visual hull: candidates that project onto a pixel unlike ``background`` (and
    inside the view's mask, when given) in at least 80 % of the views that see them. ``K``
    is one (3,3) or one per view.
    """
    Ks = _per_view(K, len(images))
    centre = look_at_centre(viewmats)
    dist = np.median([np.linalg.norm(cameras.camera_center(v) - centre) for v in viewmats])
    half_fov = np.median([0.5 * max(im.shape[1] / k[0, 0], im.shape[0] / k[1, 1])
                          for im, k in zip(images, Ks)])
    radius = dist * half_fov
    n_hull = int(0.8 * n) if carve else 0
    hull = np.zeros((0, 3))
    if n_hull:
        masks = masks if masks is not None else [None] * len(images)
        bg = np.asarray(background, dtype=np.float32)
        views = np.linspace(0, len(images) - 1, min(len(images), 60)).round().astype(int)
        fg = [np.abs(np.asarray(images[i]) - bg).max(axis=2) > 0.05 for i in views]
        fg = [f if masks[i] is None else f & masks[i] for f, i in zip(fg, views)]
        for _ in range(8):
            cand = centre + _in_sphere(rng, 4 * n_hull, radius)
            seen = np.zeros(len(cand))
            hits = np.zeros(len(cand))
            for mask, i in zip(fg, views):
                height, width = mask.shape
                pix, depth = cameras.project_points(cand, viewmats[i], Ks[i])
                col, row = np.floor(pix[:, 0]).astype(int), np.floor(pix[:, 1]).astype(int)
                inside = (depth > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
                seen += inside
                hits[inside] += mask[row[inside], col[inside]]
            hull = np.concatenate([hull, cand[(seen > 0) & (hits >= 0.8 * seen)]])
            if len(hull) >= n_hull:
                break
        hull = hull[:n_hull]
    rest = centre + _in_sphere(rng, n - len(hull), radius)
    return np.concatenate([hull, rest]).astype(np.float32)


def surrounding_points(viewmats, n, rng):
    """``n`` random points around the cameras, for a background the Gaussians must model.

    Uniform in direction around the cameras' look-at point, at distances from a tenth to
    three times the median camera distance (a room, a table beyond the object).
    """
    centre = look_at_centre(viewmats)
    dist = np.median([np.linalg.norm(cameras.camera_center(v) - centre) for v in viewmats])
    direction = rng.standard_normal((n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return (centre + direction * dist * rng.uniform(0.1, 3.0, (n, 1))).astype(np.float32)


def plain_background(images, masks=None, tolerance=0.05):
    """Tell whether the images' border pixels are one colour (a backdrop), not a scene."""
    rims = _border_pixels(images, masks)
    if not len(rims):
        return True
    return bool(np.median(np.abs(rims - np.median(rims, axis=0)).max(axis=1)) < tolerance)


def _border_pixels(images, masks=None):
    masks = masks if masks is not None else [None] * len(images)
    rims = []
    for image, mask in zip(images, masks):
        image = np.asarray(image, dtype=np.float32)
        rim = np.zeros(image.shape[:2], bool)
        rim[[0, -1], :] = rim[:, [0, -1]] = True
        if mask is not None:
            rim &= mask
        rims.append(image[rim])
    return np.concatenate(rims) if rims else np.zeros((0, 3), np.float32)


def border_colour(images, masks=None):
    """Median colour of the images' border pixels (inside their masks): a capture's backdrop.

    Rounded to 8 bits, so a white or black backdrop gives exactly white or black.
    """
    rims = _border_pixels(images, masks)
    if not len(rims):
        return BACKGROUND
    return tuple(float(c) for c in np.round(np.median(rims, axis=0) * 255.0) / 255.0)


def look_at_centre(viewmats):
    """Return the point closest (least squares) to every camera's optical axis.

    MAD's cameras all look at the origin; a user's capture (SfM frame) can look anywhere.
    Cameras whose axes are all parallel leave it undefined: then the cameras' mean centre.
    """
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for v in viewmats:
        v = np.asarray(v, dtype=np.float64)
        axis = v[2, :3]                       # optical axis (camera z) in world coordinates
        P = np.eye(3) - np.outer(axis, axis)
        c = cameras.camera_center(v)
        A += P
        b += P @ c
    if np.linalg.cond(A) > 1e8:
        return np.mean([cameras.camera_center(v) for v in viewmats], axis=0)
    return np.linalg.solve(A, b)


def _in_sphere(rng, n, radius):
    direction = rng.standard_normal((n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return direction * radius * rng.random((n, 1)) ** (1.0 / 3.0)


def _optimisation_state(scene, config, scene_scale, device):
    """gsplat-style ParameterDict (names the strategy expects) and one Adam per group."""
    k = scene.sh.shape[1]
    tensors = {'means': scene.means, 'scales': scene.log_scales, 'quats': scene.quats,
               'opacities': scene.opacity_logits, 'sh0': scene.sh[:, :1]}
    lrs = {'means': config.lr_means * scene_scale, 'scales': config.lr_scales,
           'quats': config.lr_quats, 'opacities': config.lr_opacities, 'sh0': config.lr_sh0}
    if k > 1:
        tensors['shN'] = scene.sh[:, 1:]
        lrs['shN'] = config.lr_shN
    params = torch.nn.ParameterDict({name: torch.nn.Parameter(t.contiguous().to(device))
                                     for name, t in tensors.items()})
    optimizers = {name: torch.optim.Adam([{'params': params[name], 'name': name,
                                           'lr': lrs[name] * config.lr_scale}], eps=1e-15)
                  for name in params}
    return params, optimizers


def _check_finite(params, views, steps):
    """Raise ValueError when the optimisation has written a non-finite value anywhere."""
    tensors = dict(params.items(), twists=views.twists, colours=views.colours)
    bad = [name for name, t in tensors.items()
           if t is not None and not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f'train_scene: the optimisation diverged after {steps} steps '
                         f'(non-finite {", ".join(bad)}); nothing was written')


def _scene_of(params, degree):
    """GaussianScene view of the parameters with the first ``degree`` SH bands active."""
    sh = params['sh0']
    if 'shN' in params and degree > 0:
        sh = torch.cat([sh, params['shN'][:, :(degree + 1) ** 2 - 1]], dim=1)
    return GaussianScene(means=params['means'], quats=params['quats'],
                         log_scales=params['scales'], opacity_logits=params['opacities'],
                         sh=sh)


def _ssim_window(device):
    g = torch.exp(-0.5 * ((torch.arange(11, dtype=torch.float32) - 5) / 1.5) ** 2)
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(device)[None, None]
