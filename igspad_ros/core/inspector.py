"""Inspector: load a scene once, then inspect camera images (paper Fig. 2, stages ii and iii).

Per image: the initial pose is the retrieved training view with the most matches (3.2.2);
IGS with MPS refines it (3.2); the scene is rendered at the final pose; both images go
through the feature extractor and eq. (5) / eq. (6) give the anomaly map and image score
(3.3); the verdict compares the score with the threshold calibrated on normal views.
Beyond the paper, two steps before scoring make real photos comparable with renders: the
inspection region (``core.roi``, a box in the scene frame, by default the one stored in
the scene's meta at training) restricts the map and the score to the pixels that can show
the object, and the render is colour-matched to the photo on that region
(``core.photometric``: exposure and white balance, fitted robustly).

Scene artifacts live beside ``scene.ply``: the retrieval index (``scene.index.npz`` for the
default matcher, ``scene.index.<matcher>.npz`` for others) and ``thresholds`` in
``scene.meta.json``, one per extractor and scoring settings (``Inspector.threshold_key``).
``prepare_scene_artifacts`` builds both after training; ``Inspector`` builds whatever is
missing at load and saves it.

Threshold calibration uses training views held out of scene training (every
``holdout_every``-th view, as ``core.train`` does): each runs through the whole pipeline
with its own view excluded from retrieval, so its score carries a realistic pose error, and
the threshold is their median + k robust std, or their highest score when lower
(``scoring.calibrate_threshold``).
"""
import copy
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from igspad_ros.core import cameras
from igspad_ros.core.features import DEFAULT_EXTRACTOR, make_extractor
from igspad_ros.core.igs import WHITE, IGSConfig, invert_pose
from igspad_ros.core.images import check_rgb
from igspad_ros.core.matching import DEFAULT_MATCHER, make_matcher
from igspad_ros.core.photometric import IDENTITY, fit_colour_transform
from igspad_ros.core.render import render, supersample_factor
from igspad_ros.core.retrieval import RetrievalIndex, RetrievalIndexError
from igspad_ros.core.roi import RegionOfInterest, marker_scene, visible_region
from igspad_ros.core.scene import GaussianScene, read_scene_meta, sidecar_path, write_scene_meta
from igspad_ros.core.scoring import DEFAULT_K_STD, anomaly_map, calibrate_threshold, image_score

STAGES = ('retrieval', 'igs', 'render', 'features', 'scoring')
DEFAULT_HOLDOUT_EVERY = 8
MIN_REGION = 0.01       # calibration views whose region covers less of the image are skipped
# InspectorConfig fields that change image scores (beyond the extractor's name): a threshold
# is stored per combination of them (``Inspector.threshold_key``)
SCORING_SETTINGS = ('extractor_weights', 'extractor_input_size', 'sigma', 'pool_size',
                    'shift_radius', 'roi', 'photometric', 'calibration_views', 'calibration_k')
_LOG = logging.getLogger(__name__)


def cpu_igs_config():
    """IGS settings sized for a CPU: the paper's schedule compressed to 60 steps.

    Same learning rates (0.01 -> 0.001) with the decay at two thirds of the run, as the
    paper's 200 of 300. On the 128 px synthetic brick 60 steps reached the same pose
    (median 0.3 degrees) and metrics as 100 in 0.8 of the time. IGS renders at the scene's
    training size at most (``IGSConfig.working_size`` None): a larger render holds no detail
    the scene has, so a large image costs about what one of the training size does.
    A PnP-corrected start (``pnp_igs_config``) is an option, not the default.
    """
    return IGSConfig(steps=60, lr_decay_step=40)


def pnp_igs_config():
    """CPU IGS from a PnP-corrected start: 20 steps at the high rate, 40 at the low one.

    PnP (``IGSConfig.pnp``) brought the retrieved start from a median 9.5 to 2.0 degrees on
    the development animal (seed 0, 20 test images), so fewer steps at the high rate
    suffice; without PnP that early decay left 4 of the first 13 of them 3.5 to 5.4 degrees
    off. Not the default: on the reporting animals its median pose is better but one image
    ended over 2 degrees and the verdict was no better (README).
    """
    return IGSConfig(steps=60, lr_decay_step=20, pnp=True)


