"""Evaluation of a category in the PAD protocol: per-image outcomes -> OUT.json, table, gallery.

``category_report`` is pure (outcomes in, the OUT.json dict out) so that the offline
evaluation and the ROS replayer, which collects the node's results, write identical
JSON. ``evaluate_category`` runs an ``Inspector`` over a loaded category (any object with
``.name`` and ``.test`` / ``.train`` lists shaped like ``data.views.Capture``; core does
not import the reader) and also scores the 2D baseline: the test image against its
retrieved training view, no pose inversion, which shows what IGS adds.

OUT.json keys (DESIGN.md): category, pixel_auroc, image_auroc, pixel_ap, aupro, n_images,
pose {rot_deg_median, trans_rel_median, success_rate_2deg} or null, timing (median seconds
per image by stage, plus total), config {extractor, matcher, mps, steps, device}, images
[{path, defect_type, image_score, anomalous, rot_deg, trans_rel}]; ``baseline_2d`` (the four
metrics of the 2D baseline) is added when it was computed. ``verdict`` is what an inspection
cell sees at the calibrated threshold: {threshold, flagged {defect type: share of its
images flagged anomalous}, detection_rate (all defective images), false_alarm_rate (normal
images), counts {type: [flagged, images]}}.
"""
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from igspad_ros.core import cameras
from igspad_ros.core.inspector import Inspector, InspectorConfig
from igspad_ros.core.metrics import METRIC_SIZE, pad_metrics, resize_map, resize_mask
from igspad_ros.core.scene import read_scene_meta

METRIC_KEYS = ('pixel_auroc', 'image_auroc', 'pixel_ap', 'aupro')
CONFIG_KEYS = ('extractor', 'matcher', 'mps', 'steps', 'device')
POSE_SUCCESS_DEG = 2.0


@dataclass
class ImageOutcome:
    """What one test image produced, with its ground truth.

    ``anomaly_map`` and ``mask`` may be at any size (they are compared at 224 x 224);
    ``viewmat`` / ``true_viewmat`` are (4, 4) OpenCV viewmats or None; ``seconds`` maps
    stage names to seconds.
    """

    path: str
    defect_type: str
    mask: np.ndarray
    anomaly_map: np.ndarray
    image_score: float
    anomalous: bool
    viewmat: np.ndarray | None = None
    true_viewmat: np.ndarray | None = None
    seconds: dict = field(default_factory=dict)


def category_report(category, outcomes, config, baseline_outcomes=None, threshold=None):
    """Build the OUT.json dict of one category from its image outcomes (pure).

    ``config`` holds at least CONFIG_KEYS. ``baseline_outcomes``, when given, are the 2D
    baseline's outcomes for the same images, summarised under ``baseline_2d``.
    ``threshold`` is the verdict threshold the outcomes' ``anomalous`` flags came from.
    """
    if not outcomes:
        raise ValueError(f'category {category}: no test images to evaluate')
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f'category report: config lacks {", ".join(missing)}')
    metrics = _metrics(outcomes)
    images, rot, trans = [], [], []
    for o in outcomes:
        rot_deg = trans_rel = None
        if o.viewmat is not None and o.true_viewmat is not None:
            rot_deg = float(cameras.rotation_error_deg(o.viewmat, o.true_viewmat))
            trans_rel = float(cameras.translation_error_rel(o.viewmat, o.true_viewmat))
            rot.append(rot_deg)
            trans.append(trans_rel)
        images.append({'path': o.path, 'defect_type': o.defect_type,
                       'image_score': float(o.image_score), 'anomalous': bool(o.anomalous),
                       'rot_deg': rot_deg, 'trans_rel': trans_rel})
    pose = None
    if rot:
        pose = {'rot_deg_median': float(np.median(rot)),
                'trans_rel_median': float(np.median(trans)),
                'success_rate_2deg': float(np.mean(np.asarray(rot) < POSE_SUCCESS_DEG))}
    report = {'category': str(category), **metrics, 'n_images': len(outcomes), 'pose': pose,
              'timing': median_timing([o.seconds for o in outcomes]),
              'config': {k: config[k] for k in CONFIG_KEYS},
              'verdict': verdict_summary(outcomes, threshold), 'images': images}
    if baseline_outcomes is not None:
        report['baseline_2d'] = _metrics(baseline_outcomes)
    return report


