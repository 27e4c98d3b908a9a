#!/usr/bin/env python3
"""Pose gap: eq. (5)/(6) metrics with renders at the true pose vs at each method's IGS pose.

bench/pose_gap.py --data CATDIR --scene SCENE.ply [--methods igs_mps,igs] [--extractor X]
                  [--device auto|cpu|cuda] [--steps N] [--limit N] [--json OUT.json]

For every test image with a ground-truth pose (a synthetic category's test_poses.json) the
scene is rendered at the true pose and compared with the image exactly as the Inspector
compares it with its render at the estimated pose (same extractor, inspection region and
colour matching: ``Inspector.render_view`` then ``Inspector.compare``). Each method in
METHODS runs the whole Inspector pipeline (retrieval, IGS, render, scoring) with its IGS
configuration. Printed per row: pixel AUROC, image AUROC and pixel AP (PAD protocol,
``core.metrics``), the pose gap = metric(true pose) - metric(method), the pose error
(median and 90th percentile of rotation in degrees and of translation as a fraction of the
camera distance, images over 2 degrees), the verdict at the scene's calibrated threshold
(defective and normal images flagged; ``verdict`` in the JSON, as ``offline/evaluate.py``
writes it) and median seconds per image by stage; then the pose error and the pose gap per
defect type (that type's images with the good ones).
"""
import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from igspad_ros.cli import ToolParser
from igspad_ros.core import cameras
from igspad_ros.core.evaluation import (METRIC_KEYS, POSE_SUCCESS_DEG, ImageOutcome,
                                        category_report, evaluate_category, spread_subset)
from igspad_ros.core.features import DEFAULT_EXTRACTOR, EXTRACTOR_NAMES
from igspad_ros.core.igs import IGSConfig
from igspad_ros.core.inspector import Inspector, InspectorConfig, cpu_igs_config
from igspad_ros.core.metrics import METRIC_SIZE, pad_metrics, resize_map, resize_mask
from igspad_ros.core.scene import read_scene_meta
from igspad_ros.data.capture import load_capture

# Methods by name: each turns the device's default IGS configuration (cpu_igs_config on a
# CPU, the paper's IGSConfig() on CUDA) into the one it runs. Add configurations here.
METHODS = {
    'igs_mps': lambda base: base,                    # the paper's IGS + MPS, today's default
    'igs': lambda base: replace(base, mps=False),    # IGS without Matching Points Sampling
    # IGS + MPS from a PnP-corrected start, the decay at a third of the steps
    # (core.inspector.pnp_igs_config on a CPU)
    'igs_mps_pnp': lambda base: replace(base, pnp=True,
                                        lr_decay_step=round(base.steps / 3)),
    # MPS that cannot exclude a normal region: unmatched pixels weigh 0.2, not 0, and a
    # map from fewer than 20 matches is not trusted (every pixel weighs 1)
    'igs_mps_soft': lambda base: replace(base, mps_floor=0.2, mps_min_matches=20),
}
DEFAULT_METHODS = 'igs_mps,igs'    # the ablation of the paper; others on request
TRUE = 'true_pose'
GAP_KEYS = ('pixel_auroc', 'image_auroc', 'pixel_ap')


def build_parser():
    """Build the command-line interface."""
    parser = ToolParser(description=__doc__.splitlines()[0],
                        epilog='\n'.join(__doc__.splitlines()[2:]),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', required=True, type=Path,
                        help='MAD category with test_poses.json (e.g. from make_synthetic.py)')
    parser.add_argument('--scene', required=True, type=Path,
                        help='scene PLY trained on it (its index and threshold beside it)')
    parser.add_argument('--methods', default=DEFAULT_METHODS,
                        help=f'comma-separated methods of {", ".join(METHODS)} '
                             f'(default: {DEFAULT_METHODS})')
    parser.add_argument('--extractor', default=DEFAULT_EXTRACTOR, choices=EXTRACTOR_NAMES,
                        help=f'feature extractor ({DEFAULT_EXTRACTOR})')
    parser.add_argument('--extractor-weights', default=None,
                        help='weight file for sam_* / resnet18 / wide_resnet50')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'),
                        help='torch device (auto: cuda when available)')
    parser.add_argument('--steps', type=_positive_int, default=None,
                        help='IGS steps of every method, the learning-rate decay at the '
                             'same share of them, the fine stage at most a third (default: '
                             '60 on cpu, 300 on cuda)')
    parser.add_argument('--limit', type=_positive_int, default=None,
                        help='N test images evenly spread over the sorted test list')
    parser.add_argument('--json', type=Path, default=None, help='write the results here')
    return parser


def main(argv=None):
    """Parse arguments, run every method and the true pose, print the tables."""
    parser = build_parser()
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(',') if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        parser.error(f'--methods: unknown {", ".join(unknown) or "(none given)"}; choose '
                     f'from {", ".join(METHODS)}')
    start = time.perf_counter()
    try:
        result = pose_gap(args.data, args.scene, methods, extractor=args.extractor,
                          extractor_weights=args.extractor_weights, device=args.device,
                          steps=args.steps, limit=args.limit)
    except (ValueError, OSError, KeyError) as err:
        print(f'{parser.prog}: error: {err}', file=sys.stderr)
        return 2
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + '\n')
    gaps = ', '.join(f'{m} image AUROC gap {_num(result["methods"][m]["gap"]["image_auroc"])}'
                     for m in methods)
    print(f'pose_gap: {result["n_images"]} images of {result["category"]}: {gaps} '
          f'({time.perf_counter() - start:.0f} s)')
    return 0


