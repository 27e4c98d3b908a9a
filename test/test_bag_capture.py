"""A robot bag -> transforms.json capture: TF chains, interpolation, keyframes, the tool.

The bag is a small arm scan written with rosbags: ``world -> base_link`` and
``tool0 -> camera_optical_frame`` on /tf_static, ``base_link -> tool0`` on /tf at 50 Hz,
images at other stamps so every pose is interpolated. The arm turns about base_link's z at a
constant rate while moving at a constant velocity, and the camera sits on that axis, so
linear translation and slerp are exact for the TF edge and for the camera's own pose.
"""
import json

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Writer
from scipy.spatial.transform import Rotation

from igspad_ros.core import cameras, undistort
from igspad_ros.data import bags
from igspad_ros.data.bag_capture import BagCaptureError, bag_to_capture
from igspad_ros.data.capture import load_capture
from igspad_ros.data.tf_tree import TfChainError, TfTree
from igspad_ros.data.transforms_writer import NerfstudioCamera, lens_keys, transforms_meta

T0 = bags.START_NS
MS = 10**6
TF_STAMPS = [T0 + 20 * MS * k for k in range(1, 51)]            # 20 ms .. 1 s
K_ROS = np.array([[50.5, 0.0, 19.25], [0.0, 49.0, 14.75], [0.0, 0.0, 1.0]])
D = [-0.1, 0.01, 0.001, -0.002, 0.003]                          # plumb_bob k1 k2 p1 p2 k3
W, H = 40, 30
OMEGA = 0.5                        # rad/s about base_link z
VELOCITY = np.array([0.05, 0.02, 0.0])
# Sharp frames every 100 ms (2.9 degrees apart), 5 ms off the TF grid; then the odd ones.
SHARP = [T0 + (105 + 100 * k) * MS for k in range(8)]
CLOSE = SHARP[2] + 10 * MS         # 0.3 degrees and 0.5 mm after a kept frame
BLURRED = SHARP[4] + 50 * MS       # moved enough, but a blurred copy
EARLY, LATE = T0 + 5 * MS, T0 + 1005 * MS   # outside /tf's samples: no pose
ENCODINGS = ['rgb8', 'bgr8', 'mono8', 'rgb16', 'rgb8', 'rgb8', 'rgb8', 'rgb8']


def _rigid(rotation, translation):
    T = np.eye(4)
    T[:3, :3] = rotation.as_matrix()
    T[:3, 3] = translation
    return T


WORLD_BASE = _rigid(Rotation.from_euler('zyx', [30, 5, -3], degrees=True), [0.5, -0.2, 0.1])
TOOL_CAMERA = _rigid(Rotation.from_euler('zx', [90, 10], degrees=True), [0.0, 0.0, 0.05])
BASE_TABLE = _rigid(Rotation.from_euler('z', 15, degrees=True), [0.2, 0.3, -0.4])
TOOL_DOWN = Rotation.from_euler('x', 180, degrees=True)   # tool z points down base z


def base_tool(stamp):
    """The true base_link -> tool0 at a stamp (any, not only TF's)."""
    s = (stamp - T0) / 1e9
    return _rigid(Rotation.from_euler('z', 0.2 + OMEGA * s) * TOOL_DOWN,
                  np.array([0.3, 0.1, 0.4]) + VELOCITY * s)


def world_camera(stamp):
    """The true OpenCV camera-to-world at a stamp."""
    return WORLD_BASE @ base_tool(stamp) @ TOOL_CAMERA


def _textured(seed, encoding):
    rng = np.random.default_rng(seed)
    if encoding == 'mono8':
        return rng.integers(0, 256, (H, W), dtype=np.uint8)
    if encoding.endswith('16'):
        return rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _images():
    """{stamp: (RGB or grey image as recorded, encoding)} of the bag."""
    images = {s: (_textured(k, e), e) for k, (s, e) in enumerate(zip(SHARP, ENCODINGS))}
    images[CLOSE] = (_textured(20, 'rgb8'), 'rgb8')
    images[BLURRED] = (cv2.GaussianBlur(_textured(21, 'rgb8'), (0, 0), 2.0), 'rgb8')
    images[EARLY] = (_textured(22, 'rgb8'), 'rgb8')
    images[LATE] = (_textured(23, 'rgb8'), 'rgb8')
    return images


