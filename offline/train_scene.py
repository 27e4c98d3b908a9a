#!/usr/bin/env python3
"""Train a 3D Gaussian scene from posed captures: scene.ply, its index and threshold.

--data is a MAD category, a nerfstudio / instant-ngp transforms.json capture or a COLMAP
folder (images/ + sparse/0/), detected from its files (--format forces one). Views are
undistorted once at load; their pinholes go into scene.meta.json, with the inspection
region (--roi; by default a box around the SfM points or Gaussians the cameras frame).

Example: offline/train_scene.py --data data/synthetic/brick --out scenes/brick/scene.ply
"""
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from igspad_ros.cli import ToolParser
from igspad_ros.core.inspector import prepare_scene_artifacts
from igspad_ros.core.roi import RegionOfInterest, estimate_roi
from igspad_ros.core.scene import PlyFormatError, write_scene_meta
from igspad_ros.core.train import TrainConfig, border_colour, plain_background, train_scene
from igspad_ros.data.capture import FORMATS, load_capture
from igspad_ros.data.mad import MadFormatError


def main(argv=None):
    """Parse arguments, train, write the scene and its metadata, print one summary line."""
    parser = ToolParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', required=True, type=Path,
                        help='MAD category, transforms.json capture or COLMAP folder')
    parser.add_argument('--format', choices=FORMATS, default=None,
                        help='read --data as this format (default: detected)')
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
    parser.add_argument('--background', default='auto',
                        help='colour behind the object: white, black, R,G,B in [0, 1], or auto '
                        '(MAD: white; a capture: the median colour of its image borders)')
    parser.add_argument('--roi', default='auto',
                        help='inspection region in the scene frame: xmin,ymin,zmin,xmax,ymax,'
                        'zmax, none (whole image), or auto (a box around the SfM points, else the '
                        'Gaussians, that the cameras frame)')
    parser.add_argument('--pose-opt', action='store_true',
                        help='refine every training pose with the scene (noisy SfM or robot '
                        'poses); the retrieval index and meta use the refined poses')
    parser.add_argument('--appearance', action='store_true',
                        help='learn a colour transform per training view (auto-exposure, white '
                        'balance); held-out views are colour-matched before the PSNR')
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
        if args.roi not in ('auto', 'none'):
            RegionOfInterest.parse(args.roi)     # a malformed box fails before training
        config = TrainConfig.for_device(device, seed=args.seed, pose_opt=args.pose_opt,
                                        appearance=args.appearance, **overrides)
        category = load_capture(args.data, size=config.size, load_test=False,
                                format=args.format)
        views = category.train
        config = replace(config, background=_background(args.background, category))
        if category.points is None and not plain_background(
                [v.image for v in views], [v.mask for v in views]):
            # no SfM points and a real background: seed Gaussians beyond the object too
            config = replace(config, init_background=0.3)
        with tqdm(total=config.iters, unit='step', disable=not sys.stderr.isatty()) as bar:
            scene, report = train_scene([v.image for v in views], [v.viewmat for v in views],
                                        np.stack([v.K for v in views]), config, device=device,
                                        progress=bar.update, masks=[v.mask for v in views],
                                        points=category.points,
                                        point_colors=category.point_colors)
        if report.viewmats is not None:
            for view, viewmat in zip(views, report.viewmats):
                view.viewmat = viewmat
        scene.save_ply(args.out)
        roi = _roi(args.roi, category, scene)
        meta = dict(scene_meta(category, config, report, device),
                    roi=None if roi is None else roi.as_list())
        write_scene_meta(args.out, meta, merge=False)
        # The node starts fast when the retrieval index and the threshold lie beside the scene.
        inspector = prepare_scene_artifacts(args.out, category, device=device,
                                            holdout_every=config.holdout_every)
    except (MadFormatError, PlyFormatError, ValueError, OSError) as err:
        print(f'{parser.prog}: error: {err}', file=sys.stderr)
        return 2
    psnr = 'n/a' if report.psnr is None else f'{report.psnr:.2f} dB'
    if report.pose_correction:
        c = report.pose_correction
        psnr += (f', poses moved by a median {c["rot_deg_median"]:.2f} deg (max '
                 f'{c["rot_deg_max"]:.2f}) and {100 * c["shift_median"]:.2f} % of the scene')
    skipped = f', {category.skipped} unregistered skipped' if category.skipped else ''
    print(f'wrote {args.out}: {scene.n} Gaussians from {report.n_train_views} views of '
          f'{category.name} ({category.format}{skipped}) at {category.width}x{category.height}, '
          f'{report.iters} steps on {device} in {report.seconds:.1f} s, held-out PSNR {psnr} '
          f'({report.n_holdout_views} views), threshold {inspector.threshold:.3f}')
    return 0


def scene_meta(category, config, report, device):
    """Metadata written beside the scene (later stages merge their keys into it).

    ``K``, ``width``, ``height`` are the capture's camera; ``views`` holds every training
    view's undistorted pinhole and size (in training order), ``undistorted`` what the
    reader undistorted from, ``background`` the colour the scene was fitted over.
    """
    views = category.train
    return {'width': category.width, 'height': category.height, 'K': category.K,
            'camera_angle_x': category.camera_angle_x, 'category': category.name,
            'format': category.format, 'background': list(config.background),
            'views': {'K': [np.asarray(v.K).tolist() for v in views],
                      'size': [[v.image.shape[1], v.image.shape[0]] for v in views]},
            'undistorted': category.undistorted,
            'train': dict(report.as_dict(), device=device, sh_degree=config.sh_degree,
                          seed=config.seed, skipped_views=category.skipped,
                          created=time.strftime('%Y-%m-%dT%H:%M:%S'))}


def _background(text, category):
    """Parse --background: a name, R,G,B, or auto (white for MAD, else the image borders)."""
    names = {'white': (1.0, 1.0, 1.0), 'black': (0.0, 0.0, 0.0)}
    if text in names:
        return names[text]
    if text == 'auto':
        if category.format == 'mad':
            return names['white']
        return border_colour([v.image for v in category.train],
                             [v.mask for v in category.train])
    try:
        colour = tuple(float(c) for c in text.split(','))
    except ValueError:
        colour = ()
    if len(colour) != 3 or not all(0.0 <= c <= 1.0 for c in colour):
        raise ValueError(f'--background {text!r}: use white, black, auto or R,G,B in [0, 1]')
    return colour


def _roi(text, category, scene):
    """Parse --roi: six numbers, none, or auto (estimated from the SfM points or Gaussians)."""
    if text == 'none':
        return None
    if text != 'auto':
        return RegionOfInterest.parse(text)
    views = category.train
    if category.points is not None and len(category.points):
        points, weights = category.points, None
    else:
        points = scene.means.detach().cpu().numpy()
        weights = torch.sigmoid(scene.opacity_logits.detach().cpu()).numpy()
    return estimate_roi(points, [v.viewmat for v in views], [v.K for v in views],
                        [(v.image.shape[1], v.image.shape[0]) for v in views], weights)


def _check_out(data, out):
    """Refuse a scene path inside the dataset folder or without the .ply suffix."""
    if out.suffix.lower() != '.ply':
        raise ValueError(f'{out}: the scene file must end in .ply')
    if data.is_dir() and out.resolve().is_relative_to(data.resolve()):
        raise ValueError(f'{out}: inside the dataset folder {data}; write the scene elsewhere')


if __name__ == '__main__':
    sys.exit(main())
