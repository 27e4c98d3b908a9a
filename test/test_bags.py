"""MAD category <-> rosbag2 round trip, the bag's layout, and offline/mad_to_rosbag.py."""

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin

from igspad_ros.core import cameras
from igspad_ros.data import bags
from igspad_ros.data.mad import load_category


@pytest.fixture(scope='module')
def test_split(synthetic_category_dir):
    """The fixture category's test split only (no training views)."""
    return load_category(synthetic_category_dir, load_train=False)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_round_trip_preserves_every_image(test_split, tmp_path, storage):
    out = tmp_path / 'bag'
    assert bags.write_mad_bag(test_split, out, storage=storage) == 16
    records = bags.read_mad_bag(out)
    assert len(records) == len(test_split.test) == 16
    for k, (record, test) in enumerate(zip(records, test_split.test)):
        assert record.stamp_ns == bags.START_NS + k * 10**9
        assert record.rel_path == test.rel_path
        assert record.defect_type == test.defect_type
        assert record.image.dtype == np.float32
        np.testing.assert_array_equal(record.image, test.image)
        np.testing.assert_array_equal(record.mask, test.mask)
        np.testing.assert_array_equal(record.K, test_split.K)
        np.testing.assert_allclose(record.true_viewmat, test.true_viewmat, atol=1e-12)
    assert sum(r.mask.any() for r in records) == sum(t.defect_type != 'good'
                                                     for t in test_split.test) == 12
    assert bags.bag_category(out) == 'brick'


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_bag_layout_is_rosbag2_v9_with_standard_types(test_split, tmp_path, storage):
    out = tmp_path / 'bag'
    bags.write_mad_bag(test_split, out, storage=storage)
    meta = yaml.safe_load((out / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['version'] == 9
    assert meta['storage_identifier'] == storage
    topics = {t['topic_metadata']['name']: (t['topic_metadata']['type'], t['message_count'])
              for t in meta['topics_with_message_count']}
    assert topics == {
        '/camera/image_raw': ('sensor_msgs/msg/Image', 16),
        '/camera/camera_info': ('sensor_msgs/msg/CameraInfo', 16),
        '/mad/ground_truth': ('sensor_msgs/msg/Image', 16),
        '/mad/defect_type': ('std_msgs/msg/String', 16),
        '/mad/image_path': ('std_msgs/msg/String', 16),
        '/mad/true_pose': ('geometry_msgs/msg/PoseStamped', 16),
    }
    assert meta['message_count'] == 96
    assert meta['duration']['nanoseconds'] == 15 * 10**9


def test_messages_are_standard_ros_messages(test_split, tmp_path):
    """What rclpy (Kilted wheels) deserialises from the bag matches the written category."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String

    out = tmp_path / 'bag'
    bags.write_mad_bag(test_split, out)
    types = {'/camera/image_raw': Image, '/mad/ground_truth': Image,
             '/camera/camera_info': CameraInfo, '/mad/defect_type': String}
    first = {}
    with Reader(out) as reader:
        for conn, log_time, raw in reader.messages():
            if conn.topic in types and log_time == bags.START_NS:
                first[conn.topic] = deserialize_message(bytes(raw), types[conn.topic])
    image, mask = first['/camera/image_raw'], first['/mad/ground_truth']
    test = test_split.test[0]
    assert (image.encoding, image.height, image.width, image.step) == ('rgb8', 64, 64, 192)
    assert (image.header.stamp.sec, image.header.stamp.nanosec) == (1_704_067_200, 0)
    assert image.header.frame_id == bags.FRAME_ID
    pixels = np.frombuffer(bytes(image.data), np.uint8).reshape(64, 64, 3)
    np.testing.assert_array_equal(pixels, np.round(test.image * 255).astype(np.uint8))
    assert mask.encoding == 'mono8'
    assert set(np.unique(np.frombuffer(bytes(mask.data), np.uint8))) <= {0, 255}
    assert first['/mad/defect_type'].data == test.defect_type
    np.testing.assert_array_equal(np.reshape(first['/camera/camera_info'].k, (3, 3)),
                                  cameras.k_to_ros(test_split.K))


def test_never_overwrites(test_split, tmp_path):
    out = tmp_path / 'bag'
    out.mkdir()
    with pytest.raises(bags.BagExistsError, match='exists already'):
        bags.write_mad_bag(test_split, out)
    assert list(out.iterdir()) == []


def test_bad_bags_are_named(tmp_path):
    with pytest.raises(bags.BagFormatError, match='no metadata.yaml'):
        bags.read_mad_bag(tmp_path)
    out = tmp_path / 'strings_only'
    store = bags.typestore()
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection('/mad/defect_type', 'std_msgs/msg/String', typestore=store)
        writer.write(conn, 1, store.serialize_cdr(store.types['std_msgs/msg/String']('good'),
                                                  'std_msgs/msg/String'))
    with pytest.raises(bags.BagFormatError, match='no /camera/image_raw topic'):
        bags.read_mad_bag(out)


def test_tool_writes_a_bag_and_refuses_bad_outputs(synthetic_category_dir, tmp_path, capsys,
                                                   load_script):
    tool = load_script('offline/mad_to_rosbag.py')
    before = sorted(p.relative_to(synthetic_category_dir)
                    for p in synthetic_category_dir.rglob('*'))
    out = tmp_path / 'bag'
    assert tool.main(['--data', str(synthetic_category_dir), '--out', str(out),
                      '--storage', 'sqlite3', '--size', '32']) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and 'wrote' in summary[0] and '16 images of brick' in summary[0]
    records = bags.read_mad_bag(out)
    assert [r.image.shape for r in records] == [(32, 32, 3)] * 16

    assert tool.main(['--data', str(synthetic_category_dir), '--out', str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'exists already' in err[0]

    inside = synthetic_category_dir / 'bag'
    assert tool.main(['--data', str(synthetic_category_dir), '--out', str(inside)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'inside the dataset folder' in err[0]
    assert not inside.exists()

    assert tool.main(['--data', str(tmp_path / 'missing'), '--out', str(tmp_path / 'b2')]) == 2
    assert 'not a folder' in capsys.readouterr().err
    after = sorted(p.relative_to(synthetic_category_dir)
                   for p in synthetic_category_dir.rglob('*'))
    assert after == before