def verdict_summary(outcomes, threshold=None):
    """Shares of images flagged anomalous at the threshold: per defect type, defects, normal."""
    counts = {}
    for o in outcomes:
        flagged, total = counts.get(o.defect_type, (0, 0))
        counts[o.defect_type] = (flagged + bool(o.anomalous), total + 1)
    defects = [c for t, c in counts.items() if t != 'good']
    n_defect = sum(n for _, n in defects)
    good = counts.get('good', (0, 0))
    return {'threshold': None if threshold is None else float(threshold),
            'flagged': {t: f / n for t, (f, n) in sorted(counts.items())},
            'detection_rate': sum(f for f, _ in defects) / n_defect if n_defect else None,
            'false_alarm_rate': good[0] / good[1] if good[1] else None,
            'counts': {t: [f, n] for t, (f, n) in sorted(counts.items())}}


def median_timing(seconds):
    """Median seconds per image for every stage, and of the per-image total."""
    stages = sorted({k for s in seconds for k in s})
    out = {k: float(np.median([s[k] for s in seconds if k in s])) for k in stages}
    if seconds and 'total' not in out:
        out['total'] = float(np.median([sum(s.values()) for s in seconds]))
    return out


def _metrics(outcomes):
    return pad_metrics([o.anomaly_map for o in outcomes], [o.mask for o in outcomes],
                       [o.image_score for o in outcomes],
                       [o.defect_type != 'good' for o in outcomes])


def evaluate_category(category, inspector, progress=None, gallery_dir=None, baseline_2d=True):
    """Inspect every test image of ``category``; return (outcomes, baseline outcomes or None).

    Maps and masks are kept at the metric size (224) only, so memory stays small for 800 px
    images; the metrics are the same as with full-size maps. ``progress`` wraps the image
    iterator; ``gallery_dir`` receives one PNG per image (test | rendered | overlay | truth).
    """
    outcomes, baseline = [], [] if baseline_2d else None
    tests = list(category.test)
    for test in (progress(tests) if progress else tests):
        result = inspector.inspect(test.image, test.K)
        mask = resize_mask(test.mask, METRIC_SIZE)
        outcomes.append(ImageOutcome(
            path=test.rel_path, defect_type=test.defect_type, mask=mask,
            anomaly_map=resize_map(result.anomaly_map, METRIC_SIZE),
            image_score=result.image_score, anomalous=result.anomalous,
            viewmat=result.viewmat, true_viewmat=test.true_viewmat, seconds=result.seconds))
        if baseline_2d:
            reference = category.train[result.retrieved_view].image
            if reference.shape != test.image.shape:
                reference = cv2.resize(reference, test.image.shape[1::-1],
                                       interpolation=cv2.INTER_AREA)
            h, w = test.image.shape[:2]
            region = inspector.region(result.init_viewmat, test.K, w, h)
            amap, score, _, _ = inspector.compare(test.image, reference, region)
            baseline.append(ImageOutcome(
                path=test.rel_path, defect_type=test.defect_type, mask=mask,
                anomaly_map=resize_map(amap, METRIC_SIZE), image_score=score,
                anomalous=bool(score > result.threshold)))
        if gallery_dir is not None:
            name = test.rel_path.replace('/', '_').replace('\\', '_')
            save_gallery_image(Path(gallery_dir) / name, test.image, result.rendered,
                               result.anomaly_map, test.mask, vmax=2.0 * result.threshold,
                               region=result.region)
    return outcomes, baseline


@dataclass
class EvaluationJob:
    """One category to evaluate: where its data, scene and outputs are, and how to run it.

    ``limit`` evaluates that many test images spread evenly over the sorted test list;
    ``threads`` sets torch's thread count in a worker process (None: unchanged).
    """

    data_dir: Path
    scene_path: Path
    out_json: Path
    gallery_dir: Path | None = None
    config: InspectorConfig = field(default_factory=InspectorConfig)
    device: str = 'cpu'
    limit: int | None = None
    baseline_2d: bool = True
    force: bool = False
    threads: int | None = None
    data_format: str | None = None  # the capture reader to use; None: detected

    def run_config(self):
        """Return the ``config`` entry of OUT.json for this job."""
        return {'extractor': self.config.extractor, 'matcher': self.config.matcher,
                'mps': self.config.igs.mps, 'steps': self.config.igs.steps,
                'device': str(self.device).split(':')[0]}


def run_job(job, loader, progress=None):
    """Evaluate one category and write its JSON atomically; return (report, skipped).

    ``loader(path, size=...)`` reads the category or capture (``data.capture.load_capture``;
    core does not import the readers). A JSON that exists with the same config and image
    count is returned as it is (``skipped`` True) unless ``job.force``.
    """
    if job.threads:
        torch.set_num_threads(job.threads)
    run_config = job.run_config()
    out_json = Path(job.out_json)
    if out_json.is_file() and not job.force:
        old = json.loads(out_json.read_text())
        if old.get('config') == run_config and (job.limit is None
                                                or old.get('n_images') == job.limit):
            return old, True
    meta = read_scene_meta(job.scene_path)
    category = loader(job.data_dir, size=max(int(meta['width']), int(meta['height'])))
    category.test = spread_subset(category.test, job.limit)
    inspector = Inspector(job.scene_path, job.config, device=job.device,
                          train_views=category.train)
    outcomes, baseline = evaluate_category(category, inspector, progress=progress,
                                           gallery_dir=job.gallery_dir,
                                           baseline_2d=job.baseline_2d)
    report = category_report(category.name, outcomes, run_config, baseline,
                             threshold=inspector.threshold)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_json.with_name(out_json.name + '.tmp')
    tmp.write_text(json.dumps(report, indent=1) + '\n')
    os.replace(tmp, out_json)
    return report, False


