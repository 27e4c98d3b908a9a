#!/usr/bin/env python3
"""Write a synthetic MAD-format category (procedural LEGO-like object with defects).

Example: offline/make_synthetic.py --out data/synthetic --category brick --size 128
"""
import sys
import time
from collections import Counter

from tqdm import tqdm

from igspad_ros.cli import ToolParser
from igspad_ros.data.synthetic import SyntheticConfigError, make_category


def main(argv=None):
    """Parse arguments, write the category and print one summary line."""
    parser = ToolParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='folder that receives the category')
    parser.add_argument('--category', required=True, help='category folder name')
    parser.add_argument('--size', type=int, default=800, help='image side in pixels (800)')
    parser.add_argument('--n-train', type=int, default=210,
                        help='training views, at most 210 (evenly spread over the 14x15 grid)')
    parser.add_argument('--n-test', type=int, default=40,
                        help='test images, split evenly over good/Burrs/Missing/Stains (40)')
    parser.add_argument('--seed', type=int, default=0, help='object and test-set seed (0)')
    parser.add_argument('--burr-scale', type=float, default=1.0,
                        help='size of the Burrs defects relative to the default, 0.25-4 (1)')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    bar = tqdm(total=args.n_train + args.n_test, unit='img', disable=not sys.stderr.isatty())
    try:
        root = make_category(args.out, args.category, size=args.size, n_train=args.n_train,
                             n_test=args.n_test, seed=args.seed, progress=bar.update,
                             burr_scale=args.burr_scale)
    except (SyntheticConfigError, OSError) as err:
        bar.close()
        print(f'{parser.prog}: error: {err}', file=sys.stderr)
        return 2
    bar.close()
    counts = Counter(p.parent.name for p in (root / 'test').glob('*/*.png'))
    split = ', '.join(f'{counts[k]} {k}' for k in sorted(counts))
    print(f'wrote {root}: {args.n_train} train + {args.n_test} test images ({split}) '
          f'at {args.size}x{args.size} in {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
