#!/usr/bin/env python3
"""Evaluate IGSPAD on a MAD category or a capture's test split (or a folder of them).

--data is a MAD category, a nerfstudio / instant-ngp transforms.json capture or a COLMAP
folder with a MAD-named test split (test/<type>/<n>.png|jpg, ground_truth/, optional
test_poses.json) taken with the capture's camera.

One category: offline/evaluate.py --data data/brick --scene scenes/brick.ply --json out/brick.json
writes out/brick.json (metrics, pose errors, timing, per-image results), out/brick.md (the
table) and out/brick_gallery/ (test | rendered | heatmap overlay | ground truth per image).

A MAD root (a folder whose subfolders are categories): --scene is a pattern with {category}
(e.g. 'scenes/{category}.ply') or a folder holding <category>.ply or <category>/scene.ply,
and --json is an output folder: <category>.json and <category>_gallery/ per category,
results.md (one row per category and their mean). --jobs N runs categories in parallel
processes, one GPU each where there are several. A category whose JSON exists with the same
config is skipped (resumable). The table also holds a 2D baseline: the test image against
its retrieved training view without pose inversion.
"""
import argparse
import functools
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm import tqdm

from igspad_ros.cli import ToolParser
from igspad_ros.core.evaluation import METRIC_KEYS, EvaluationJob, markdown_table, run_job
from igspad_ros.core.features import DEFAULT_EXTRACTOR, EXTRACTOR_NAMES
from igspad_ros.core.igs import IGSConfig
from igspad_ros.core.inspector import InspectorConfig
from igspad_ros.core.matching import DEFAULT_MATCHER, MATCHER_NAMES
from igspad_ros.data.capture import FORMATS, CaptureFormatError, detect_format, load_capture


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {text}')
    return value


def build_parser():
    """Build the command-line interface (DESIGN.md contract plus ablation and batch options)."""
    parser = ToolParser(description=__doc__.splitlines()[0],
                        epilog='\n'.join(__doc__.splitlines()[2:]),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', required=True, type=Path,
                        help='MAD category or capture folder, or a folder of them')
    parser.add_argument('--format', choices=FORMATS, default=None,
                        help='read --data as this format (default: detected)')
    parser.add_argument('--scene', required=True,
                        help='scene PLY (its index and threshold beside it); for a folder of '
                        'categories a pattern with {category} or a folder of scenes')
    parser.add_argument('--json', required=True, type=Path,
                        help='output JSON (one category) or output folder (several)')
    parser.add_argument('--extractor', default=DEFAULT_EXTRACTOR, choices=EXTRACTOR_NAMES,
                        help=f'feature extractor ({DEFAULT_EXTRACTOR})')
    parser.add_argument('--extractor-weights', default=None,
                        help='weight file for sam_* / resnet18 / wide_resnet50')
    parser.add_argument('--matcher', default=DEFAULT_MATCHER, choices=MATCHER_NAMES,
                        help=f'matcher for retrieval and MPS ({DEFAULT_MATCHER})')
    parser.add_argument('--no-mps', action='store_true',
                        help='IGS without Matching Points Sampling (ablation)')
    parser.add_argument('--steps', type=_positive_int, default=None,
                        help='IGS steps (default: 300 on cuda as in the paper, 60 on cpu)')
    parser.add_argument('--roi', default='scene',
                        help="inspection region: 'scene' (the box stored at training), 'none' "
                        '(whole image) or xmin,ymin,zmin,xmax,ymax,zmax in the scene frame')
    parser.add_argument('--no-photometric', action='store_true',
                        help='score without colour-matching the render to the photo (ablation)')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'),
                        help='torch device (auto: cuda when available)')
    parser.add_argument('--limit', type=_positive_int, default=None,
                        help='evaluate N test images per category, evenly spread over the '
                        'sorted test list (all defect types and good images take part)')
    parser.add_argument('--jobs', type=_positive_int, default=1,
                        help='categories evaluated in parallel processes (1)')
    parser.add_argument('--no-baseline-2d', action='store_true',
                        help='skip the 2D baseline (retrieved training view, no IGS)')
    parser.add_argument('--no-gallery', action='store_true', help='write no gallery PNGs')
    parser.add_argument('--force', action='store_true',
                        help='re-evaluate categories whose JSON already exists')
    return parser


def inspector_config(args, device):
    """InspectorConfig for the parsed arguments; the steps default depends on the device."""
    config = InspectorConfig(extractor=args.extractor, extractor_weights=args.extractor_weights,
                             matcher=args.matcher, roi=args.roi,
                             photometric=not args.no_photometric)
    igs = IGSConfig() if device.startswith('cuda') else config.igs
    # the decay keeps its share of the run whatever the number of steps
    igs = replace(igs.with_steps(args.steps or igs.steps), mps=not args.no_mps)
    return replace(config, igs=igs)


def make_job(args, data_dir, scene_path, out_json, device, threads=None):
    """EvaluationJob of one category; its gallery goes beside the JSON as <stem>_gallery."""
    gallery = None if args.no_gallery else out_json.with_name(out_json.stem + '_gallery')
    return EvaluationJob(data_dir=data_dir, scene_path=Path(scene_path), out_json=out_json,
                         gallery_dir=gallery, config=inspector_config(args, device),
                         device=device, limit=args.limit,
                         baseline_2d=not args.no_baseline_2d, force=args.force,
                         threads=threads, data_format=args.format)