def _transform(stamp, parent, child, T):
    types = bags.typestore().types
    t, q = cameras.rigid_to_quaternion(T)
    return types['geometry_msgs/msg/TransformStamped'](
        bags.header(stamp, parent), child, types['geometry_msgs/msg/Transform'](
            types['geometry_msgs/msg/Vector3'](*t),
            types['geometry_msgs/msg/Quaternion'](*q)))


def write_bag(path, storage='mcap', infos=None, extra_static=()):
    """Write the arm scan; ``infos`` maps an image stamp to its CameraInfo K (ROS)."""
    store = bags.typestore()
    tf_type = 'tf2_msgs/msg/TFMessage'
    with Writer(path, version=9, storage_plugin=bags.STORAGES[storage]) as writer:
        conns = {topic: writer.add_connection(topic, kind, typestore=store) for topic, kind in [
            ('/camera/image_raw', bags.IMAGE_TYPE), ('/camera/camera_info', bags.CAMERA_INFO_TYPE),
            ('/camera/pose', bags.POSE_TYPE), ('/tf', tf_type), ('/tf_static', tf_type)]}
        messages = []
        static = [_transform(T0, 'world', 'base_link', WORLD_BASE),
                  _transform(T0, 'tool0', 'camera_optical_frame', TOOL_CAMERA),
                  _transform(T0, 'base_link', 'table', BASE_TABLE), *extra_static]
        messages.append((T0, '/tf_static', store.types[tf_type](static)))
        for stamp in TF_STAMPS:
            messages.append((stamp, '/tf', store.types[tf_type](
                [_transform(stamp, 'base_link', 'tool0', base_tool(stamp))])))
            messages.append((stamp, '/camera/pose',
                             bags.pose_message(world_camera(stamp), stamp, 'world')))
        for stamp, (image, encoding) in _images().items():
            K = (infos or {}).get(stamp, K_ROS)
            info = bags.camera_info_message(cameras.k_from_ros(K), W, H, stamp,
                                            distortion=undistort.Distortion('radtan', D))
            messages.append((stamp, '/camera/image_raw', bags.image_message(image, encoding,
                                                                            stamp)))
            messages.append((stamp, '/camera/camera_info', info))
        for stamp, topic, msg in sorted(messages, key=lambda m: m[0]):
            writer.write(conns[topic], stamp, store.serialize_cdr(msg, conns[topic].msgtype))
    return path


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    """Path of the arm scan bag (mcap)."""
    return write_bag(tmp_path_factory.mktemp('bags') / 'scan')


KEPT = SHARP                        # every sharp frame; the odd four are dropped


def _load(out):
    return json.loads((out / 'transforms.json').read_text())


def _viewmats(meta):
    return [cameras.blender_c2w_to_viewmat(f['transform_matrix']) for f in meta['frames']]


