#!/usr/bin/env python3
"""Write the test split of a MAD category or a capture as a rosbag2 for the replayer.

A capture's test split (test/<type>/<n>.png|jpg, ground_truth/, taken with its camera) is
written undistorted, with each image's pinhole K in CameraInfo.

Example: offline/mad_to_rosbag.py --data data/MAD-Sim/01Gorilla --out bags/01Gorilla
"""
import sys
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from igspad_ros.cli import ToolParser
from igspad_ros.data.bags import BagExistsError, STORAGES, write_mad_bag
from igspad_ros.data.capture import FORMATS, load_capture
from igspad_ros.data.mad import MadFormatError


def main(argv=None):
    """Parse arguments, write the bag and print one summary line."""
    parser = ToolParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', required=True, type=Path,
                        help='MAD category, transforms.json capture or COLMAP folder')
    parser.add_argument('--format', choices=FORMATS, default=None,
                        help='read --data as this format (default: detected)')
    parser.add_argument('--out', required=True, type=Path,
                        help='new bag folder (must not exist; never inside --data)')
    parser.add_argument('--storage', choices=sorted(STORAGES), default='mcap',
                        help='rosbag2 storage plugin (mcap)')
    parser.add_argument('--size', type=int, default=None,
                        help='longest image side after downscaling (default: native size)')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        _check_out(args.data, args.out)
        category = load_capture(args.data, size=args.size, load_train=False,
                                format=args.format)
        with tqdm(total=len(category.test), unit='img', disable=not sys.stderr.isatty()) as bar:
            n = write_mad_bag(category, args.out, storage=args.storage, progress=bar.update)
    except (MadFormatError, BagExistsError, ValueError, OSError) as err:
        print(f'{parser.prog}: error: {err}', file=sys.stderr)
        return 2
    counts = Counter(t.defect_type for t in category.test)
    split = ', '.join(f'{counts[k]} {k}' for k in sorted(counts))
    print(f'wrote {args.out} ({args.storage}): {n} images of {category.name} ({split}) at '
          f'{category.width}x{category.height} in {time.perf_counter() - start:.1f} s')
    return 0


def _check_out(data, out):
    """Refuse an existing output folder and any output inside the dataset folder."""
    if out.exists():
        raise BagExistsError(f'{out}: exists already; choose a new bag folder (bags are '
                             f'never overwritten)')
    if data.is_dir() and out.resolve().is_relative_to(data.resolve()):
        raise ValueError(f'{out}: inside the dataset folder {data}; write the bag elsewhere')


if __name__ == '__main__':
    sys.exit(main())