def spread_subset(tests, limit):
    """Return ``limit`` of ``tests`` spread evenly over the list (all for None or more).

    Spread over the sorted test list, every defect type and the good images take part.
    """
    tests = list(tests)
    if not limit or limit >= len(tests):
        return tests
    picks = np.unique(np.linspace(0, len(tests) - 1, limit).round().astype(int))
    return [tests[i] for i in picks]


def heatmap_overlay(image, amap, vmax=None, alpha=0.5):
    """Colour heatmap (JET, 0 .. vmax) of ``amap`` blended over ``image``; uint8 RGB (H, W, 3).

    ``vmax`` None scales to the map's own maximum.
    """
    image = np.asarray(image, dtype=np.float32)
    amap = np.asarray(amap, dtype=np.float32)
    if amap.shape != image.shape[:2]:
        amap = cv2.resize(amap, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    top = float(vmax) if vmax else float(amap.max())
    level = np.clip(amap / max(top, 1e-12), 0.0, 1.0)
    heat = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return (255.0 * ((1 - alpha) * image + alpha * heat)).clip(0, 255).astype(np.uint8)


def save_gallery_image(path, image, rendered, amap, mask, vmax=None, region=None):
    """Write one PNG: test image | rendered normal view | heatmap overlay | ground truth.

    ``region`` (H, W) bool, the inspection region, is outlined in white on the overlay.
    """
    image = np.asarray(image, dtype=np.float32)
    rendered = np.asarray(rendered, dtype=np.float32)
    if rendered.shape != image.shape:
        rendered = cv2.resize(rendered, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    truth = np.repeat(np.asarray(mask, dtype=np.float32)[..., None], 3, axis=2)
    overlay = heatmap_overlay(image, amap, vmax)
    if region is not None and not np.all(region):
        edge = np.asarray(region, np.uint8)
        edge = edge - cv2.erode(edge, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
        overlay[edge.astype(bool)] = 255
    panels = [(image * 255).astype(np.uint8), (rendered * 255).clip(0, 255).astype(np.uint8),
              overlay, (truth * 255).astype(np.uint8)]
    strip = np.concatenate(panels, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR)):
        raise OSError(f'gallery: could not write {path}')


def markdown_table(reports):
    """Markdown table laid out like the paper's Table 2, plus AP, AUPRO and the 2D baseline.

    One row per category report and a Mean row (the mean of the categories); AUROCs as
    "pixel/image" in percent.
    """
    head = ('| Category | AUROC pixel/image | AP pixel | AUPRO@0.3 | 2D baseline pixel/image '
            '| Flagged defects/normal |\n'
            '|---|---|---|---|---|---|\n')
    rows = [_row(r['category'], r, r.get('baseline_2d')) for r in reports]
    mean = {k: _mean([r.get(k) for r in reports]) for k in METRIC_KEYS}
    verdicts = [r.get('verdict') or {} for r in reports]
    mean['verdict'] = {k: _mean([v.get(k) for v in verdicts])
                       for k in ('detection_rate', 'false_alarm_rate')}
    with_base = [r['baseline_2d'] for r in reports if r.get('baseline_2d')]
    base_mean = ({k: _mean([b.get(k) for b in with_base]) for k in METRIC_KEYS}
                 if with_base else None)
    return head + ''.join(rows) + _row('Mean', mean, base_mean)


def _row(name, m, base):
    pair = f'{_pct(m.get("pixel_auroc"))}/{_pct(m.get("image_auroc"))}'
    base_pair = (f'{_pct(base.get("pixel_auroc"))}/{_pct(base.get("image_auroc"))}'
                 if base else '-')
    verdict = m.get('verdict') or {}
    rates = (verdict.get('detection_rate'), verdict.get('false_alarm_rate'))
    flagged = '-' if rates == (None, None) else f'{_pct(rates[0])}/{_pct(rates[1])}'
    return f'| {name} | {pair} | {_pct(m.get("pixel_ap"))} | {_pct(m.get("aupro"))} | ' \
           f'{base_pair} | {flagged} |\n'


def _pct(value):
    return '-' if value is None else f'{100.0 * value:.1f}'


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
