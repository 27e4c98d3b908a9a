#!/usr/bin/env python3
"""The whole product on a small synthetic object: data, scene, bag, node, replay, metrics.

Runs the offline tools one after another, as a user would: make_synthetic.py, train_scene.py
(GPU if one is found, else CPU), mad_to_rosbag.py, the `inspector` node, replay_eval.py.
Prints the metrics table with stage timings and writes a heatmap gallery. Steps whose output
exists already are skipped, so a second run only replays.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from igspad_ros.core.evaluation import markdown_table

OFFLINE = Path(__file__).resolve().parent


def main(argv=None):
    """Run the demo pipeline; return 0 when every step worked and no image was lost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, default=Path('demo_out'), help='work folder')
    parser.add_argument('--size', type=int, default=128, help='image size in px (128)')
    parser.add_argument('--n-test', type=int, default=40, help='test images (40)')
    parser.add_argument('--iters', type=int, default=1000, help='training steps on CPU (1000)')
    parser.add_argument('--steps', type=int, default=60, help='IGS steps per image (60)')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = args.out.resolve()
    data, scene = out / 'data' / 'brick', out / 'scene' / 'scene.ply'
    bag, result = out / 'bag', out / 'results.json'
    try:
        if not data.exists():
            _tool('make_synthetic.py', '--out', out / 'data', '--category', 'brick',
                  '--size', args.size, '--n-test', args.n_test, '--seed', 0)
        if not scene.exists():
            _tool('train_scene.py', '--data', data, '--out', scene, '--iters', args.iters,
                  '--size', args.size)
        if not bag.exists():
            _tool('mad_to_rosbag.py', '--data', data, '--out', bag)
        for old in (result, out / 'outputs'):
            _remove(old)
        with _inspector_node(scene, args.steps):
            _tool('replay_eval.py', '--bag', bag, '--json', result, '--gallery',
                  out / 'gallery', '--record', out / 'outputs', '--wait', 300)
    except subprocess.CalledProcessError as err:
        print(f'demo: error: {Path(err.cmd[1]).name} failed with status {err.returncode}',
              file=sys.stderr)
        return 1
    report = json.loads(result.read_text())
    print()
    print(markdown_table([report]), end='')
    timing = ', '.join(f'{k} {v:.2f} s' for k, v in report['timing'].items() if v is not None)
    print(f'median seconds per image by stage: {timing}')
    pose = report.get('pose') or {}
    if pose:
        print(f'pose: median rotation error {pose["rot_deg_median"]:.2f} deg, translation '
              f'{100 * pose["trans_rel_median"]:.2f} %, success (<2 deg) '
              f'{100 * pose["success_rate_2deg"]:.0f} %')
    print(f'demo finished in {time.perf_counter() - start:.0f} s: results {result}, gallery '
          f'{out / "gallery"}')
    return 0


class _inspector_node:
    """The `inspector` console script as a child process, stopped on exit (SIGINT)."""

    def __init__(self, scene, steps):
        self.cmd = [str(Path(sys.executable).with_name('inspector')), '--ros-args',
                    '-p', f'scene_path:={scene}', '-p', 'queue_mode:=all',
                    '-p', f'igs_steps:={steps}']

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd)
        return self.proc

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return False


def _tool(name, *args):
    cmd = [sys.executable, str(OFFLINE / name), *map(str, args)]
    print(f'$ {" ".join(cmd[1:])}', flush=True)
    subprocess.run(cmd, check=True)


def _remove(path):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


if __name__ == '__main__':
    # Keep the demo's DDS traffic on this machine and apart from other ROS graphs.
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', str(77))
    sys.exit(main())
