#!/usr/bin/env python3
"""Turn a robot's rosbag2 (images, CameraInfo, TF or poses) into a transforms.json capture.

Poses come from --tf-parent (/tf + /tf_static chained from that frame to the images'
header.frame_id, an optical frame) or from --pose-topic (geometry_msgs/PoseStamped: the
camera optical frame's pose in the world, i.e. OpenCV camera-to-world), interpolated at
each image stamp. Keyframes: the camera moved --min-translation metres or turned
--min-rotation-deg degrees since the last kept frame, and the frame is not blurred
(variance of the Laplacian below --blur-threshold times the bag's median). Conventions
are in igspad_ros/data/bag_capture.py.

Example: offline/bag_to_capture.py --bag bags/arm_scan --out captures/part \
    --image-topic /camera/color/image_raw --tf-parent base_link
"""
import sys
import time
from pathlib import Path

from tqdm import tqdm

from igspad_ros.cli import ToolParser
from igspad_ros.data.bag_capture import (DEFAULT_BLUR_THRESHOLD, DEFAULT_MIN_ROTATION_DEG,
                                         DEFAULT_MIN_TRANSLATION, BagCaptureError,
                                         bag_to_capture)


def main(argv=None):
    """Parse arguments, write the capture and print one summary line."""
    parser = ToolParser(description=__doc__.splitlines()[0])
    parser.add_argument('--bag', required=True, type=Path, help='rosbag2 folder (mcap or sqlite3)')
    parser.add_argument('--out', required=True, type=Path,
                        help='new or empty capture folder (never inside --bag)')
    parser.add_argument('--image-topic', required=True,
                        help='sensor_msgs/Image or sensor_msgs/CompressedImage topic')
    parser.add_argument('--camera-info-topic', default=None,
                        help='sensor_msgs/CameraInfo topic (default: the bag\'s only one)')
    poses = parser.add_mutually_exclusive_group(required=True)
    poses.add_argument('--pose-topic', default=None,
                       help='geometry_msgs/PoseStamped topic: camera optical frame in the world')
    poses.add_argument('--tf-parent', default=None,
                       help='world frame of /tf + /tf_static; poses of the images\' frames in it')
    parser.add_argument('--min-translation', type=float, default=DEFAULT_MIN_TRANSLATION,
                        help=f'metres moved to keep a frame ({DEFAULT_MIN_TRANSLATION})')
    parser.add_argument('--min-rotation-deg', type=float, default=DEFAULT_MIN_ROTATION_DEG,
                        help=f'degrees turned to keep a frame ({DEFAULT_MIN_ROTATION_DEG})')
    parser.add_argument('--blur-threshold', type=float, default=DEFAULT_BLUR_THRESHOLD,
                        help='drop frames whose Laplacian variance is below this fraction of '
                             f'the median ({DEFAULT_BLUR_THRESHOLD}; 0 keeps all)')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        with tqdm(unit='msg', disable=not sys.stderr.isatty()) as bar:
            def tick(total):
                bar.total = total
                bar.update(1)
            report = bag_to_capture(args.bag, args.out, args.image_topic,
                                    camera_info_topic=args.camera_info_topic,
                                    pose_topic=args.pose_topic, tf_parent=args.tf_parent,
                                    min_translation=args.min_translation,
                                    min_rotation_deg=args.min_rotation_deg,
                                    blur_threshold=args.blur_threshold, progress=tick)
    except (BagCaptureError, OSError) as err:
        print(f'{parser.prog}: error: {err}', file=sys.stderr)
        return 2
    source = report.camera_info_topic
    if report.camera_info_picked:
        source += ' (the bag\'s only CameraInfo topic)'
    if report.per_frame_intrinsics:
        source += ', per frame'
    print(f'wrote {report.out}: {report.n_kept} of {report.n_read} images kept '
          f'({report.n_too_close} too close, {report.n_blurred} blurred, {report.n_no_pose} '
          f'without a pose), {report.camera_model} intrinsics from {source} in '
          f'{time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
