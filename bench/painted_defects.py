#!/usr/bin/env python3
"""Painted defects on a real capture: a test split from held-out registered views.

bench/painted_defects.py --data CAPTURE --out DIR [--size 128] [--every 8] [--offset 4]
                         [--seed 0] [--train-args "..."] [--eval-args "..."]

A real capture (COLMAP, transforms.json) has no defect views. This bench makes some
without a camera: every ``--every``-th registered view, from ``--offset`` on, leaves the
training set and becomes a test image twice, as it is (``good``) and with colour blotches
painted over the object (``Stains``, exact masks). The rest train the scene, so no test
view is ever trained on, indexed for retrieval or used for calibration. Written to
DIR/<name>/ as a transforms.json capture (undistorted PNG views at ``--size``, each
training view's own pinhole; the test images resampled to one common pinhole, the median
of the held-out views', which changes no geometry since only K differs) with
``test_poses.json`` (the SfM poses). Then offline/train_scene.py and offline/evaluate.py
run on it with their defaults (plus ``--train-args`` / ``--eval-args``) and their summary
lines are printed.

Stains are drawn where the view shows the object, i.e. where it differs from the
capture's backdrop colour (``core.train.border_colour``) by more than 0.1: one to three
ellipses per image, 3 to 8 % of the long side, of a random saturated colour blended at
60 to 90 % opacity. The mask is the pixels whose 8-bit colour changed.
"""
import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from igspad_ros.core import cameras
from igspad_ros.core.train import border_colour
from igspad_ros.data.capture import load_capture
from igspad_ros.data.transforms_writer import NerfstudioCamera, transforms_meta

ROOT = Path(__file__).resolve().parents[1]


