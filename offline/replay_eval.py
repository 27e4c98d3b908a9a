#!/usr/bin/env python3
"""Replay a MAD bag into the running inspector node and evaluate its answers.

Writes the same JSON as offline/evaluate.py (same metrics code). Example, with the node running:
offline/replay_eval.py --bag bags/brick --json results/brick_ros.json --record bags/brick_out
"""
import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from igspad_ros.cli import ToolParser
from igspad_ros.data.bags import BagExistsError, BagFormatError, bag_category, read_mad_bag
from igspad_ros.ros.replayer import (EVALUATED_OUTPUTS, OUTPUT_TYPES, ReplayError, replay,
                                     replay_report, write_replay_gallery)


def _positive(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f'must be > 0, got {text}')
    return value


def main(argv=None):
    """Parse arguments, replay, write the JSON and print one summary line."""
    parser = ToolParser(description=__doc__.splitlines()[0])
    parser.add_argument('--bag', required=True, type=Path, help='MAD bag (mad_to_rosbag.py)')
    parser.add_argument('--json', required=True, type=Path, help='output JSON')
    parser.add_argument('--rate', type=_positive, default=None,
                        help='publish at this rate in Hz (use with the node\'s queue_mode:=all)'
                        '; default: lossless, one image at a time')
    parser.add_argument('--record', type=Path, default=None,
                        help='new bag folder that receives every output of the node')
    parser.add_argument('--gallery', type=Path, default=None,
                        help='folder for one PNG per image: test | rendered | overlay | truth')
    parser.add_argument('--timeout', type=_positive, default=300.0,
                        help='seconds to wait for one image\'s outputs before it counts as '
                        'lost (300)')
    parser.add_argument('--wait', type=_positive, default=120.0,
                        help='seconds to wait for the node to come up (120)')
    parser.add_argument('--node', default='/inspector',
                        help='the inspector\'s node name; outputs are NODE/anomaly_map, ... '
                        '(/inspector)')
    parser.add_argument('--image-topic', default='/image', help='the node\'s image input')
    parser.add_argument('--camera-info-topic', default='/camera_info',
                        help='the node\'s camera info input')
    parser.add_argument('--no-camera-info', action='store_true',
                        help='do not publish camera info (the node uses its scene\'s K)')
    parser.add_argument('--await', dest='await_outputs', default=','.join(OUTPUT_TYPES),
                        help='comma-separated outputs that finish an image (all five; '
                        'anomaly_map and verdict at least)')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    await_outputs = tuple(x.strip() for x in args.await_outputs.split(',') if x.strip())
    unknown = sorted(set(await_outputs) - set(OUTPUT_TYPES))
    if unknown or not set(EVALUATED_OUTPUTS) <= set(await_outputs):
        print(f'{parser.prog}: error: --await: outputs are {", ".join(OUTPUT_TYPES)} and must '
              f'include {" and ".join(EVALUATED_OUTPUTS)}; got {args.await_outputs!r}',
              file=sys.stderr)
        return 2
    try:
        if args.record is not None and args.record.exists():
            raise BagExistsError(f'{args.record}: exists already; choose a new bag folder')
        records = read_mad_bag(args.bag)
        with tqdm(total=len(records), unit='img', disable=not sys.stderr.isatty()) as bar:
            outcome = replay(records, inspector=args.node, image_topic=args.image_topic,
                             camera_info_topic=args.camera_info_topic, rate=args.rate,
                             timeout=args.timeout, wait=args.wait,
                             camera_info=not args.no_camera_info, record=args.record,
                             await_outputs=await_outputs, progress=bar.update)
        report = replay_report(bag_category(args.bag), records, outcome)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        if args.gallery is not None:
            write_replay_gallery(args.gallery, records, outcome)
    except (BagFormatError, BagExistsError, ReplayError, ValueError, OSError) as err:
        print(f'{parser.prog}: error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'{parser.prog}: interrupted; no JSON written', file=sys.stderr)
        return 130
    lost = report['replay']['n_lost']
    print(f'replayed {len(records)} images of {report["category"]} ({lost} lost) in '
          f'{time.perf_counter() - start:.1f} s: pixel AUROC {_fmt(report["pixel_auroc"])}, '
          f'image AUROC {_fmt(report["image_auroc"])}, pixel AP {_fmt(report["pixel_ap"])}, '
          f'AUPRO {_fmt(report["aupro"])} -> {args.json}')
    return 0 if lost == 0 else 1


def _fmt(value):
    return 'n/a' if value is None else f'{value:.4f}'


if __name__ == '__main__':
    sys.exit(main())
