"""The realistic synthetic capture end to end: bag of it, training, evaluation, its bag.

The capture (``synthetic_capture_dirs``) has lens distortion, fx != fy, an off-centre
principal point, a 4:3 frame and JPEG files, as a user's phone or robot camera gives.
"""
import json

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Writer

from igspad_ros.core import cameras
from igspad_ros.data import bags
from igspad_ros.data.bag_capture import TF_STATIC_TOPIC, TF_TOPIC, TF_TYPE
from igspad_ros.data.capture import load_capture
from igspad_ros.data.synthetic_capture import DISTORTION

IMAGE_TOPIC, INFO_TOPIC = '/arm/camera/image_raw', '/arm/camera/camera_info'
# the robot's world frame is not the capture's: a fixed world -> capture edge on /tf_static
WORLD_CAPTURE = np.array([[0.0, -1.0, 0.0, 0.4], [1.0, 0.0, 0.0, -0.2], [0.0, 0.0, 1.0, 0.9],
                          [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture(scope='module')
def capture(synthetic_capture_dirs):
    """The COLMAP copy of the capture, loaded at its native 64 x 48."""
    return load_capture(synthetic_capture_dirs['colmap'])


def _transform(stamp, parent, child, T):
    types = bags.typestore().types
    t, q = cameras.rigid_to_quaternion(T)
    return types['geometry_msgs/msg/TransformStamped'](
        bags.header(stamp, parent), child, types['geometry_msgs/msg/Transform'](
            types['geometry_msgs/msg/Vector3'](*t), types['geometry_msgs/msg/Quaternion'](*q)))


def _write_arm_bag(path, capture):
    """The capture's raw photos as a robot records them: images, CameraInfo with d, TF."""
    store = bags.typestore()
    raw = json.loads((capture.root.parent / 'brick' / 'transforms.json').read_text())
    K = np.array([[raw['fl_x'], 0, raw['cx']], [0, raw['fl_y'], raw['cy']], [0, 0, 1]])
    with Writer(path, version=9, storage_plugin=bags.STORAGES['mcap']) as writer:
        conns = {topic: writer.add_connection(topic, kind, typestore=store) for topic, kind in
                 [(IMAGE_TOPIC, bags.IMAGE_TYPE), (INFO_TOPIC, bags.CAMERA_INFO_TYPE),
                  (TF_TOPIC, TF_TYPE), (TF_STATIC_TOPIC, TF_TYPE)]}

        def write(topic, stamp, msg):
            writer.write(conns[topic], stamp, store.serialize_cdr(msg, conns[topic].msgtype))
        write(TF_STATIC_TOPIC, bags.START_NS, store.types[TF_TYPE](
            [_transform(bags.START_NS, 'world', 'capture', WORLD_CAPTURE)]))
        for k, view in enumerate(capture.train):
            stamp = bags.stamp_of(k + 1)
            photo = cv2.cvtColor(cv2.imread(str(view.path)), cv2.COLOR_BGR2RGB)
            c2w = cameras.viewmat_to_opencv_c2w(view.viewmat)
            write(TF_TOPIC, stamp, store.types[TF_TYPE](
                [_transform(stamp, 'capture', 'camera_optical_frame', c2w)]))
            write(IMAGE_TOPIC, stamp, bags.image_message(photo, 'rgb8', stamp))
            write(INFO_TOPIC, stamp, bags.camera_info_message(
                K, *photo.shape[1::-1], stamp, distortion=DISTORTION))
    return path


def test_capture_bag_through_bag_to_capture_gives_the_same_poses(capture, tmp_path,
                                                                 load_script, capsys):
    tool = load_script('offline/bag_to_capture.py')
    bag = _write_arm_bag(tmp_path / 'arm', capture)
    out = tmp_path / 'arm_capture'
    assert tool.main(['--bag', str(bag), '--out', str(out), '--image-topic', IMAGE_TOPIC,
                      '--camera-info-topic', INFO_TOPIC, '--tf-parent', 'capture',
                      '--blur-threshold', '0']) == 0
    assert capsys.readouterr().out.startswith(f'wrote {out}: 60 of 60 images kept')
    loaded = load_capture(out)
    assert loaded.format == 'transforms' and len(loaded.train) == len(capture.train)
    for got, want in zip(loaded.train, capture.train):
        np.testing.assert_allclose(got.viewmat, want.viewmat, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.K, want.K, rtol=0, atol=1e-9)
        # the bag holds the decoded JPEG pixels: the same photo, undistorted the same way
        np.testing.assert_array_equal(got.image, want.image)


@pytest.fixture(scope='module')
def capture_scene(synthetic_capture_dirs, tmp_path_factory, load_script):
    """(scene path, the tool's summary line) of the COLMAP copy trained at 64 x 48."""
    import contextlib
    import io

    scene = tmp_path_factory.mktemp('capture_scene') / 'scene.ply'
    train = load_script('offline/train_scene.py')
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert train.main(['--data', str(synthetic_capture_dirs['colmap']), '--out', str(scene),
                           '--device', 'cpu', '--size', '64', '--iters', '600',
                           '--threads', '1']) == 0
    return scene, out.getvalue()


def test_capture_trains_and_evaluates_end_to_end(synthetic_capture_dirs, capture, capture_scene,
                                                 tmp_path, load_script):
    scene, line = capture_scene
    assert 'from 52 views of brick_colmap (colmap) at 64x48' in line
    psnr = float(line.split('held-out PSNR ')[1].split(' dB')[0])
    assert psnr > 25.0
    meta = json.loads(scene.with_suffix('.meta.json').read_text())
    assert meta['format'] == 'colmap' and meta['background'] == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(meta['views']['K'], [v.K for v in capture.train], rtol=0,
                               atol=1e-12)
    assert meta['views']['size'] == [[64, 48]] * 60
    # the inspection region: a box around the SfM points, the object's 1.3 x 1.1 plate
    assert len(meta['roi']) == 6                   # no table under it: no support plane
    lo, hi = np.array(meta['roi'][:3]), np.array(meta['roi'][3:])
    assert np.all(hi - lo > 0.3) and np.all(hi - lo < 2.0)
    (camera,) = meta['undistorted'].values()
    assert camera['model'] == 'radtan'
    np.testing.assert_allclose(camera['coeffs'], DISTORTION.coeffs, rtol=0, atol=1e-12)

    out = tmp_path / 'eval.json'
    evaluate = load_script('offline/evaluate.py')
    assert evaluate.main(['--data', str(synthetic_capture_dirs['transforms']), '--scene',
                          str(scene), '--json', str(out), '--device', 'cpu',
                          '--no-gallery']) == 0
    report = json.loads(out.read_text())
    assert report['n_images'] == 8
    assert [i['path'] for i in report['images'][:2]] == ['test/Burrs/0.jpg', 'test/Burrs/1.jpg']
    assert report['pose']['success_rate_2deg'] == 1.0
    assert report['pose']['rot_deg_median'] < 1.0
    assert report['pixel_auroc'] > 0.9


def test_capture_test_split_as_a_bag_carries_each_image_k(capture, tmp_path, load_script):
    tool = load_script('offline/mad_to_rosbag.py')
    out = tmp_path / 'bag'
    assert tool.main(['--data', str(capture.root), '--out', str(out)]) == 0
    records = bags.read_mad_bag(out)
    assert [r.rel_path for r in records] == [t.rel_path for t in capture.test]
    for record, test in zip(records, capture.test):
        np.testing.assert_allclose(record.K, test.K, rtol=0, atol=1e-12)
        assert record.image.shape == test.image.shape == (48, 64, 3)


def test_tools_name_a_folder_that_is_no_capture(tmp_path, load_script, capsys):
    (tmp_path / 'photos').mkdir()
    train = load_script('offline/train_scene.py')
    assert train.main(['--data', str(tmp_path / 'photos'), '--out',
                       str(tmp_path / 'scene.ply')]) == 2
    folder = tmp_path / 'photos'
    err = capsys.readouterr().err
    assert err.count('\n') == 1
    assert err.endswith(f' error: {folder}: not a capture folder: no transforms.json (MAD '
                        'category or nerfstudio / instant-ngp capture), no sparse/0 or sparse/ '
                        'COLMAP model (cameras.bin or cameras.txt)\n')
    bag = load_script('offline/mad_to_rosbag.py')
    assert bag.main(['--data', str(folder), '--out', str(tmp_path / 'bag'),
                     '--format', 'colmap']) == 2
    assert capsys.readouterr().err.endswith(f' error: {folder}: no COLMAP model (no sparse/0/ '
                                            'or sparse/ with cameras.bin or cameras.txt)\n')


def test_exposure_change_is_normal_and_a_stain_is_not(capture, capture_scene):
    """A normal view 20 % brighter scores below the threshold; with a painted stain, above."""
    import torch

    from igspad_ros.core.inspector import Inspector, InspectorConfig

    torch.set_num_threads(1)
    inspector = Inspector(capture_scene[0], InspectorConfig(), device='cpu')
    good = next(t for t in capture.test if t.defect_type == 'good')
    brighter = np.clip(good.image * 1.2, 0.0, 1.0)
    normal = inspector.inspect(brighter, good.K)
    stained = brighter.copy()
    cv2.circle(stained, (34, 24), 6, (0.55, 0.1, 0.45), -1)
    defect = inspector.inspect(stained, good.K)
    assert min(normal.colour.gain) > 1.04          # the render was brightened to match
    # measured: 0.064 < 0.111 < 0.283
    assert normal.image_score < inspector.threshold < defect.image_score
    # xfeat normalises brightness itself; colour features need the alignment
    scores = [Inspector(capture_scene[0], InspectorConfig(extractor='pixel', threshold=1.0,
                                                          photometric=aligned),
                        device='cpu').inspect(brighter, good.K).image_score
              for aligned in (True, False)]
    assert scores[1] > 1.5 * scores[0]
