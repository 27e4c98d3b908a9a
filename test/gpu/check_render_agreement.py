#!/usr/bin/env python3
"""GPU check: gsplat's CUDA rasteriser and the tiled CPU rasteriser render the same.

Run on a CUDA machine (not collected by pytest: the CPU suite has no GPU):

    .venv/bin/python test/gpu/check_render_agreement.py [--scene SCENE.ply] [--size 128]

Renders one scene (the seeded reference scene, or ``--scene``) from two viewmats as a
batch with both backends, backpropagates the same weighted loss, and prints the max and
mean absolute differences of the images and alphas and the viewmat-gradient error.
Exit status 0 when they agree within the stated tolerances, 1 when not, 2 without CUDA.
"""
import argparse
import sys

import torch

from igspad_ros.core.cameras import intrinsics_from_fov, look_at
from igspad_ros.core.render import render
from igspad_ros.core.render.reference import random_scene
from igspad_ros.core.scene import GaussianScene

IMAGE_MAX_TOL = 1e-2    # single pixels may flip gsplat's 1/255 alpha cut-off in float32
IMAGE_MEAN_TOL = 1e-4
GRAD_REL_TOL = 1e-2


def run_backend(scene, viewmats, K, size, backend, weights):
    """Return (rgb, alpha, viewmat gradient) of a weighted loss for one backend."""
    vm = viewmats.clone().requires_grad_(True)
    out = render(scene, vm, K, size, size, backend=backend)
    (out.rgb * weights).mean().backward()
    return out.rgb.detach().cpu(), out.alpha.detach().cpu(), vm.grad.cpu()


def main():
    """Compare the backends and print the differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scene', default=None, help='scene PLY (default: seeded test scene)')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels (128)')
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print('check_render_agreement: needs a CUDA GPU (torch.cuda.is_available() is False)',
              file=sys.stderr)
        return 2
    scene = GaussianScene.load_ply(args.scene) if args.scene else random_scene(5000)
    K = torch.tensor(intrinsics_from_fov(0.6911, args.size, args.size), dtype=torch.float32)
    viewmats = torch.tensor([look_at((2.4, 1.6, 1.7)), look_at((-1.5, 2.8, 0.9))],
                            dtype=torch.float32)
    weights = torch.rand(2, args.size, args.size, 3, generator=torch.Generator().manual_seed(0))
    cpu = run_backend(scene, viewmats, K, args.size, 'cpu', weights)
    cuda = run_backend(scene.to('cuda'), viewmats.cuda(), K.cuda(), args.size, 'cuda',
                       weights.cuda())
    diff_rgb = (cpu[0] - cuda[0]).abs()
    diff_alpha = (cpu[1] - cuda[1]).abs()
    grad_rel = float((cpu[2] - cuda[2]).norm() / cuda[2].norm().clamp_min(1e-12))
    print(f'scene: {scene.n} Gaussians, 2 views at {args.size}x{args.size}')
    print(f'rgb   max abs diff {diff_rgb.max():.3e}  mean {diff_rgb.mean():.3e}')
    print(f'alpha max abs diff {diff_alpha.max():.3e}  mean {diff_alpha.mean():.3e}')
    print(f'viewmat grad max abs diff {(cpu[2] - cuda[2]).abs().max():.3e}  '
          f'relative {grad_rel:.3e}  (|grad| {cuda[2].norm():.3e})')
    ok = (diff_rgb.max() <= IMAGE_MAX_TOL and diff_rgb.mean() <= IMAGE_MEAN_TOL
          and diff_alpha.mean() <= IMAGE_MEAN_TOL and grad_rel <= GRAD_REL_TOL)
    print('AGREE' if ok else 'DISAGREE')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
