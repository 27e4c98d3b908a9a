#!/usr/bin/env python3
"""IGS ablation on a synthetic category: pose error of retrieval, IGS, MPS, multi-hypothesis.

bench/igs_ablation.py --data CATDIR --scene SCENE.ply [--per-type N] [--types T,..] [--workers W]
                      [--methods M,..] [--mps-radius PX] [--twins [--seed S] [--burr-scale X]]
                      [--json OUT.json]

For each test image with a ground-truth pose (test_poses.json) it runs four methods from
the same retrieval result: the retrieved view's pose alone, IGS without MPS, IGS with MPS
(paper 3.2.3), and IGS with MPS from several retrieved views at once. It prints one table
(median rotation error, median translation error as a fraction of the camera distance,
success rate at < 2 degrees, seconds per image) split by defect type. With ``--workers``
the images are shared among that many processes (one torch thread each, the retrieval
index built once); seconds per image are then measured with the other workers running.

With ``--twins`` (categories from ``make_synthetic.py``, given its ``--seed`` and
``--burr-scale``) every IGS method also runs, from the same start, on each defective image's
defect-free twin, regenerated and checked against the files; the table adds the defect's
pull: the median rotation and camera-centre distance between the two estimates. Unlike the
error against the true pose, the pull leaves out what the scene itself gets wrong and
measures what MPS is for (paper 3.2.3: the defect must not move the pose).
"""
import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from igspad_ros.core import cameras
from igspad_ros.core.igs import IGSConfig, invert_pose
from igspad_ros.core.matching import DEFAULT_MATCHER, MATCHER_NAMES, make_matcher
from igspad_ros.core.retrieval import RetrievalIndex
from igspad_ros.core.scene import GaussianScene, read_scene_meta
from igspad_ros.data.mad import load_category
from igspad_ros.data.synthetic import build_object, make_test_samples

METHODS = ('retrieval', 'igs', 'igs+mps', 'igs+mps+multi')
SUCCESS_DEG = 2.0


