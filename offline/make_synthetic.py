#!/usr/bin/env python3
"""Write a synthetic MAD-format category or capture (procedural LEGO-like object, defects).

Example: offline/make_synthetic.py --out data/synthetic --category brick --size 128
--family animal builds a LEGO-like animal instead of the brick (synthetic_animals.py).
--format transforms|colmap|both writes the object as a user's capture instead: a 4:3 JPEG
frame whose long side is --size, with a distorted lens, as a nerfstudio transforms.json
capture in OUT/CATEGORY and/or a COLMAP capture in OUT/CATEGORY_colmap. A capture can be
made harder, as a real one is: --background room (a textured table in a textured room),
--exposure E (per-photo exposure and white-balance gains, recorded in photometric.json),
--pose-noise DEG,FRAC (written training poses off the true ones, which go to
train_poses_true.json).
"""
import argparse
import sys
import time
from collections import Counter

from tqdm import tqdm

from igspad_ros.cli import ToolParser
from igspad_ros.data.synthetic import FAMILIES, SyntheticConfigError, make_category
from igspad_ros.data.synthetic_capture import (BACKGROUNDS, FORMATS, capture_camera,
                                               make_capture)

CAPTURE_FORMATS = {'transforms': ('transforms',), 'colmap': ('colmap',), 'both': FORMATS}
HARDENING = ('background', 'exposure', 'pose_noise')


def pose_noise(text):
    """Parse DEG,FRAC into two floats (argparse type)."""
    try:
        deg, frac = (float(x) for x in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected DEG,FRAC (two numbers), got {text!r}')
    return deg, frac


def main(argv=None):
    """Parse arguments, write the category or capture and print one summary line."""
    parser = ToolParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='folder that receives the category')
    parser.add_argument('--category', required=True, help='category folder name')
    parser.add_argument('--size', type=int, default=800,
                        help='image side in pixels, the long side of a capture (800)')
    parser.add_argument('--n-train', type=int, default=210,
                        help='training views, at most 210 (evenly spread over the 14x15 grid)')
    parser.add_argument('--n-test', type=int, default=40,
                        help='test images, split evenly over good/Burrs/Missing/Stains (40)')
    parser.add_argument('--seed', type=int, default=0, help='object and test-set seed (0)')
    parser.add_argument('--burr-scale', type=float, default=1.0,
                        help='size of the Burrs defects relative to the default, 0.25-4 (1)')
    parser.add_argument('--format', choices=('mad', *CAPTURE_FORMATS), default='mad',
                        help='mad: a MAD category (default); transforms, colmap or both: '
                             'a capture in that format')
    parser.add_argument('--family', choices=FAMILIES, default='brick',
                        help='brick: the brick on a plate (default); animal: a LEGO-like '
                             'animal (seeds 0-2 for development, 100-102 for reporting)')
    parser.add_argument('--background', choices=BACKGROUNDS,
                        help='capture only: white (default) or room, a textured table in a '
                             'textured room')
    parser.add_argument('--exposure', type=float,
                        help='capture only: per-photo exposure gain in [1-E, 1+E] and white '
                             'balance within 5%% E/0.2, E in [0, 0.5] (0)')
    parser.add_argument('--pose-noise', type=pose_noise, metavar='DEG,FRAC',
                        help='capture only: written training poses rotated DEG degrees and '
                             'moved FRAC of the distance to the object (0,0)')
    args = parser.parse_args(argv)
    if args.family != 'brick' and args.format != 'mad':
        parser.error(f'--family {args.family} writes MAD categories only (--format mad)')
    options = {k: getattr(args, k) for k in HARDENING if getattr(args, k) is not None}
    if args.format == 'mad' and options:
        flag = '--' + next(iter(options)).replace('_', '-')
        parser.error(f'{flag} applies to the capture formats (--format transforms, colmap '
                     f'or both), not to a MAD category')
    start = time.perf_counter()
    bar = tqdm(total=args.n_train + args.n_test, unit='img', disable=not sys.stderr.isatty())
    try:
        if args.format == 'mad':
            roots = [make_category(args.out, args.category, size=args.size,
                                   n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                                   progress=bar.update, burr_scale=args.burr_scale,
                                   family=args.family)]
        else:
            roots = list(make_capture(args.out, args.category, size=args.size,
                                      n_train=args.n_train, n_test=args.n_test,
                                      seed=args.seed, formats=CAPTURE_FORMATS[args.format],
                                      progress=bar.update, burr_scale=args.burr_scale,
                                      **options).values())
    except (SyntheticConfigError, OSError) as err:
        bar.close()
        print(f'{parser.prog}: error: {err}', file=sys.stderr)
        return 2
    bar.close()
    width, height = ((args.size, args.size) if args.format == 'mad'
                     else capture_camera(args.size).size)
    counts = Counter(p.parent.name for p in (roots[0] / 'test').glob('*/*'))
    split = ', '.join(f'{counts[k]} {k}' for k in sorted(counts))
    print(f'wrote {" and ".join(str(r) for r in roots)}: {args.n_train} train + '
          f'{args.n_test} test images ({split}) at {width}x{height} in '
          f'{time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
