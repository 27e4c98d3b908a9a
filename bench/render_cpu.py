#!/usr/bin/env python3
"""Tiled CPU rasteriser vs the dense reference: forward + backward time, in one run.

One step = render + backward of an L1 loss to the viewmat (what one IGS pose step costs)
on the seeded reference scene seen by a MAD-like camera (fov 0.6911 rad, distance 3.5).
Also times the tiled step with scene gradients (a training step). Prints one row per
case and the tiled/dense speed-up:

    .venv/bin/python bench/render_cpu.py [--threads 1] [--repeats 9]
"""
import argparse
import statistics
import time

import torch

from igspad_ros.core.cameras import intrinsics_from_fov, look_at
from igspad_ros.core.render import render
from igspad_ros.core.render.reference import random_scene, rasterize_dense

CASES = ((64, 2000), (96, 5000))


def step_time(scene, viewmat, K, size, dense, repeats, scene_grad=False):
    """Median (wall, process CPU) seconds of one forward + backward.

    The gradient goes to the viewmat, and to the scene when asked. On a shared machine
    the process CPU time is the better estimate of the wall time on an idle one.
    """
    for tensor in scene.tensors().values():
        tensor.requires_grad_(scene_grad)
    times, cpu_times = [], []
    for _ in range(repeats):
        vm = viewmat.clone().requires_grad_(True)
        start, cpu_start = time.perf_counter(), time.process_time()
        if dense:
            rgb = rasterize_dense(scene, vm[None], K[None], size, size, torch.ones(3))[0][0]
        else:
            rgb = render(scene, vm, K, size, size).rgb
        (rgb - 0.5).abs().mean().backward()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return statistics.median(times), statistics.median(cpu_times)


def main():
    """Time both rasterisers on both cases and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (1)')
    parser.add_argument('--repeats', type=int, default=9, help='timed steps per case (9)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    viewmat = torch.tensor(look_at((2.4, 1.6, 1.7)), dtype=torch.float32)
    print(f'threads={args.threads} repeats={args.repeats} (dense: {max(2, args.repeats // 3)})')
    for size, n in CASES:
        scene = random_scene(n)
        K = torch.tensor(intrinsics_from_fov(0.6911, size, size), dtype=torch.float32)
        render(scene, viewmat, K, size, size)     # warm-up
        tiled = step_time(scene, viewmat, K, size, False, args.repeats)
        tiled_train = step_time(scene, viewmat, K, size, False, args.repeats, scene_grad=True)
        dense = step_time(scene, viewmat, K, size, True, max(2, args.repeats // 3))
        print(f'{size} px / {n} Gaussians: tiled {tiled[0] * 1e3:6.1f} ms (cpu '
              f'{tiled[1] * 1e3:6.1f})  dense {dense[0] * 1e3:8.1f} ms (cpu {dense[1] * 1e3:8.1f})'
              f'  speed-up {dense[0] / tiled[0]:5.1f}x (cpu {dense[1] / tiled[1]:5.1f}x)  '
              f'tiled with scene gradients {tiled_train[0] * 1e3:.1f} ms '
              f'(cpu {tiled_train[1] * 1e3:.1f})')


if __name__ == '__main__':
    main()