def coarse_to_fine_igs_config():
    """CPU IGS for large images: renders at most 128 px long, the last 10 steps at 256 px."""
    return replace(cpu_igs_config(), working_size=128, fine_steps=10, fine_size=256)


@dataclass
class InspectorConfig:
    """What the Inspector runs; defaults are shipped-weight models and CPU-sized IGS."""

    extractor: str = DEFAULT_EXTRACTOR
    extractor_weights: str | None = None
    extractor_input_size: int | None = None
    matcher: str = DEFAULT_MATCHER
    igs: IGSConfig = field(default_factory=cpu_igs_config)
    shortlist: int = 24             # retrieval: LightGlue on the best views by cheap score
    sigma: float | None = None      # anomaly map smoothing in px (None: long side / 64)
    pool_size: int | None = None    # eq. (6) pooling window in px (None: long side / 16)
    shift_radius: int = 1           # feature cells of residual misalignment tolerated
    threshold: float | None = None  # verdict threshold override
    calibration_views: int = 16     # held-out views scored for the threshold (at most)
    calibration_k: float = DEFAULT_K_STD
    roi: object = 'scene'           # 'scene': the meta's box; 'none': whole image; 6 numbers
    recover_factor: float = 2.0     # retry IGS when its residual exceeds this x the normal one
    recover_starts: int = 3         # other retrieved views (>= 15 deg apart) tried then
    photometric: bool = True        # colour-match the render to the photo before scoring

    def __post_init__(self):
        """Range-check the options that IGSConfig and the extractor do not check."""
        checks = [('shortlist', self.shortlist >= 0), ('shift_radius', self.shift_radius >= 0),
                  ('sigma', self.sigma is None or self.sigma >= 0),
                  ('pool_size', self.pool_size is None or self.pool_size >= 1),
                  ('calibration_views', self.calibration_views >= 2),
                  ('calibration_k', self.calibration_k >= 0),
                  ('recover_factor', self.recover_factor > 0),
                  ('recover_starts', self.recover_starts >= 0)]
        bad = [name for name, ok in checks if not ok]
        if bad:
            raise ValueError(f'InspectorConfig: out of range: {", ".join(bad)}')
        if not (self.roi in ('scene', 'none') or isinstance(self.roi, RegionOfInterest)):
            self.roi = RegionOfInterest.parse(self.roi)


@dataclass
class InspectionResult:
    """One inspected image: maps at the image's size, verdict, pose and timings."""

    anomaly_map: np.ndarray         # (H, W) float32, eq. (5)
    image_score: float              # eq. (6)
    anomalous: bool
    threshold: float
    viewmat: np.ndarray             # (4, 4) float64 OpenCV world-to-camera, after IGS
    pose_residual: float            # eq. (4) loss at the final pose
    rendered: np.ndarray            # (H, W, 3) float32 normal render at ``viewmat``
    seconds: dict                   # stage -> seconds, stages in STAGES
    retrieved_view: int = -1        # training view that gave the initial pose
    init_viewmat: np.ndarray | None = None
    region: np.ndarray | None = None  # (H, W) bool inspection region; None: whole image
    retried: bool = False           # IGS was run again from other views (high residual)
    colour: object = IDENTITY       # photometric.ColourTransform applied to ``rendered``