def pose_gap(data, scene, methods, extractor=DEFAULT_EXTRACTOR, extractor_weights=None,
             device='auto', steps=None, limit=None):
    """Run the true pose and ``methods`` (names in METHODS) on a category; the result dict.

    Keys: category, n_images, extractor, device, true_pose and methods (name -> row), images
    (per image its path, defect type and per row image_score, anomalous, rot_deg,
    trans_rel). A row holds the four PAD metrics, pose (rot_deg / trans_rel median and p90,
    n_over_2deg, success_rate_2deg), timing (median seconds per image by stage),
    by_type (per defect type: n, pose and the metrics on that type's images with the good
    ones); a method's row adds gap (true pose minus method, overall and by_type) and igs
    (its IGS configuration).
    """
    meta = read_scene_meta(scene)
    category = load_capture(data, size=max(int(meta['width']), int(meta['height'])))
    category.test = spread_subset([t for t in category.test if t.true_viewmat is not None],
                                  limit)
    if not category.test:
        raise ValueError(f'{data}: no test images with a ground-truth pose (test_poses.json)')
    config = InspectorConfig(extractor=extractor, extractor_weights=extractor_weights)
    inspector = Inspector(scene, config, device=device, train_views=category.train)
    base = IGSConfig() if inspector.device.type == 'cuda' else cpu_igs_config()
    if steps:
        # as offline/evaluate.py: the decay keeps its share, the fine stage at most a third
        base = base.with_steps(steps)
    dev = inspector.device.type
    rows, outcomes = {}, {}
    outcomes[TRUE] = true_pose_outcomes(category, inspector, _bar(TRUE))
    rows[TRUE] = _row(category, outcomes[TRUE], {'extractor': extractor, 'matcher': None,
                                                 'mps': None, 'steps': 0, 'device': dev},
                      inspector.threshold)
    for name in methods:
        igs = METHODS[name](base)
        inspector.config = replace(config, igs=igs)
        outcomes[name] = evaluate_category(category, inspector, progress=_bar(name),
                                           baseline_2d=False)[0]
        rows[name] = _row(category, outcomes[name], {
            'extractor': extractor, 'matcher': config.matcher, 'mps': igs.mps,
            'steps': igs.steps, 'device': dev}, inspector.threshold)
        rows[name]['igs'] = {k: getattr(igs, k) for k in igs.__dataclass_fields__}
        rows[name]['gap'] = _gap(rows[TRUE], rows[name])
    images = []
    for k, test in enumerate(category.test):
        entry = {'path': test.rel_path, 'defect_type': test.defect_type}
        for name, outs in outcomes.items():
            o = outs[k]
            rot, trans = _pose_error(o)
            entry[name] = {'image_score': float(o.image_score), 'anomalous': bool(o.anomalous),
                           'rot_deg': rot, 'trans_rel': trans}
        images.append(entry)
    return {'category': category.name, 'n_images': len(category.test), 'extractor': extractor,
            'device': dev, TRUE: rows[TRUE], 'methods': {m: rows[m] for m in methods},
            'images': images}


def score_at_pose(inspector, image, viewmat, K):
    """Eq. (5) map and eq. (6) score of ``image`` against the scene rendered at ``viewmat``.

    ``Inspector.score_at_pose``: the Inspector's own steps after IGS (render, inspection
    region, colour match when configured, compare). Returns (map, score, seconds by stage).
    """
    amap, score, _, _, _, seconds = inspector.score_at_pose(image, K, viewmat)
    return amap, score, seconds


def true_pose_outcomes(category, inspector, progress=None):
    """ImageOutcome per test image scored against the render at its true pose."""
    out = []
    tests = list(category.test)
    for test in (progress(tests) if progress else tests):
        amap, score, seconds = score_at_pose(inspector, test.image, test.true_viewmat, test.K)
        out.append(ImageOutcome(
            path=test.rel_path, defect_type=test.defect_type,
            mask=resize_mask(test.mask, METRIC_SIZE), anomaly_map=resize_map(amap, METRIC_SIZE),
            image_score=score, anomalous=bool(score > inspector.threshold),
            viewmat=test.true_viewmat, true_viewmat=test.true_viewmat, seconds=seconds))
    return out


def pose_summary(rot_deg, trans_rel):
    """Median and 90th percentile of the rotation (deg) and translation errors, over 2 deg."""
    rot, trans = np.asarray(rot_deg, float), np.asarray(trans_rel, float)
    return {'rot_deg_median': float(np.median(rot)),
            'rot_deg_p90': float(np.percentile(rot, 90)),
            'trans_rel_median': float(np.median(trans)),
            'trans_rel_p90': float(np.percentile(trans, 90)),
            'n_over_2deg': int(np.sum(rot >= POSE_SUCCESS_DEG)),
            'success_rate_2deg': float(np.mean(rot < POSE_SUCCESS_DEG))}