def run_one(job, name):
    """Run a job in this process with a per-image progress bar on a terminal."""
    bar = tqdm(desc=name, unit='img', disable=not sys.stderr.isatty(), leave=False)

    def progress(items):
        bar.reset(total=len(items))
        for item in items:
            yield item
            bar.update(1)
    try:
        return run_job(job, _loader(job), progress=progress)[0]
    finally:
        bar.close()


def find_categories(data, scene):
    """(name, data folder, scene path) per category of a MAD root, sorted by name."""
    out = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir() and _is_capture(p)):
        if '{category}' in scene:
            path = Path(scene.format(category=folder.name))
        else:
            flat, nested = Path(scene) / f'{folder.name}.ply', Path(scene) / folder.name / \
                'scene.ply'
            path = flat if flat.is_file() or not nested.is_file() else nested
        if not path.is_file():
            raise FileNotFoundError(f'{path}: no scene for category {folder.name}')
        out.append((folder.name, folder, path))
    if not out:
        raise FileNotFoundError(f'{data}: neither a capture nor a folder of categories '
                                f'or captures')
    return out


def _is_capture(folder):
    try:
        detect_format(folder)
    except CaptureFormatError:
        return False
    return True


def _loader(job):
    """Return the reader of the job's data: ``load_capture`` with its --format."""
    return functools.partial(load_capture, format=job.data_format)


def resolve_device(device):
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise ValueError('--device cuda: no CUDA device is available')
    return device


def main(argv=None):
    """Parse arguments, evaluate, write JSON / table / gallery and print one summary line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(message)s')
    start = time.perf_counter()
    try:
        device = resolve_device(args.device)
        if args.format is not None or _is_capture(args.data):
            job = make_job(args, args.data, args.scene, args.json, device)
            reports, table_path = [run_one(job, args.data.name)], args.json.with_suffix('.md')
        else:
            reports = run_all(find_categories(args.data, args.scene), args, device)
            table_path = args.json / 'results.md'
        table_path.parent.mkdir(parents=True, exist_ok=True)
        table_path.write_text(markdown_table(reports))
    except (ValueError, OSError) as err:
        print(f'{parser.prog}: error: {err}', file=sys.stderr)
        return 2
    print(summary_line(reports, table_path, time.perf_counter() - start))
    return 0


def run_all(categories, args, device):
    """Evaluate every category, ``args.jobs`` at a time; reports in category order."""
    args.json.mkdir(parents=True, exist_ok=True)
    n_gpus = torch.cuda.device_count() if device == 'cuda' else 0
    # parallel CPU jobs share the cores; one GPU each where there are several
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    jobs = {name: make_job(args, folder, scene, args.json / f'{name}.json',
                           f'cuda:{i % n_gpus}' if n_gpus > 1 else device, threads)
            for i, (name, folder, scene) in enumerate(categories)}
    reports = {}
    bar = tqdm(total=len(jobs), unit='category', disable=not sys.stderr.isatty())
    if args.jobs == 1:
        for name, job in jobs.items():
            reports[name] = run_one(job, name)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context('spawn')) as pool:
            futures = {pool.submit(run_job, job, _loader(job)): name
                       for name, job in jobs.items()}
            for future in as_completed(futures):
                reports[futures[future]] = future.result()[0]
                bar.update(1)
    bar.close()
    ordered = [reports[name] for name in jobs]
    summary = {'categories': list(jobs),
               **{k: _mean([r[k] for r in ordered]) for k in METRIC_KEYS}}
    (args.json / 'summary.json').write_text(json.dumps(summary, indent=1) + '\n')
    return ordered


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summary_line(reports, table_path, seconds):
    """One line: categories, images, mean metrics, the 2D baseline, the table, wall time."""
    def mean_of(items, key):
        value = _mean([item[key] for item in items])
        return '-' if value is None else f'{value:.3f}'
    n_images = sum(r['n_images'] for r in reports)
    base = [r['baseline_2d'] for r in reports if r.get('baseline_2d')]
    base_text = (f'; 2D baseline pixel AUROC {mean_of(base, "pixel_auroc")}, image AUROC '
                 f'{mean_of(base, "image_auroc")}' if base else '')
    verdicts = [r.get('verdict') or {} for r in reports]
    flagged = _mean([v.get('detection_rate') for v in verdicts])
    alarms = _mean([v.get('false_alarm_rate') for v in verdicts])
    verdict_text = (f'; at the threshold {_pct(flagged)} of defective and {_pct(alarms)} of '
                    'normal images flagged' if (flagged, alarms) != (None, None) else '')
    return (f'evaluated {len(reports)} categor{"y" if len(reports) == 1 else "ies"}, '
            f'{n_images} images: pixel AUROC {mean_of(reports, "pixel_auroc")}, image AUROC '
            f'{mean_of(reports, "image_auroc")}, pixel AP {mean_of(reports, "pixel_ap")}, '
            f'AUPRO {mean_of(reports, "aupro")}{base_text}{verdict_text}; table {table_path} '
            f'({seconds:.0f} s)')


def _pct(value):
    return '-' if value is None else f'{100.0 * value:.0f} %'


if __name__ == '__main__':
    sys.exit(main())
