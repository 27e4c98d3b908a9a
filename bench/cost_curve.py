#!/usr/bin/env python3
"""Cost curve: median seconds per image by stage at several image sizes and IGS configs.

bench/cost_curve.py --data CATDIR --scene SCENE.ply [--sizes 64,128,256,512] [--images N]
                    [--threads 1] [--configs a,b] [--json OUT.json]

One scene (trained at any size; it renders at every size) and one category whose images
are at least the largest size. At each size the category is loaded at that long side, the
Inspector is built on its training views (index and threshold are not per-image costs and
are built before timing), and the same ``--images`` test images (spread over the test
list) are inspected with each configuration in turn, side by side in one run:

- ``input_size``: the default IGS rendering at the input size for all its steps (as before
  2026-12-07);
- ``default``: the shipped CPU configuration (``core.inspector.cpu_igs_config``), IGS
  rendering at the scene's training size at most (supersampled when the input is half of
  it or smaller);
- ``pnp``: ``core.inspector.pnp_igs_config``, IGS from a PnP-corrected start, the learning
  rate decayed at 20 of the 60 steps;
- ``coarse_to_fine``: ``core.inspector.coarse_to_fine_igs_config``, renders at most 128 px
  long and the last 10 steps at up to 256 px.

It prints one row per (size, configuration): median seconds of retrieval, IGS, render,
features, scoring and the total, and the total's ratio to the same configuration at the
smallest size. The pose error against test_poses.json is printed too, so speed is not
bought with accuracy, and how many images the failure recovery ran IGS again for.
"""
import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from igspad_ros.core import cameras
from igspad_ros.core.evaluation import spread_subset
from igspad_ros.core.images import MAX_IMAGE_SIDE
from igspad_ros.core.inspector import (STAGES, Inspector, InspectorConfig,
                                       coarse_to_fine_igs_config, cpu_igs_config,
                                       pnp_igs_config)
from igspad_ros.data.capture import load_capture


def configurations():
    """Return {name: InspectorConfig} compared at every size."""
    return {'input_size': InspectorConfig(igs=replace(cpu_igs_config(),
                                                      working_size=MAX_IMAGE_SIDE)),
            'default': InspectorConfig(igs=cpu_igs_config()),
            'pnp': InspectorConfig(igs=pnp_igs_config()),
            'coarse_to_fine': InspectorConfig(igs=coarse_to_fine_igs_config())}


def build_parser():
    """Build the command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', required=True, type=Path, help='category or capture folder')
    parser.add_argument('--scene', required=True, type=Path, help='scene PLY trained on it')
    parser.add_argument('--sizes', default='64,128,256,512', help='long sides to time')
    parser.add_argument('--images', type=int, default=4, help='test images per size')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (1)')
    parser.add_argument('--configs', default=','.join(configurations()),
                        help='comma-separated configurations to time (default: all)')
    parser.add_argument('--json', type=Path, default=None, help='write the rows here')
    return parser


def run(args):
    """Time every configuration at every size; return the rows."""
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(',')]
    rows = []
    for size in sizes:
        capture = load_capture(args.data, size=size)
        tests = spread_subset(capture.test, args.images)
        for name in args.configs.split(','):
            config = configurations()[name]
            # threshold given: the timing run does not recalibrate the scene's sidecars
            inspector = Inspector(args.scene, replace(config, threshold=1.0), device='cpu',
                                  train_views=capture.train)
            seconds, rot, retried = [], [], 0
            for test in tests:
                result = inspector.inspect(test.image, test.K)
                seconds.append(result.seconds)
                retried += result.retried
                if test.true_viewmat is not None:
                    rot.append(cameras.rotation_error_deg(result.viewmat, test.true_viewmat))
            row = {'size': size, 'config': name,
                   **{k: float(np.median([s[k] for s in seconds])) for k in STAGES},
                   'total': float(np.median([sum(s.values()) for s in seconds])),
                   'rot_deg_median': float(np.median(rot)) if rot else None,
                   'retried': retried, 'images': len(tests)}
            rows.append(row)
            print(_format(row, rows), flush=True)
    return rows


def _format(row, rows):
    first = next(r for r in rows if r['config'] == row['config'])
    stages = ' '.join(f'{k} {row[k]:6.2f}' for k in STAGES)
    rot = '-' if row['rot_deg_median'] is None else f'{row["rot_deg_median"]:.2f} deg'
    return (f'{row["size"]:4d} px {row["config"]:>14}: {stages} | total {row["total"]:6.2f} s '
            f'({row["total"] / first["total"]:.2f}x of {first["size"]} px) | pose {rot} | '
            f'IGS retried {row["retried"]}/{row["images"]}')


def main(argv=None):
    """Parse, run, print the table and optionally write JSON."""
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [c for c in args.configs.split(',') if c not in configurations()]
    if unknown:
        parser.error(f'--configs: unknown {", ".join(unknown)}; choose from '
                     f'{", ".join(configurations())}')
    print('median seconds per image by stage (one torch thread unless --threads)')
    rows = run(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