class Inspector:
    """Scene, retrieval index, matcher and extractor, loaded once; ``inspect`` per image.

    ``train_views`` (objects with ``.image`` and ``.viewmat``, e.g. ``Capture.train``)
    are used to build a missing index and to calibrate a missing threshold; without them
    the scene's renders at the indexed training poses stand in. ``rebuild`` rebuilds and
    recalibrates even when the sidecars exist.
    """

    def __init__(self, scene_path, config=None, device='cpu', train_views=None, rebuild=False,
                 holdout_every=None):
        self.scene_path = Path(scene_path)
        self.config = config or InspectorConfig()
        self.device = _resolve_device(device)
        self.meta = read_scene_meta(self.scene_path)
        self.scene = GaussianScene.load_ply(self.scene_path).to(self.device)
        self.K = np.asarray(self.meta['K'], dtype=np.float64)
        self.size = (int(self.meta['width']), int(self.meta['height']))
        self.background = tuple(float(c) for c in self.meta.get('background', WHITE))
        self.roi = self._region_of_interest()
        self._marker = None if self.roi is None else marker_scene(self.scene, self.roi)
        self.matcher = make_matcher(self.config.matcher, device=self.device)
        self.extractor = make_extractor(self.config.extractor, device=self.device,
                                        weights=self.config.extractor_weights,
                                        input_size=self.config.extractor_input_size)
        self._train_views = list(train_views) if train_views is not None else None
        trained = self.meta.get('train') if isinstance(self.meta.get('train'), dict) else {}
        self.holdout_every = int(holdout_every or self.meta.get('holdout_every')
                                 or trained.get('holdout_every') or DEFAULT_HOLDOUT_EVERY)
        self.index = self._load_or_build_index(rebuild)
        # median IGS residual of the normal held-out views, set by calibration
        self.residual_reference = self.meta.get('pose_residual_reference')
        self.threshold = self._load_or_calibrate_threshold(rebuild)

    @property
    def index_path(self):
        """Where this matcher's retrieval index lies beside the scene."""
        path = sidecar_path(self.scene_path, 'index')
        if self.config.matcher == DEFAULT_MATCHER:
            return path
        return path.with_name(f'{self.scene_path.stem}.index.{self.config.matcher}.npz')

    def inspect(self, image, K=None):
        """Inspect one (H, W, 3) float32 RGB image in [0, 1]; ``K`` its intrinsics if known."""
        return self._inspect(image, K, exclude_view=None, threshold=self.threshold)

    def inspect_batch(self, images, Ks=None, progress=None):
        """Inspect several images in turn; ``progress`` wraps the iterator (e.g. tqdm)."""
        images = list(images)
        Ks = list(Ks) if Ks is not None else [None] * len(images)
        if len(Ks) != len(images):
            raise ValueError(f'inspect_batch: {len(Ks)} intrinsics for {len(images)} images')
        pairs = list(zip(images, Ks))
        return [self.inspect(image, K) for image, K in (progress(pairs) if progress else pairs)]

    def compare(self, image, reference, region=None):
        """Eq. (5) map and eq. (6) score of ``image`` against an aligned ``reference`` image.

        ``region`` (H, W) bool: the map is zero outside it, so only it counts in the score.
        Returns (anomaly map (H, W) float32, image score, seconds for features, for scoring).
        The 2D baseline compares a test image with its retrieved training view this way.
        """
        image, reference = check_rgb(image, 'compare', 8), check_rgb(reference, 'compare', 8)
        if image.shape != reference.shape:
            raise ValueError(f'compare: image {image.shape} and reference {reference.shape} '
                             'differ in size')
        h, w = image.shape[:2]
        t0 = time.perf_counter()
        batch = torch.from_numpy(np.stack([image, reference])).permute(0, 3, 1, 2)
        feats = self.extractor(batch.to(self.device))
        t1 = time.perf_counter()
        amap = anomaly_map(feats[0], feats[1], size=(h, w), sigma=self.config.sigma,
                           shift_radius=self.config.shift_radius)
        if region is not None:
            amap = amap * torch.as_tensor(np.asarray(region, bool), device=amap.device)
        score = image_score(amap, self.config.pool_size)
        amap = amap.cpu().numpy().astype(np.float32)
        return amap, score, t1 - t0, time.perf_counter() - t1

    def score_at_pose(self, image, K, viewmat):
        """Score ``image`` against the scene rendered at ``viewmat`` (the steps after IGS).

        Render, inspection region, colour match (when configured), eq. (5) / (6). Returns
        (anomaly map, image score, aligned render, region, colour transform, seconds of
        render, features and scoring); ``bench/pose_gap.py`` calls it at the true pose.
        """
        h, w = image.shape[:2]
        t0 = time.perf_counter()
        rendered = self.render_view(viewmat, K, w, h)
        region = self.region(viewmat, K, w, h)
        colour = (fit_colour_transform(rendered, image, region) if self.config.photometric
                  else IDENTITY)
        rendered = rendered if colour.identity else colour.apply(rendered)
        seconds = {'render': time.perf_counter() - t0}
        amap, score, seconds['features'], seconds['scoring'] = self.compare(image, rendered,
                                                                            region)
        return amap, score, rendered, region, colour, seconds

    def render_view(self, viewmat, K, width, height):
        """Render the normal view (H, W, 3) float32 of the scene at ``viewmat``.

        Supersampled when the view is half the scene's training size or smaller.
        """
        with torch.no_grad():
            out = render(self.scene, torch.as_tensor(np.asarray(viewmat), dtype=torch.float32),
                         K, width, height, background=self.background,
                         supersample=supersample_factor(max(self.size), width, height))
        return out.rgb.clamp(0.0, 1.0).cpu().numpy().astype(np.float32)

    def _inspect(self, image, K, exclude_view, threshold):
        image = check_rgb(image, 'inspector', 8)
        h, w = image.shape[:2]
        K = (cameras.scale_intrinsics(self.K, self.size, (w, h)) if K is None
             else np.asarray(K, dtype=np.float64))
        seconds = {}
        t0 = time.perf_counter()
        feats = self.matcher.extract(image)
        n_hyp = self.config.igs.n_hypotheses
        extra = 1 if exclude_view is not None else 0
        candidates = [c for c in self.index.query_features(feats, top_k=n_hyp + extra)
                      if c.view_id != exclude_view][:n_hyp]
        seconds['retrieval'] = time.perf_counter() - t0
        t0 = time.perf_counter()
        estimate = self._invert(image, K, feats, candidates)
        best = candidates[min(estimate.hypothesis, len(candidates) - 1)]
        retried = self._failed(estimate)
        if retried:
            # A residual far above normal views' is a wrong basin (often the back side):
            # start again from retrieved views that look from other directions.
            others = [c for c in self.index.query_features(
                feats, top_k=len(candidates) + extra + self.config.recover_starts,
                min_angle_deg=15.0) if c.view_id not in {exclude_view, best.view_id}]
            # MPS losses are not comparable between poses (a wrong pose matches fewer
            # points, so less of it is weighed): keep the pose whose plain render fits best
            fit = self._plain_residual(image, K, estimate.viewmat)
            for start in others[:self.config.recover_starts]:
                again = self._invert(image, K, feats, [start])
                again_fit = self._plain_residual(image, K, again.viewmat)
                if again_fit < fit:
                    estimate, best, fit = again, start, again_fit
        seconds['igs'] = time.perf_counter() - t0
        scored = self.score_at_pose(image, K, estimate.viewmat)
        amap, score, rendered, region, colour = scored[:5]
        seconds.update(scored[5])
        return InspectionResult(anomaly_map=amap, image_score=score,
                                anomalous=bool(score > threshold) if threshold is not None
                                else False,
                                threshold=threshold, viewmat=estimate.viewmat,
                                pose_residual=float(estimate.loss), rendered=rendered,
                                seconds=seconds, retrieved_view=int(best.view_id),
                                init_viewmat=best.viewmat, region=region, colour=colour,
                                retried=retried)

    def _invert(self, image, K, feats, candidates):
        starts = np.stack([c.viewmat for c in candidates])
        return invert_pose(self.scene, image, starts if len(starts) > 1 else starts[0], K,
                           self.config.igs, matcher=self.matcher, test_features=feats,
                           background=self.background, scene_size=max(self.size))

    def _plain_residual(self, image, K, viewmat):
        """Mean absolute difference of the image and the scene rendered at ``viewmat``."""
        h, w = image.shape[:2]
        return float(np.abs(self.render_view(viewmat, K, w, h) - image).mean())

    def _failed(self, estimate):
        """Whether the IGS residual says the pose is in a wrong basin (retry elsewhere)."""
        return bool(self.config.recover_starts and self.residual_reference
                    and estimate.loss > self.config.recover_factor * self.residual_reference)

    def region(self, viewmat, K, width, height):
        """(H, W) bool inspection region of a camera, or None when the whole image counts.

        The pixels where the scene's Gaussians inside the box are visible (``roi``),
        dilated; empty when something hides the box from this camera.
        """
        if self.roi is None:
            return None
        return visible_region(self._marker, viewmat, K, width, height)

    def _region_of_interest(self):
        """Return the configured box, the scene meta's (``roi``: six numbers) or None."""
        if isinstance(self.config.roi, RegionOfInterest):
            return self.config.roi
        if self.config.roi == 'scene' and self.meta.get('roi') is not None:
            return RegionOfInterest.parse(self.meta['roi'])
        return None

    def _load_or_build_index(self, rebuild):
        path = self.index_path
        if path.is_file() and not rebuild:
            try:
                return RetrievalIndex.load(path, self.matcher, shortlist=self.config.shortlist)
            except RetrievalIndexError as err:
                if self._train_views is None:
                    raise
                _LOG.info('%s; rebuilding it', err)
        images, viewmats = self._reference_views(path)
        start = time.perf_counter()
        index = RetrievalIndex.build(images, viewmats, self.matcher,
                                     shortlist=self.config.shortlist)
        index.save(path)
        _LOG.info('built retrieval index %s (%d views, %s) in %.1f s', path, len(index),
                  self.config.matcher, time.perf_counter() - start)
        return index

    def _reference_views(self, path):
        """Training images and viewmats; renders at the default index's poses without them."""
        if self._train_views is not None:
            return ([v.image for v in self._train_views],
                    np.stack([v.viewmat for v in self._train_views]))
        default = sidecar_path(self.scene_path, 'index')
        if not default.is_file():
            raise RetrievalIndexError(f'{path}: retrieval index not found and no training views '
                                      'to build it; run offline/train_scene.py or '
                                      'prepare_scene_artifacts')
        with np.load(default, allow_pickle=False) as z:
            viewmats = np.asarray(z['viewmats'], dtype=np.float64)
        if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
            raise RetrievalIndexError(f'{default}: viewmats of shape {viewmats.shape}')
        _LOG.info('building the %s index from scene renders at %d training poses',
                  self.config.matcher, len(viewmats))
        cams = [self.view_camera(i) for i in range(len(viewmats))]
        return [self.render_view(v, *cam) for v, cam in zip(viewmats, cams)], viewmats

    def view_camera(self, i):
        """(K, width, height) of training view ``i``: its own camera, else the scene's."""
        if self._train_views is not None:
            view = self._train_views[i]
            h, w = view.image.shape[:2]
            K = getattr(view, 'K', None)
            return (cameras.scale_intrinsics(self.K, self.size, (w, h)) if K is None
                    else np.asarray(K, dtype=np.float64)), w, h
        views = self.meta.get('views') or {}
        if 'K' in views and 'size' in views and i < len(views['K']):
            w, h = (int(s) for s in views['size'][i])
            return np.asarray(views['K'][i], dtype=np.float64), w, h
        return self.K, self.size[0], self.size[1]

    def _load_or_calibrate_threshold(self, rebuild):
        if self.config.threshold is not None:
            return float(self.config.threshold)
        stored = self.meta.get('thresholds') or {}
        key = self.threshold_key
        if key in stored and not rebuild:
            return float(stored[key])
        start = time.perf_counter()
        scores = self.normal_scores()
        value = calibrate_threshold(scores, k=self.config.calibration_k)
        stored = dict(stored, **{key: value})
        write_scene_meta(self.scene_path, {'thresholds': stored,
                                           'pose_residual_reference': self.residual_reference})
        self.meta['thresholds'] = stored
        self.meta['pose_residual_reference'] = self.residual_reference
        _LOG.info('calibrated the %s threshold %.4f on %d held-out views in %.1f s',
                  key, value, len(scores), time.perf_counter() - start)
        return value

    @property
    def threshold_key(self):
        """This configuration's entry in the scene meta's ``thresholds``.

        The extractor's name, followed by every setting of ``SCORING_SETTINGS`` that differs
        from its default (``'pixel sigma=1.0'``): scores under other settings are other
        numbers, so such a configuration is calibrated afresh instead of reusing a
        threshold measured for the defaults.
        """
        default = InspectorConfig()
        changed = [f'{name}={_setting_text(getattr(self.config, name))}'
                   for name in SCORING_SETTINGS
                   if getattr(self.config, name) != getattr(default, name)]
        return ' '.join([self.config.extractor] + changed)

    def normal_scores(self):
        """Image scores of held-out normal views through the whole pipeline (own view excluded).

        Uses the held-out training images when training views were given, else renders of
        the scene at those poses. Sets ``residual_reference`` to the median IGS residual of
        the views whose pose came within 2 degrees of their known one (all views when none
        did), then re-runs the views that the failure recovery would retry, so the scores are
        those inference gives. Returns the scores of the views whose final pose is within 2
        degrees and whose region is not hidden (all views when fewer than two are).
        """
        n_views = len(self.index)
        held = [i for i in range(n_views) if i % self.holdout_every == 0] or list(range(n_views))
        picks = [held[i] for i in np.unique(np.linspace(0, len(held) - 1,
                                                        self.config.calibration_views).round()
                                            .astype(int))]
        self.residual_reference = None
        views, results, right = [], [], []
        for i in picks:
            K, w, h = self.view_camera(i)
            image = (self._train_views[i].image if self._train_views is not None
                     else self.render_view(self.index.viewmats[i], K, w, h))
            views.append((i, image, K))
            results.append(self._inspect(image, K, exclude_view=i, threshold=None))
            right.append(cameras.rotation_error_deg(results[-1].viewmat,
                                                    self.index.viewmats[i]) < 2.0)
        good = [r.pose_residual for r, ok in zip(results, right) if ok]
        self.residual_reference = float(np.median(good or [r.pose_residual for r in results]))
        for k, (i, image, K) in enumerate(views):
            if results[k].pose_residual > self.config.recover_factor * self.residual_reference:
                results[k] = self._inspect(image, K, exclude_view=i, threshold=None)
        for k, (i, _, _) in enumerate(views):
            right[k] = cameras.rotation_error_deg(results[k].viewmat,
                                                  self.index.viewmats[i]) < 2.0
        # The threshold describes normal views at a right pose: a wrong pose (known here,
        # the views are posed) would put the object where it is not; and a view that cannot
        # see the region (hidden by the table) says nothing of its scores.
        usable = [r for r, ok in zip(results, right)
                  if ok and (r.region is None or r.region.mean() >= MIN_REGION)]
        return [r.image_score for r in (usable if len(usable) >= 2 else results)]


def _setting_text(value):
    """Compact text of a setting's value for ``Inspector.threshold_key``."""
    if isinstance(value, RegionOfInterest):
        return ','.join(f'{v:g}' for v in value.as_list())
    return str(value)


def prepare_scene_artifacts(scene_path, category, config=None, device='cpu', holdout_every=None):
    """Build the retrieval index and calibrate the threshold of a freshly trained scene.

    ``category`` holds the training views (``category.train``: ``.image``, ``.viewmat``,
    in the order the scene was trained on). Writes ``scene.index.npz`` and the extractor's
    entry of ``thresholds`` in ``scene.meta.json``; returns the ready Inspector.
    """
    config = copy.deepcopy(config) if config is not None else InspectorConfig()
    config = replace(config, threshold=None)
    return Inspector(scene_path, config, device=device, train_views=category.train,
                     rebuild=True, holdout_every=holdout_every)


def _resolve_device(device):
    if str(device) == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(device)
