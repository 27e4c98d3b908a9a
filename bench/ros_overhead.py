#!/usr/bin/env python3
"""ROS overhead of the inspector node per image, beside its inference time, in one run.

Runs the real node in-process (rclpy + DDS, local only) with a probe node that publishes
the test images of a MAD-format category one at a time and waits for each verdict. Per
image it records the end-to-end time (probe publish -> verdict received) and the node's own
``inference_ms`` (``Inspector.inspect``); their difference is the ROS overhead: decoding the
input, encoding and publishing the five outputs, and DDS transport. Decode and output
encoding are also timed alone on the same arrays, so the table shows where the overhead
goes. It also times the cold start-up to active: the imports (torch, rclpy, the models'
packages), then the lifecycle node's configure (scene, index and models loaded, one warm-up
inference) and activate. Prints one row per image and ONE summary line:

    .venv/bin/python bench/ros_overhead.py --scene SCENE.ply --data CATDIR [--n 8]
"""
import time

STARTED = time.perf_counter()     # before any import: the start-up is measured cold

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

import numpy as np  # noqa: E402


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scene', required=True, help='trained scene PLY (index/meta beside)')
    parser.add_argument('--data', required=True, help='MAD-format category folder')
    parser.add_argument('--n', type=int, default=8, help='test images to send (default 8)')
    parser.add_argument('--size', type=int, default=None,
                        help='longest image side sent (default: the scene\'s)')
    parser.add_argument('--igs-steps', type=int, default=100, help='IGS steps (default 100)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda', 'auto'))
    parser.add_argument('--domain', type=int, default=90 + os.getpid() % 10,
                        help='ROS_DOMAIN_ID for the run (traffic stays on localhost)')
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error('--n must be at least 1')
    return args


def _verdict_values(msg):
    return {kv.key: float(kv.value) for kv in msg.status[0].values}


def _time_conversions(conversions, image, values, header, repeats=5):
    """Median ms of decoding the input and of encoding the five outputs, alone."""
    amap = values['amap']
    msg = conversions.image_msg(image, 'rgb8', header)
    decode, encode = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        conversions.image_from_msg(msg, 8192)
        t1 = time.perf_counter()
        conversions.image_msg(amap, '32FC1', header)
        conversions.image_msg(conversions.overlay(image, amap, 1.0), 'rgb8', header)
        conversions.image_msg(image, 'rgb8', header)
        conversions.pose_msg(np.eye(4), header)
        conversions.diagnostic_array(header, 'verdict', values['level'], 'normal',
                                     values['verdict'])
        t2 = time.perf_counter()
        decode.append(t1 - t0)
        encode.append(t2 - t1)
    return 1000 * statistics.median(decode), 1000 * statistics.median(encode)


def main(argv=None):
    """Run the benchmark; exit status 2 for a user error."""
    args = _parse(argv)
    os.environ['ROS_DOMAIN_ID'] = str(args.domain)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from igspad_ros.core.scene import read_scene_meta
    from igspad_ros.data.capture import CaptureFormatError, load_capture
    from igspad_ros.ros import conversions
    from igspad_ros.ros.inspector_node import InspectorNode
    imports_s = time.perf_counter() - STARTED

    try:
        meta = read_scene_meta(args.scene)
        size = args.size or max(meta['width'], meta['height'])
        tests = load_capture(args.data, size=size, load_train=False).test[:args.n]
    except (ValueError, OSError, CaptureFormatError) as err:
        print(f'ros_overhead: {err}', file=sys.stderr)
        return 2
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
    context = rclpy.context.Context()
    rclpy.init(context=context)
    constructed = time.perf_counter()
    try:   # autostart: configure (load + warm-up inference) and activate
        node = InspectorNode(context=context, parameter_overrides=[
            Parameter('scene_path', value=str(args.scene)), Parameter('device', value=args.device),
            Parameter('igs_steps', value=args.igs_steps), Parameter('queue_mode', value='all')])
        active = time.perf_counter()
    except (ValueError, OSError, rclpy.exceptions.ParameterException) as err:
        print(f'ros_overhead: {err}', file=sys.stderr)
        rclpy.shutdown(context=context)
        return 2
    probe = rclpy.create_node('ros_overhead_probe', context=context)
    arrived = {}
    cond = threading.Condition()

    def on_verdict(msg):
        with cond:
            arrived[msg.header.stamp.sec] = (time.perf_counter(), msg)
            cond.notify_all()

    publisher = probe.create_publisher(Image, '/image', qos)
    probe.create_subscription(DiagnosticArray, '/inspector/verdict', on_verdict, qos)
    for name in ('anomaly_map', 'overlay', 'rendered'):   # outputs pay for a real subscriber
        probe.create_subscription(Image, f'/inspector/{name}', lambda msg: None, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(probe)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    rows = []
    try:
        while publisher.get_subscription_count() == 0:
            time.sleep(0.05)
        print(f'{"image":<22} {"size":>9} {"e2e ms":>9} {"infer ms":>9} {"ROS ms":>8} '
              f'{"ROS %":>7}')
        for k, test in enumerate(tests, start=1):
            header = Header(frame_id='camera_optical_frame')
            header.stamp.sec = k
            msg = conversions.image_msg(test.image, 'rgb8', header)
            sent = time.perf_counter()
            publisher.publish(msg)
            with cond:
                if not cond.wait_for(lambda: k in arrived, 600):
                    print(f'ros_overhead: no verdict for image {k} within 600 s',
                          file=sys.stderr)
                    return 1
                received, verdict = arrived[k]
            values = _verdict_values(verdict)
            e2e = 1000 * (received - sent)
            overhead = e2e - values['inference_ms']
            rows.append((e2e, values['inference_ms'], overhead, values))
            h, w = test.image.shape[:2]
            print(f'{test.rel_path:<22} {f"{w}x{h}":>9} {e2e:9.1f} {values["inference_ms"]:9.1f}'
                  f' {overhead:8.2f} {100 * overhead / values["inference_ms"]:6.2f}%')
        amap = np.zeros(tests[0].image.shape[:2], np.float32)
        sample = {'amap': amap, 'verdict': rows[0][3], 'level': DiagnosticStatus.OK}
        decode_ms, encode_ms = _time_conversions(conversions, tests[0].image, sample, header)
    finally:
        executor.shutdown()
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=context)
    e2e, infer, overhead = (statistics.median(r[i] for r in rows) for i in range(3))
    h, w = tests[0].image.shape[:2]
    configure_s = active - constructed
    print(f'{w}x{h} px, {len(rows)} images, {args.device}, {args.igs_steps} IGS steps: start-up '
          f'to active {imports_s + configure_s:.1f} s cold (imports {imports_s:.1f} s, load '
          f'{configure_s - node.warm_up_s:.1f} s, warm-up inference {node.warm_up_s:.1f} s); '
          f'latency {e2e:.1f} ms/image, inference {infer:.1f} ms, ROS overhead '
          f'{overhead:.2f} ms (decode {decode_ms:.2f} + encode outputs {encode_ms:.2f} + '
          f'publish/transport) = {100 * overhead / infer:.2f} % of inference (medians)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
