"""Initial pose by retrieval over the training views (paper 3.2.2).

The index holds every training view's keypoints and descriptors (computed once by a
``Matcher``) and its viewmat. A query image is matched against the views; the view with
the most matches gives the initial pose. The index is saved beside the scene
(``scene.index.npz``, see ``core.scene.sidecar_path``) as a plain npz, read without pickle.

Matching a query against all 210 views of a MAD category with LightGlue costs about 30 ms
per view on a CPU core, so ``query`` can first rank the views by a cheap score, the number
of mutual nearest neighbours between descriptors (one matrix product per view), and run
the matcher on the ``shortlist`` best only.
"""
from dataclasses import dataclass

import numpy as np

from igspad_ros.core import cameras
from igspad_ros.core.matching import Features

INDEX_VERSION = 1
MAX_VIEWS = 100_000
MAX_KEYPOINTS_TOTAL = 50_000_000


class RetrievalIndexError(ValueError):
    """A retrieval index file is unreadable, malformed or built for another matcher."""


@dataclass
class Candidate:
    """A retrieved training view: its index, the number of matches and its viewmat (4, 4)."""

    view_id: int
    n_matches: int
    viewmat: np.ndarray


class RetrievalIndex:
    """Keypoints, descriptors and poses of the training views, for nearest-view retrieval."""

    def __init__(self, features, viewmats, matcher, shortlist=0):
        viewmats = np.asarray(viewmats, dtype=np.float64)
        if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4) or len(features) != len(viewmats):
            raise ValueError(f'retrieval index: need one (4, 4) viewmat per view, got '
                             f'{viewmats.shape} for {len(features)} views')
        if len(features) == 0:
            raise ValueError('retrieval index: no training views')
        self.features = list(features)
        self.viewmats = viewmats
        self.matcher = matcher
        self.shortlist = int(shortlist)
        centres = np.stack([cameras.camera_center(v) for v in viewmats])
        self._directions = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True),
                                                1e-12)

    def __len__(self):
        return len(self.features)

    @classmethod
    def build(cls, images, viewmats, matcher, shortlist=0, progress=None):
        """Extract every training image once; ``progress`` wraps the image iterator (tqdm)."""
        images = list(images)
        iterator = progress(images) if progress is not None else images
        return cls([matcher.extract(image) for image in iterator], viewmats, matcher, shortlist)

    def query(self, image, top_k=1, shortlist=None, min_angle_deg=0.0):
        """Best ``top_k`` training views for an (H, W, 3) image, most matches first."""
        return self.query_features(self.matcher.extract(image), top_k, shortlist, min_angle_deg)

    def query_features(self, feats, top_k=1, shortlist=None, min_angle_deg=0.0):
        """Like ``query`` for Features already extracted by the same matcher.

        ``min_angle_deg`` > 0 keeps only candidates whose viewing directions lie at least
        that far apart (distinct starts for multi-hypothesis IGS).
        """
        shortlist = self.shortlist if shortlist is None else int(shortlist)
        order = np.arange(len(self))
        n_first = len(self)
        if 0 < shortlist < len(self):
            # stable sort on -count: ties keep the lower view index, so results are reproducible
            order = np.argsort(-self.mnn_counts(feats), kind='stable')
            n_first = max(shortlist, top_k)
        scored = sorted(((self.matcher.count_matches(feats, self.features[v]), int(v))
                         for v in order[:n_first]), key=lambda c: (-c[0], c[1]))
        chosen = self._separated(scored, top_k, min_angle_deg)
        for v in order[n_first:]:
            if len(chosen) >= top_k:
                break
            # a diverse set can need views outside the shortlist: take them in cheap order
            chosen = self._separated(chosen + [(self.matcher.count_matches(
                feats, self.features[v]), int(v))], top_k, min_angle_deg)
        chosen.sort(key=lambda c: (-c[0], c[1]))
        return [Candidate(v, n, self.viewmats[v].copy()) for n, v in chosen]

    def _separated(self, scored, top_k, min_angle_deg):
        """Greedy pick, in the given order, of views at least ``min_angle_deg`` apart."""
        chosen = []
        cos_min = np.cos(np.radians(min_angle_deg))
        for n, v in scored:
            if len(chosen) >= top_k:
                break
            d = self._directions[v]
            if min_angle_deg <= 0 or all(d @ self._directions[u] < cos_min for _, u in chosen):
                chosen.append((n, v))
        return chosen

    def mnn_counts(self, feats, min_similarity=0.7):
        """Cheap score per view: mutual nearest neighbours with cosine similarity above a bar."""
        out = np.zeros(len(self), dtype=np.int64)
        if len(feats) == 0:
            return out
        dq = _unit(feats.descriptors)
        for v, fv in enumerate(self.features):
            if len(fv) == 0:
                continue
            sim = dq @ _unit(fv.descriptors).T
            best_b = sim.argmax(1)
            best_a = sim.argmax(0)
            mutual = best_a[best_b] == np.arange(len(dq))
            out[v] = int(np.count_nonzero(mutual & (sim.max(1) > min_similarity)))
        return out

    def save(self, path):
        """Write the index as an npz of plain arrays (no pickled objects)."""
        counts = np.array([len(f) for f in self.features], dtype=np.int64)
        np.savez(path,
                 version=np.int64(INDEX_VERSION),
                 matcher=np.array(self.matcher.name),
                 max_keypoints=np.int64(self.matcher.config.max_keypoints),
                 min_detector_size=np.int64(self.matcher.config.min_detector_size),
                 viewmats=self.viewmats,
                 counts=counts,
                 keypoints=_concat([f.keypoints for f in self.features], 2),
                 descriptors=_concat([f.descriptors for f in self.features],
                                     self.features[0].descriptors.shape[1]),
                 image_sizes=np.array([f.image_size for f in self.features], dtype=np.int64),
                 detector_scales=np.array([f.detector_scale for f in self.features]))

    @classmethod
    def load(cls, path, matcher, shortlist=0):
        """Read an index written by ``save``; it must come from a matcher like ``matcher``."""
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as err:
            raise RetrievalIndexError(f'retrieval index {path}: unreadable ({err})') from None
        needed = ('version', 'matcher', 'max_keypoints', 'min_detector_size', 'viewmats',
                  'counts', 'keypoints', 'descriptors', 'image_sizes', 'detector_scales')
        missing = [k for k in needed if k not in data]
        if missing:
            raise RetrievalIndexError(f'retrieval index {path}: missing arrays {missing}')
        if int(data['version']) != INDEX_VERSION:
            raise RetrievalIndexError(f'retrieval index {path}: version {int(data["version"])}, '
                                      f'expected {INDEX_VERSION}; rebuild it')
        built = (str(data['matcher']), int(data['max_keypoints']), int(data['min_detector_size']))
        wanted = (matcher.name, matcher.config.max_keypoints, matcher.config.min_detector_size)
        if built != wanted:
            raise RetrievalIndexError(f'retrieval index {path}: built with matcher {built}, '
                                      f'not {wanted}; rebuild it')
        return cls(_split_features(path, data), data['viewmats'], matcher, shortlist)