def build_parser():
    """Build the command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', required=True, type=Path, help='synthetic category folder')
    parser.add_argument('--scene', required=True, type=Path, help='scene PLY trained on it')
    parser.add_argument('--matcher', default=DEFAULT_MATCHER, choices=MATCHER_NAMES)
    parser.add_argument('--per-type', type=int, default=3,
                        help='test images per defect type (first ones; 0 = all)')
    parser.add_argument('--types', default='',
                        help='comma-separated defect types to run (default: all)')
    parser.add_argument('--steps', type=int, default=300, help='IGS steps (paper: 300)')
    parser.add_argument('--lr-decay-step', type=int, default=200)
    parser.add_argument('--hypotheses', type=int, default=3)
    parser.add_argument('--methods', default=','.join(METHODS[1:]),
                        help=f'comma-separated IGS methods to run of {", ".join(METHODS[1:])} '
                             '(retrieval always runs)')
    parser.add_argument('--mps-radius', type=float, default=None,
                        help='MPS radius k in px of the test image (default: IGS default, '
                             '8 %% of the long side)')
    parser.add_argument('--shortlist', type=int, default=16)
    parser.add_argument('--threads', type=int, default=1, help='torch threads per process')
    parser.add_argument('--workers', type=int, default=1,
                        help='processes sharing the images (one per free core)')
    parser.add_argument('--twins', action='store_true',
                        help='also run IGS on the defect-free twin of each defective image '
                             'and report how far the defect pulls the pose')
    parser.add_argument('--seed', type=int, default=0,
                        help='with --twins: the make_synthetic.py --seed of the category')
    parser.add_argument('--burr-scale', type=float, default=1.0,
                        help='with --twins: the make_synthetic.py --burr-scale of the category')
    parser.add_argument('--json', type=Path, help='write per-image results here')
    return parser


def main(argv=None):
    """Run the ablation and print the table."""
    args = build_parser().parse_args(argv)
    if args.workers < 1 or args.hypotheses < 1 or args.steps < 1:
        print('igs_ablation: --workers, --hypotheses and --steps must be at least 1',
              file=sys.stderr)
        return 2
    args.methods = [m for m in args.methods.split(',') if m]
    unknown = sorted(set(args.methods) - set(METHODS[1:]))
    if unknown or not args.methods:
        print(f'igs_ablation: --methods: unknown {", ".join(unknown) or "(none given)"}; '
              f'choose from {", ".join(METHODS[1:])}', file=sys.stderr)
        return 2
    if args.mps_radius is not None and not args.mps_radius > 0:
        print(f'igs_ablation: --mps-radius must be positive, got {args.mps_radius}',
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        meta = read_scene_meta(args.scene)
        category = load_category(args.data, size=int(meta['width']))
        scene = GaussianScene.load_ply(args.scene)
        twins = clean_twins(category, args.seed, args.burr_scale) if args.twins else None
    except (ValueError, OSError, KeyError) as err:
        print(f'igs_ablation: {err}', file=sys.stderr)
        return 2
    types = {t for t in args.types.split(',') if t}
    absent = sorted(types - {t.defect_type for t in category.test})
    if absent:
        print(f'igs_ablation: --types: {args.data} has no test images of type '
              f'{", ".join(absent)}', file=sys.stderr)
        return 2
    tests = [t for t in _pick_tests(category.test, args.per_type)
             if not types or t.defect_type in types]
    if not tests:
        print(f'igs_ablation: {args.data}: no test images with ground-truth poses',
              file=sys.stderr)
        return 2
    matcher = make_matcher(args.matcher)
    views = category.train
    index = RetrievalIndex.build([v.image for v in views], [v.viewmat for v in views], matcher,
                                 shortlist=args.shortlist, progress=_bar('index'))
    paths = [t.rel_path for t in tests]
    if args.workers == 1:
        _setup(args, category, scene, matcher, index, twins)
        rows = [_run_image(p) for p in _bar('images')(paths)]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            index.save(Path(tmp) / 'index.npz')   # built once, loaded by every worker
            with multiprocessing.get_context('spawn').Pool(
                    args.workers, _init_worker, (args, Path(tmp) / 'index.npz', twins)) as pool:
                rows = list(_bar('images')(pool.imap_unordered(_run_image, paths),
                                           total=len(paths)))
    by_path = {row['path']: row for row in rows}
    rows = [by_path[p] for p in paths]
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({'args': {k: str(v) for k, v in vars(args).items()},
                                         'images': rows}, indent=1))
    headline = 'igs+mps' if 'igs+mps' in rows[0] else [m for m in METHODS if m in rows[0]][-1]
    ok = np.mean([r[headline]['rot_deg'] < SUCCESS_DEG for r in rows])
    print(f'igs_ablation: {len(rows)} images, {headline} success {100 * ok:.0f} %')
    return 0


_WORKER = {}   # what one process needs for every image: set by _init_worker


def clean_twins(category, seed, burr_scale):
    """Defect-free twin (uint8) of each defective test image, by its path in the category.

    The test set is regenerated with the synthetic generator; every regenerated image must
    equal its file, so a category made with other settings is refused.
    """
    tests = {t.rel_path: t for t in category.test}
    samples = make_test_samples(build_object(seed), category.K, category.width,
                                category.height, len(category.test), seed, burr_scale)
    for sample in samples:
        test = tests.get(sample.rel_path)
        if test is None or not np.array_equal(sample.image.astype(np.float32) / 255.0,
                                              test.image):
            raise ValueError(f'{category.root}: {sample.rel_path} differs from the synthetic '
                             f'generator at seed {seed}, burr scale {burr_scale} and '
                             f'{category.width} px; --twins needs the make_synthetic.py '
                             f'settings of this category')
    return {s.rel_path: s.clean for s in samples if s.defect_type != 'good'}


def _init_worker(args, index_path, twins):
    """Load the scene, category, matcher and retrieval index once per worker process."""
    torch.set_num_threads(args.threads)
    meta = read_scene_meta(args.scene)
    category = load_category(args.data, size=int(meta['width']))
    matcher = make_matcher(args.matcher)
    index = RetrievalIndex.load(index_path, matcher, shortlist=args.shortlist)
    _setup(args, category, GaussianScene.load_ply(args.scene), matcher, index, twins)


def _setup(args, category, scene, matcher, index, twins):
    """Keep what every image needs in this process, with the chosen IGS configurations."""
    base = IGSConfig(steps=args.steps, lr_decay_step=args.lr_decay_step,
                     mps_radius=args.mps_radius)
    configs = {'igs': replace(base, mps=False), 'igs+mps': base,
               'igs+mps+multi': replace(base, n_hypotheses=args.hypotheses)}
    _WORKER.update(
        args=args, K=category.K, tests={t.rel_path: t for t in category.test}, scene=scene,
        matcher=matcher, index=index, twins=twins or {},
        configs={name: configs[name] for name in METHODS[1:] if name in args.methods})


def _run_image(path):
    """Run every method on the test image ``path``; return its row."""
    w = _WORKER
    test, matcher = w['tests'][path], w['matcher']
    t0 = time.perf_counter()
    feats = matcher.extract(test.image)
    cands = w['index'].query_features(feats, top_k=w['args'].hypotheses, min_angle_deg=30.0)
    t_ret = time.perf_counter() - t0
    row = {'path': test.rel_path, 'defect_type': test.defect_type}
    row['retrieval'] = _errors(cands[0].viewmat, test.true_viewmat, t_ret)
    twin = w['twins'].get(path)
    if twin is not None:
        twin = twin.astype(np.float32) / 255.0
        twin_feats = matcher.extract(twin)
    for name, config in w['configs'].items():
        starts = np.stack([c.viewmat for c in cands[:config.n_hypotheses]])
        t0 = time.perf_counter()
        est = invert_pose(w['scene'], test.image, starts, w['K'], config, matcher=matcher,
                          test_features=feats)
        row[name] = _errors(est.viewmat, test.true_viewmat, t_ret + time.perf_counter() - t0)
        row[name]['steps'] = est.steps
        if twin is not None:
            # the same start and settings on the image without its defect
            ref = invert_pose(w['scene'], twin, starts, w['K'], config, matcher=matcher,
                              test_features=twin_feats)
            row[name]['twin_rot_deg'] = cameras.rotation_error_deg(ref.viewmat,
                                                                   test.true_viewmat)
            row[name]['pull_deg'] = cameras.rotation_error_deg(est.viewmat, ref.viewmat)
            row[name]['pull_rel'] = cameras.translation_error_rel(est.viewmat, ref.viewmat)
    print(f'{path}: ' + ', '.join(f'{m} {row[m]["rot_deg"]:.2f} deg'
                                  + (f' (pull {row[m]["pull_deg"]:.3f})'
                                     if 'pull_deg' in row[m] else '')
                                  for m in METHODS if m in row),
          file=sys.stderr, flush=True)
    return row


def markdown(rows):
    """Table: one row per method and defect type (and all types together).

    With twins, two columns more: the defect's median pull on rotation and camera centre
    (over the images of the row that have a twin; '-' where none has).
    """
    types = sorted({r['defect_type'] for r in rows}) + ['all']
    methods = [m for m in METHODS if m in rows[0]]
    pulls = any('pull_deg' in r[m] for r in rows for m in methods)
    head = ('| method | defect | n | rot median (deg) | trans median (%) | success <2deg '
            '| s/img |')
    lines = [head + (' pull rot (deg) | pull trans (%) |' if pulls else ''),
             '|---|---|---|---|---|---|---|' + ('---|---|' if pulls else '')]
    for method in methods:
        for kind in types:
            sel = [r[method] for r in rows if kind in ('all', r['defect_type'])]
            rot = np.array([s['rot_deg'] for s in sel])
            trans = np.array([s['trans_rel'] for s in sel])
            secs = np.array([s['seconds'] for s in sel])
            line = (f'| {method} | {kind} | {len(sel)} | {np.median(rot):.2f} | '
                    f'{100 * np.median(trans):.2f} | '
                    f'{100 * np.mean(rot < SUCCESS_DEG):.0f} % | {np.median(secs):.1f} |')
            if pulls:
                pulled = [s for s in sel if 'pull_deg' in s]
                line += (f' {np.median([s["pull_deg"] for s in pulled]):.3f} | '
                         f'{100 * np.median([s["pull_rel"] for s in pulled]):.3f} |'
                         if pulled else ' - | - |')
            lines.append(line)
    return '\n'.join(lines)


def _pick_tests(tests, per_type):
    chosen, seen = [], {}
    for test in tests:
        if test.true_viewmat is None:
            continue
        seen[test.defect_type] = seen.get(test.defect_type, 0) + 1
        if per_type <= 0 or seen[test.defect_type] <= per_type:
            chosen.append(test)
    return chosen


def _errors(viewmat, true_viewmat, seconds):
    return {'rot_deg': cameras.rotation_error_deg(viewmat, true_viewmat),
            'trans_rel': cameras.translation_error_rel(viewmat, true_viewmat),
            'seconds': seconds}


def _bar(desc):
    return lambda items, total=None: tqdm(items, desc=desc, total=total, leave=False,
                                          disable=not sys.stderr.isatty())


if __name__ == '__main__':
    sys.exit(main())