def build_parser():
    """Build the command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', required=True, type=Path, help='capture folder')
    parser.add_argument('--out', required=True, type=Path, help='folder for the test capture, '
                        'its scene and its evaluation')
    parser.add_argument('--size', type=int, default=128, help='long side of the views (128)')
    parser.add_argument('--every', type=int, default=8, help='every N-th view is a test view')
    parser.add_argument('--offset', type=int, default=4, help='index of the first test view')
    parser.add_argument('--seed', type=int, default=0, help='stain seed (0)')
    parser.add_argument('--train-args', default='', help='extra offline/train_scene.py args')
    parser.add_argument('--eval-args', default='', help='extra offline/evaluate.py args')
    return parser


def paint_stains(image, backdrop, rng):
    """Return (stained 8-bit image, mask) with blotches over the object's pixels."""
    h, w = image.shape[:2]
    obj = np.abs(image.astype(np.float32) / 255.0 - np.asarray(backdrop)).max(axis=2) > 0.1
    out = image.astype(np.float32)
    ys, xs = np.nonzero(obj)
    if not len(ys):
        raise ValueError('no object pixels to paint on (the view shows only the backdrop)')
    for _ in range(rng.integers(1, 4)):
        k = rng.integers(len(ys))
        axes = tuple(int(max(2, rng.uniform(0.03, 0.08) * max(h, w))) for _ in range(2))
        blob = np.zeros((h, w), np.uint8)
        cv2.ellipse(blob, (int(xs[k]), int(ys[k])), axes, float(rng.uniform(0, 180)), 0, 360,
                    1, -1)
        blob = blob.astype(bool) & obj
        colour = cv2.cvtColor(np.uint8([[[rng.integers(180), 220, 200]]]),
                              cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
        alpha = rng.uniform(0.6, 0.9)
        out[blob] = (1 - alpha) * out[blob] + alpha * colour
    stained = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return stained, np.any(stained != image, axis=2)


def common_pinhole(views):
    """Median focal lengths and principal point of ``views`` (all of one size)."""
    Ks = np.stack([v.K for v in views])
    K = np.median(Ks, axis=0)
    K[0, 1] = K[1, 0] = K[2, 0] = K[2, 1] = 0.0
    K[2, 2] = 1.0
    return K


def to_pinhole(image, K_from, K_to):
    """Resample an undistorted image from one pinhole to another (same camera centre)."""
    H = K_to @ np.linalg.inv(K_from)
    # pixel-edge K: shift to OpenCV's integer pixel centres around the homography
    shift = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    H = shift @ H @ np.linalg.inv(shift)
    h, w = image.shape[:2]
    return cv2.warpPerspective(image, H, (w, h), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)


def write_test_capture(capture, out, every, offset, seed):
    """Write the split capture; return (its folder, number of train and test views)."""
    views = capture.train
    test_ids = set(range(offset, len(views), every))
    train = [v for v in views if v.index not in test_ids]
    held = [v for v in views if v.index in test_ids]
    if len(held) < 2 or len(train) < 8:
        raise ValueError(f'{len(views)} views give {len(held)} test and {len(train)} training '
                         'views; change --every / --offset')
    sizes = {v.image.shape for v in held}
    if len(sizes) > 1:
        raise ValueError(f'held-out views differ in size: {sorted(sizes)}')
    root = out / capture.name
    (root / 'images').mkdir(parents=True, exist_ok=True)
    frames = []
    for v in train:
        name = f'images/{v.index:05d}.png'
        _write(root / name, _u8(v.image))
        frames.append({'file_path': name, 'viewmat': v.viewmat,
                       'camera': NerfstudioCamera(v.K[0, 0], v.K[1, 1], v.K[0, 2], v.K[1, 2],
                                                  v.image.shape[1], v.image.shape[0])})
    meta, _ = transforms_meta(frames)
    K = common_pinhole(held)
    h, w = held[0].image.shape[:2]
    meta.update({'fl_x': K[0, 0], 'fl_y': K[1, 1], 'cx': K[0, 2], 'cy': K[1, 2], 'w': w, 'h': h})
    (root / 'transforms.json').write_text(json.dumps(meta, indent=1))
    backdrop = border_colour([v.image for v in views], [v.mask for v in views])
    rng = np.random.default_rng(seed)
    poses = {}
    for n, v in enumerate(held):
        image = _u8(to_pinhole(v.image, v.K, K))
        stained, mask = paint_stains(image, backdrop, rng)
        for kind, picture in (('good', image), ('Stains', stained)):
            _write(root / 'test' / kind / f'{n}.png', picture)
            poses[f'test/{kind}/{n}.png'] = cameras.viewmat_to_blender_c2w(v.viewmat).tolist()
        _write(root / 'ground_truth' / 'Stains' / f'{n}_mask.png', mask.astype(np.uint8) * 255)
    (root / 'test_poses.json').write_text(json.dumps(poses, indent=1))
    return root, len(train), len(held)


def _u8(image):
    return np.clip(np.round(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)


def _write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), data):
        raise OSError(f'could not write {path}')


def _tool(script, args):
    cmd = [sys.executable, str(ROOT / script), *args]
    print('$', ' '.join(shlex.quote(c) for c in cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise SystemExit(done.returncode)


def main(argv=None):
    """Write the split capture, train on it, evaluate it, print both summary lines."""
    args = build_parser().parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f'painted_defects: error: {args.out} exists and is not empty', file=sys.stderr)
        return 2
    capture = load_capture(args.data, size=args.size, load_test=False)
    root, n_train, n_test = write_test_capture(capture, args.out, args.every, args.offset,
                                               args.seed)
    print(f'wrote {root}: {n_train} training views, {n_test} good + {n_test} Stains test images')
    scene = args.out / 'scene.ply'
    _tool('offline/train_scene.py', ['--data', str(root), '--out', str(scene), '--device', 'cpu',
                                     '--size', str(args.size), *shlex.split(args.train_args)])
    _tool('offline/evaluate.py', ['--data', str(root), '--scene', str(scene), '--json',
                                  str(args.out / 'eval.json'), '--device', 'cpu',
                                  *shlex.split(args.eval_args)])
    return 0


if __name__ == '__main__':
    sys.exit(main())