def test_tf_tree_chains_either_direction_and_refuses_extrapolation():
    tree = TfTree()
    A = _rigid(Rotation.from_euler('x', 20, degrees=True), [1.0, 0.0, 0.0])
    tree.add('/world', 'a', 0, A, static=True)
    tree.add('a', 'b', 10, np.eye(4), static=False)
    tree.add('a', 'b', 20, _rigid(Rotation.identity(), [0.0, 2.0, 0.0]), static=False)
    tree.add('c', 'world', 0, A, static=True)
    np.testing.assert_allclose(tree.lookup('world', 'b', 15)[:3, 3], A[:3, :3] @ [0, 1, 0] +
                               A[:3, 3])
    np.testing.assert_allclose(tree.lookup('b', 'world', 15),
                               np.linalg.inv(tree.lookup('world', 'b', 15)), atol=1e-12)
    np.testing.assert_allclose(tree.lookup('c', 'b', 20), A @ A @ tree.lookup('a', 'b', 20))
    np.testing.assert_array_equal(tree.lookup('b', 'b', 99), np.eye(4))
    assert tree.lookup('world', 'b', 9) is None and tree.lookup('world', 'b', 21) is None
    assert tree.frames == ['a', 'b', 'c', 'world']
    tree.add('map', 'odom', 0, np.eye(4), static=True)
    with pytest.raises(TfChainError, match="'world' to 'odom'.*separate trees"):
        tree.lookup('world', 'odom', 0)
    with pytest.raises(TfChainError, match="frame 'nowhere' is in neither"):
        tree.lookup('nowhere', 'b', 15)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_tool_writes_interpolated_tf_poses_and_exact_intrinsics(storage, tmp_path, capsys,
                                                                load_script):
    scan = write_bag(tmp_path / 'scan', storage)
    out = tmp_path / 'capture'
    tool = load_script('offline/bag_to_capture.py')
    assert tool.main(['--bag', str(scan), '--out', str(out), '--image-topic',
                      '/camera/image_raw', '--tf-parent', 'world']) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1
    assert summary[0].startswith(
        f'wrote {out}: 8 of 12 images kept (1 too close, 1 blurred, 2 without a pose), OPENCV '
        f'intrinsics from /camera/camera_info (the bag\'s only CameraInfo topic) in ')
    meta = _load(out)
    # transforms.json's cx, cy are pixel-edge: CameraInfo's (19.25, 14.75) + 0.5
    assert {k: v for k, v in meta.items() if k != 'frames'} == {
        'camera_model': 'OPENCV', 'fl_x': 50.5, 'fl_y': 49.0, 'cx': 19.75, 'cy': 15.25,
        'w': W, 'h': H, 'k1': D[0], 'k2': D[1], 'p1': D[2], 'p2': D[3], 'k3': D[4]}
    assert [f['stamp_ns'] for f in meta['frames']] == KEPT
    assert [f['file_path'] for f in meta['frames']] == [f'images/frame_{n:05d}.png'
                                                        for n in range(8)]
    assert all((s - T0) % (20 * MS) for s in KEPT)     # every pose is interpolated
    for viewmat, stamp in zip(_viewmats(meta), KEPT):
        np.testing.assert_allclose(viewmat, np.linalg.inv(world_camera(stamp)), atol=1e-6)
    images = _images()
    for frame in meta['frames']:    # the PNGs are the images as recorded, in their own depth
        image, _ = images[frame['stamp_ns']]
        png = cv2.imread(str(out / frame['file_path']), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(png, image if image.ndim == 2 else image[:, :, ::-1])
    written = sorted(p.name for p in (out / 'images').iterdir())
    assert written == [f'frame_{n:05d}.png' for n in range(8)]
    # the capture reader loads the tool's output as the bag's camera and poses
    cap = load_capture(out)
    assert cap.format == 'transforms' and len(cap.train) == 8
    np.testing.assert_array_equal(cap.K, cameras.k_from_ros(K_ROS))
    for view, stamp in zip(cap.train, KEPT):
        np.testing.assert_array_equal(view.K, cameras.k_from_ros(K_ROS))
        np.testing.assert_allclose(view.viewmat, np.linalg.inv(world_camera(stamp)), atol=1e-6)


def test_pose_topic_gives_the_same_capture(bag, tmp_path):
    by_tf = bag_to_capture(bag, tmp_path / 'tf', '/camera/image_raw', tf_parent='world')
    by_pose = bag_to_capture(bag, tmp_path / 'pose', '/camera/image_raw',
                             camera_info_topic='/camera/camera_info', pose_topic='/camera/pose')
    counts = [(r.n_read, r.n_kept, r.n_too_close, r.n_blurred, r.n_no_pose)
              for r in (by_tf, by_pose)]
    assert counts == [(12, 8, 1, 1, 2)] * 2
    assert by_tf.camera_info_picked and not by_pose.camera_info_picked
    tf_meta, pose_meta = _load(tmp_path / 'tf'), _load(tmp_path / 'pose')
    assert [f['stamp_ns'] for f in pose_meta['frames']] == KEPT
    for a, b in zip(_viewmats(tf_meta), _viewmats(pose_meta)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_tf_chain_walks_edges_backwards(bag, tmp_path):
    """From ``table`` (a child of base_link) the chain climbs an edge against its direction."""
    bag_to_capture(bag, tmp_path / 'c', '/camera/image_raw', tf_parent='table')
    for viewmat, stamp in zip(_viewmats(_load(tmp_path / 'c')), KEPT):
        table_camera = np.linalg.inv(BASE_TABLE) @ base_tool(stamp) @ TOOL_CAMERA
        np.testing.assert_allclose(viewmat, np.linalg.inv(table_camera), atol=1e-6)


def test_zero_thresholds_keep_close_and_blurred_frames(bag, tmp_path):
    report = bag_to_capture(bag, tmp_path / 'c', '/camera/image_raw', tf_parent='world',
                            min_translation=0.0, min_rotation_deg=0.0, blur_threshold=0.0)
    assert (report.n_kept, report.n_too_close, report.n_blurred, report.n_no_pose) == (10, 0, 0,
                                                                                       2)
    stamps = [f['stamp_ns'] for f in _load(tmp_path / 'c')['frames']]
    assert stamps == sorted(SHARP + [CLOSE, BLURRED])
    # a large translation threshold alone still keeps frames that turned 2.9 degrees
    report = bag_to_capture(bag, tmp_path / 'd', '/camera/image_raw', tf_parent='world',
                            min_translation=1.0, min_rotation_deg=2.0)
    assert (report.n_kept, report.n_too_close) == (8, 1)


def test_changing_camera_info_gives_per_frame_intrinsics(tmp_path):
    zoomed = K_ROS * [[2.0], [2.0], [1.0]]
    scan = write_bag(tmp_path / 'scan', infos={s: zoomed for s in SHARP[4:]})
    report = bag_to_capture(scan, tmp_path / 'c', '/camera/image_raw', tf_parent='world')
    assert report.per_frame_intrinsics and report.camera_model == 'OPENCV'
    meta = _load(tmp_path / 'c')
    assert 'fl_x' not in meta and meta['camera_model'] == 'OPENCV'
    assert [f['fl_x'] for f in meta['frames']] == [50.5] * 4 + [101.0] * 4
    assert [f['cx'] for f in meta['frames']] == [19.75] * 4 + [39.0] * 4
    assert all(f['k1'] == D[0] and f['w'] == W for f in meta['frames'])


def _error(tool, capsys, argv):
    assert tool.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and not captured.out, captured
    return err[0]


def test_tool_user_errors_exit_2_with_one_line(bag, tmp_path, capsys, load_script):
    tool = load_script('offline/bag_to_capture.py')
    base = ['--bag', str(bag), '--out', str(tmp_path / 'c'), '--image-topic',
            '/camera/image_raw']
    assert 'no topic /nope' in _error(tool, capsys, base[:5] + ['/nope', '--tf-parent', 'world'])
    assert ('/camera/camera_info has type sensor_msgs/msg/CameraInfo, expected'
            in _error(tool, capsys, base[:5] + ['/camera/camera_info', '--tf-parent', 'world']))
    assert 'no topic /nope' in _error(tool, capsys, base + ['--pose-topic', '/nope'])
    line = _error(tool, capsys, base + ['--tf-parent', 'map'])
    assert "'map' to 'camera_optical_frame'" in line and "'map' is in neither" in line
    assert 'no such bag folder' in _error(tool, capsys, ['--bag', str(tmp_path / 'absent')]
                                          + base[2:] + ['--tf-parent', 'world'])
    assert 'inside the bag folder' in _error(
        tool, capsys, base[:2] + ['--out', str(bag / 'c')] + base[4:] + ['--tf-parent', 'world'])
    (tmp_path / 'c').mkdir()
    (tmp_path / 'c' / 'x').write_text('')
    assert 'not an empty folder' in _error(tool, capsys, base + ['--tf-parent', 'world'])
    with pytest.raises(SystemExit) as info:     # argparse: one line, status 2
        tool.main(base)
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().endswith('one of the arguments --pose-topic '
                                                    '--tf-parent is required')
    assert not (bag / 'c').exists()


def test_disconnected_tf_trees_name_both_frames(tmp_path, capsys, load_script):
    scan = write_bag(tmp_path / 'scan', extra_static=[_transform(T0, 'map', 'odom', np.eye(4))])
    tool = load_script('offline/bag_to_capture.py')
    line = _error(tool, capsys, ['--bag', str(scan), '--out', str(tmp_path / 'c'),
                                 '--image-topic', '/camera/image_raw', '--tf-parent', 'map'])
    assert "no TF chain from 'map' to 'camera_optical_frame'" in line
    assert 'separate trees' in line
    assert not (tmp_path / 'c').exists()


def test_rational_polynomial_with_k4_is_refused(tmp_path):
    scan = tmp_path / 'scan'
    store = bags.typestore()
    with Writer(scan, version=9) as writer:
        image = writer.add_connection('/image', bags.IMAGE_TYPE, typestore=store)
        info = writer.add_connection('/info', bags.CAMERA_INFO_TYPE, typestore=store)
        pose = writer.add_connection('/pose', bags.POSE_TYPE, typestore=store)
        lens = undistort.Distortion('rational', [0.1, 0, 0, 0, 0, 0.2, 0, 0])
        msg = bags.camera_info_message(cameras.k_from_ros(K_ROS), W, H, T0, distortion=lens)
        writer.write(info, T0, store.serialize_cdr(msg, bags.CAMERA_INFO_TYPE))
        writer.write(pose, T0, store.serialize_cdr(bags.pose_message(np.eye(4), T0),
                                                   bags.POSE_TYPE))
        writer.write(image, T0, store.serialize_cdr(
            bags.image_message(_textured(0, 'rgb8'), 'rgb8', T0), bags.IMAGE_TYPE))
    with pytest.raises(BagCaptureError, match='rational_polynomial with nonzero k4'):
        bag_to_capture(scan, tmp_path / 'c', '/image', pose_topic='/pose')


def test_compressed_images_are_decoded(tmp_path):
    """PNG CompressedImages come out pixel for pixel; JPEG ones decode to their size."""
    scan = tmp_path / 'scan'
    store = bags.typestore()
    compressed = 'sensor_msgs/msg/CompressedImage'
    sharp = [_textured(k, 'rgb8') for k in range(3)]
    with Writer(scan, version=9) as writer:
        conns = {t: writer.add_connection(t, kind, typestore=store) for t, kind in [
            ('/png', compressed), ('/jpeg', compressed), ('/info', bags.CAMERA_INFO_TYPE),
            ('/pose', bags.POSE_TYPE)]}
        for k, image in enumerate(sharp):
            stamp = T0 + k * 10**8
            for topic, ext in (('/png', '.png'), ('/jpeg', '.jpg')):
                data = cv2.imencode(ext, image[:, :, ::-1])[1]
                msg = store.types[compressed](bags.header(stamp), ext[1:], data)
                writer.write(conns[topic], stamp, store.serialize_cdr(msg, compressed))
            info = bags.camera_info_message(cameras.k_from_ros(K_ROS), W, H, stamp)
            writer.write(conns['/info'], stamp, store.serialize_cdr(info, bags.CAMERA_INFO_TYPE))
            writer.write(conns['/pose'], stamp, store.serialize_cdr(
                bags.pose_message(world_camera(T0 + k * 10**9), stamp), bags.POSE_TYPE))
    report = bag_to_capture(scan, tmp_path / 'png', '/png', pose_topic='/pose')
    assert (report.n_kept, report.camera_model) == (3, 'PINHOLE')
    assert 'k1' not in _load(tmp_path / 'png')
    for k, image in enumerate(sharp):
        png = cv2.imread(str(tmp_path / 'png' / f'images/frame_{k:05d}.png'))
        np.testing.assert_array_equal(png, image[:, :, ::-1])
    assert bag_to_capture(scan, tmp_path / 'jpeg', '/jpeg', pose_topic='/pose').n_kept == 3
    png = cv2.imread(str(tmp_path / 'jpeg' / 'images/frame_00000.png'))
    assert png.shape == (H, W, 3)


def test_lens_models_map_to_nerfstudio_keys():
    radtan = undistort.Distortion('radtan', D)
    assert lens_keys(radtan) == ('OPENCV', {'k1': D[0], 'k2': D[1], 'k3': D[4], 'p1': D[2],
                                            'p2': D[3]})
    assert lens_keys(undistort.Distortion('rational', D + [0, 0, 0])) == lens_keys(radtan)
    assert lens_keys(undistort.Distortion('fisheye', [0.1, 0.2, 0.3, 0.4])) == (
        'OPENCV_FISHEYE', {'k1': 0.1, 'k2': 0.2, 'k3': 0.3, 'k4': 0.4})
    assert lens_keys(undistort.NO_DISTORTION) == ('PINHOLE', {})
    # a pinhole frame among OPENCV ones gets zero coefficients of its own
    frames = [{'file_path': f'{k}.png', 'viewmat': np.eye(4),
               'camera': NerfstudioCamera(50.0, 50.0, 20.0, 15.0, W, H, lens)}
              for k, lens in enumerate([radtan, undistort.NO_DISTORTION])]
    meta, per_frame = transforms_meta(frames)
    assert per_frame and meta['camera_model'] == 'OPENCV'
    assert meta['frames'][1] | {'transform_matrix': None} == {
        'file_path': '1.png', 'transform_matrix': None, 'fl_x': 50.0, 'fl_y': 50.0,
        'cx': 20.0, 'cy': 15.0, 'w': W, 'h': H, 'k1': 0.0, 'k2': 0.0, 'k3': 0.0, 'p1': 0.0,
        'p2': 0.0}
    fisheye = dict(frames[1], camera=NerfstudioCamera(50.0, 50.0, 20.0, 15.0, W, H,
                                                      undistort.Distortion('fisheye', [0.1])))
    with pytest.raises(ValueError, match='lens model changes'):
        transforms_meta([frames[0], fisheye])