def _row(category, outcomes, config, threshold):
    """One table row: the OUT.json metrics, timing and verdict of ``outcomes``, pose, by type.

    ``threshold`` is the scene's calibrated one that flagged the outcomes (``verdict``).
    """
    report = category_report(category.name, outcomes, config, threshold=threshold)
    errors = [_pose_error(o) for o in outcomes]
    row = {k: report[k] for k in METRIC_KEYS}
    row['pose'] = pose_summary(*zip(*errors))
    row['timing'] = report['timing']
    row['verdict'] = report['verdict']
    good = [o for o in outcomes if o.defect_type == 'good']
    row['by_type'] = {}
    for kind in sorted({o.defect_type for o in outcomes}):
        picked = [k for k, o in enumerate(outcomes) if o.defect_type == kind]
        entry = {'n': len(picked), 'pose': pose_summary(*zip(*[errors[k] for k in picked]))}
        if kind != 'good':
            sel = good + [outcomes[k] for k in picked]
            entry.update(pad_metrics([o.anomaly_map for o in sel], [o.mask for o in sel],
                                     [o.image_score for o in sel],
                                     [o.defect_type != 'good' for o in sel]))
        row['by_type'][kind] = entry
    return row


def _gap(true_row, row):
    """metric(true pose) - metric(method), overall and per defect type (None where absent)."""
    def diff(a, b):
        return {k: (None if a.get(k) is None or b.get(k) is None else a[k] - b[k])
                for k in GAP_KEYS}
    gap = diff(true_row, row)
    gap['by_type'] = {kind: diff(true_row['by_type'][kind], entry)
                      for kind, entry in row['by_type'].items() if kind != 'good'}
    return gap


def _pose_error(outcome):
    return (cameras.rotation_error_deg(outcome.viewmat, outcome.true_viewmat),
            cameras.translation_error_rel(outcome.viewmat, outcome.true_viewmat))


def markdown(result):
    """Format two tables: metrics, gap, pose error, timing per row; then per defect type."""
    rows = {TRUE: result[TRUE], **result['methods']}
    stages = [s for s in ('retrieval', 'igs', 'render', 'features', 'scoring', 'total')
              if any(s in r['timing'] for r in rows.values())]
    lines = [f'{result["category"]}: {result["n_images"]} images, extractor '
             f'{result["extractor"]}, {result["device"]}', '',
             '| pose | pixel AUROC | image AUROC | pixel AP | gap pixel AUROC | gap image AUROC '
             '| gap pixel AP | rot median / p90 (deg) | trans median / p90 (%) | > 2 deg '
             f'| flagged defects / normal | s/img {" / ".join(stages)} |', '|---' * 12 + '|']
    for name, r in rows.items():
        gap = r.get('gap', {})
        p = r['pose']
        lines.append(
            f'| {name} | {_num(r["pixel_auroc"])} | {_num(r["image_auroc"])} | '
            f'{_num(r["pixel_ap"])} | ' + ' | '.join(_num(gap.get(k)) for k in GAP_KEYS)
            + f' | {p["rot_deg_median"]:.2f} / {p["rot_deg_p90"]:.2f} | '
            f'{100 * p["trans_rel_median"]:.2f} / {100 * p["trans_rel_p90"]:.2f} | '
            f'{p["n_over_2deg"]}/{result["n_images"]} | {_flagged(r["verdict"])} | '
            + ' / '.join(_num(r['timing'].get(s), 2) for s in stages) + ' |')
    lines += ['', '| pose | defect | n | rot median / p90 (deg) | trans median (%) | > 2 deg '
              '| gap pixel AUROC | gap image AUROC | gap pixel AP |', '|---' * 9 + '|']
    for name, r in rows.items():
        for kind, entry in r['by_type'].items():
            p = entry['pose']
            gap = r.get('gap', {}).get('by_type', {}).get(kind, {})
            lines.append(f'| {name} | {kind} | {entry["n"]} | {p["rot_deg_median"]:.2f} / '
                         f'{p["rot_deg_p90"]:.2f} | {100 * p["trans_rel_median"]:.2f} | '
                         f'{p["n_over_2deg"]} | '
                         + ' | '.join(_num(gap.get(k)) for k in GAP_KEYS) + ' |')
    return '\n'.join(lines)


def _flagged(verdict):
    """'defects flagged/defects, normal flagged/normal' from a verdict summary."""
    counts = verdict['counts']
    defects = [c for t, c in counts.items() if t != 'good']
    good = counts.get('good', [0, 0])
    return (f'{sum(f for f, _ in defects)}/{sum(n for _, n in defects)}, '
            f'{good[0]}/{good[1]}')


def _num(value, digits=3):
    return '-' if value is None else f'{value:.{digits}f}'


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {text}')
    return value


def _bar(desc):
    return lambda items: tqdm(items, desc=desc, leave=False, disable=not sys.stderr.isatty())


if __name__ == '__main__':
    sys.exit(main())