def _split_features(path, data):
    counts, kpts, desc = data['counts'], data['keypoints'], data['descriptors']
    n = len(counts)
    if not (0 < n <= MAX_VIEWS) or counts.min() < 0 or counts.sum() > MAX_KEYPOINTS_TOTAL:
        raise RetrievalIndexError(f'retrieval index {path}: implausible keypoint counts')
    shapes_ok = (kpts.shape == (counts.sum(), 2) and desc.ndim == 2
                 and desc.shape[0] == counts.sum() and data['viewmats'].shape == (n, 4, 4)
                 and data['image_sizes'].shape == (n, 2) and data['detector_scales'].shape == (n,))
    if not shapes_ok:
        raise RetrievalIndexError(f'retrieval index {path}: array shapes do not agree')
    ends = np.cumsum(counts)
    starts = ends - counts
    return [Features(kpts[a:b].astype(np.float32), desc[a:b].astype(np.float32),
                     tuple(int(s) for s in size), float(scale))
            for a, b, size, scale in zip(starts, ends, data['image_sizes'],
                                         data['detector_scales'])]


def _concat(arrays, width):
    arrays = [a for a in arrays if len(a)]
    if not arrays:
        return np.zeros((0, width), np.float32)
    return np.concatenate(arrays).astype(np.float32)


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
