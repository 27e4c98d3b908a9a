#!/usr/bin/env python3
"""Train a 3D Gaussian scene from a MAD-format category: scene.ply, its index and threshold.

Example: offline/train_scene.py --data data/synthetic/brick --out scenes/brick/scene.ply
"""
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from igspad_ros.cli import ToolParser
from igspad_ros.core.inspector import prepare_scene_artifacts
from igspad_ros.core.scene import PlyFormatError, write_scene_meta
from igspad_ros.core.train import TrainConfig, train_scene
from igspad_ros.data.mad import MadFormatError, load_category


def main(argv=None):
    """Parse arguments, train, write the scene and its metadata, print one summary line."""
    parser = ToolParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', required=True, type=Path, help='MAD-format category folder')
    parser.add_argument('--out', required=True, type=Path,
                        help='scene PLY to write (its .meta.json goes beside it)')
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto',
                        help='cuda (gsplat) or cpu (torch rasteriser); auto picks cuda if present')
    parser.add_argument('--iters', type=int, default=None,
                        help='optimisation steps (default: 30000 on cuda, 1000 on cpu)')
    parser.add_argument('--size', type=int, default=None,
                        help='longest image side to train at (default: 800 cuda, 128 cpu)')
    parser.add_argument('--sh-degree', type=int, default=None,
                        help='spherical-harmonics degree (default: 3 cuda, 1 cpu)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (0)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default; 1 is fastest on a '
                             'busy machine)')
    args = parser.parse_args(argv)
    device = args.device
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device available')
    if args.threads is not None:
        if args.threads < 1:
            parser.error('--threads must be at least 1')
        torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (('iters', args.iters), ('size', args.size),
                                   ('sh_degree', args.sh_degree)) if v is not None}
    try:
        _check_out(args.data, args.out)
        config = TrainConfig.for_device(device, seed=args.seed, **overrides)
        category = load_category(args.data, size=config.size, load_test=False)
        with tqdm(total=config.iters, unit='step', disable=not sys.stderr.isatty()) as bar:
            scene, report = train_scene([v.image for v in category.train],
                                        [v.viewmat for v in category.train], category.K,
                                        config, device=device, progress=bar.update)
        scene.save_ply(args.out)
        write_scene_meta(args.out, scene_meta(category, config, report, device), merge=False)
        # The node starts fast when the retrieval index and the threshold lie beside the scene.
        inspector = prepare_scene_artifacts(args.out, category, device=device,
                                            holdout_every=config.holdout_every)
    except (MadFormatError, PlyFormatError, ValueError, OSError) as err:
        print(f'{parser.prog}: error: {err}', file=sys.stderr)
        return 2
    psnr = 'n/a' if report.psnr is None else f'{report.psnr:.2f} dB'
    print(f'wrote {args.out}: {scene.n} Gaussians from {report.n_train_views} views of '
          f'{category.name} at {category.width}x{category.height}, {report.iters} steps on '
          f'{device} in {report.seconds:.1f} s, held-out PSNR {psnr} '
          f'({report.n_holdout_views} views), threshold {inspector.threshold:.3f}')
    return 0


def scene_meta(category, config, report, device):
    """Metadata written beside the scene (later stages merge their keys into it)."""
    return {'width': category.width, 'height': category.height, 'K': category.K,
            'camera_angle_x': category.camera_angle_x, 'category': category.name,
            'train': dict(report.as_dict(), device=device, sh_degree=config.sh_degree,
                          seed=config.seed, created=time.strftime('%Y-%m-%dT%H:%M:%S'))}


def _check_out(data, out):
    """Refuse a scene path inside the dataset folder or without the .ply suffix."""
    if out.suffix.lower() != '.ply':
        raise ValueError(f'{out}: the scene file must end in .ply')
    if data.is_dir() and out.resolve().is_relative_to(data.resolve()):
        raise ValueError(f'{out}: inside the dataset folder {data}; write the scene elsewhere')


if __name__ == '__main__':
    sys.exit(main())
