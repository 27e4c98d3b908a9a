"""Tests for the MAD-format reader on small hand-written categories."""
import json

import cv2
import numpy as np
import pytest

from igspad_ros.core import cameras
from igspad_ros.data.mad import MadFormatError, load_category

W, H = 40, 30


def _png(path, rgb):
    """Write an RGB or RGBA uint8 array as PNG (OpenCV wants BGR order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    code = cv2.COLOR_RGBA2BGRA if rgb.ndim == 3 and rgb.shape[2] == 4 else cv2.COLOR_RGB2BGR
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, code) if rgb.ndim == 3 else rgb)


def _image(seed):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _c2w(k):
    eye = 3.5 * np.array([np.cos(k), np.sin(k), 0.3])
    return cameras.viewmat_to_blender_c2w(cameras.look_at(eye))


@pytest.fixture
def category(tmp_path):
    """A 40x30 category: train 1, 2, 10 listed out of order, one test image per type."""
    root = tmp_path / 'Toy'
    frames = []
    for n, rel in ((10, './train/good/10'), (2, 'train/good/2.png'), (1, './train/good/1.png')):
        _png(root / f'train/good/{n}.png', _image(n))
        frames.append({'file_path': rel, 'transform_matrix': _c2w(n).tolist()})
    (root / 'transforms.json').write_text(json.dumps({'camera_angle_x': 0.6911,
                                                      'frames': frames}))
    _png(root / 'test/good/0.png', _image(100))
    _png(root / 'test/Burrs/0.png', _image(101))
    _png(root / 'test/Stains/3.png', _image(102))
    mask = np.zeros((H, W), np.uint8)
    mask[5:9, 10:20] = 255
    _png(root / 'ground_truth/Burrs/0_mask.png', mask)
    _png(root / 'ground_truth/Stains/3.png', mask[::-1].copy())
    return root


def test_reads_train_views_in_numeric_order_with_poses(category):
    cat = load_category(category, load_test=False)
    assert (cat.name, cat.width, cat.height, cat.test) == ('Toy', W, H, [])
    assert [v.index for v in cat.train] == [1, 2, 10]
    np.testing.assert_allclose(cat.K, cameras.intrinsics_from_fov(0.6911, W, H))
    for view in cat.train:
        np.testing.assert_allclose(view.viewmat, cameras.blender_c2w_to_viewmat(_c2w(view.index)))
        np.testing.assert_array_equal(view.image, _image(view.index).astype(np.float32) / 255)
        assert view.image.dtype == np.float32 and view.path.name == f'{view.index}.png'


def test_reads_test_images_masks_and_types(category):
    cat = load_category(category, load_train=False)
    assert cat.train == []
    by_path = {t.rel_path: t for t in cat.test}
    assert sorted(by_path) == ['test/Burrs/0.png', 'test/Stains/3.png', 'test/good/0.png']
    good, burrs, stains = (by_path['test/good/0.png'], by_path['test/Burrs/0.png'],
                           by_path['test/Stains/3.png'])
    assert (good.defect_type, burrs.defect_type, stains.defect_type) == (
        'good', 'Burrs', 'Stains')
    assert good.mask.shape == (H, W) and not good.mask.any()
    assert burrs.mask.sum() == 40 and burrs.mask[5:9, 10:20].all()
    assert stains.mask.sum() == 40 and stains.mask[H - 9:H - 5, 10:20].all()
    np.testing.assert_array_equal(burrs.image, _image(101).astype(np.float32) / 255)
    assert all(t.true_viewmat is None for t in cat.test)


def test_reads_test_poses_when_present(category):
    c2w = _c2w(0.7)
    (category / 'test_poses.json').write_text(json.dumps({'test/Burrs/0.png': c2w.tolist()}))
    by_path = {t.rel_path: t for t in load_category(category, load_train=False).test}
    np.testing.assert_allclose(by_path['test/Burrs/0.png'].true_viewmat,
                               cameras.blender_c2w_to_viewmat(c2w))
    assert by_path['test/good/0.png'].true_viewmat is None


def test_rgba_is_composited_over_white_in_rgb_order(category):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)         # opaque red
    rgba[0, 1] = (0, 0, 255, 0)           # transparent blue -> white
    rgba[0, 2] = (0, 0, 0, 51)            # 20 % black over white
    _png(category / 'train/good/1.png', rgba)
    img = load_category(category, load_test=False).train[0].image
    np.testing.assert_allclose(img[0, 0], [1, 0, 0])
    np.testing.assert_allclose(img[0, 1], [1, 1, 1])
    np.testing.assert_allclose(img[0, 2], [0.8, 0.8, 0.8], atol=1e-6)


def test_downscale_on_load(category):
    cat = load_category(category, size=20)
    assert (cat.width, cat.height) == (20, 15)
    np.testing.assert_allclose(cat.K, cameras.scale_intrinsics(
        cameras.intrinsics_from_fov(0.6911, W, H), (W, H), (20, 15)))
    expected = cv2.resize(_image(1).astype(np.float32) / 255, (20, 15),
                          interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(cat.train[0].image, expected, atol=1e-6)
    burrs = next(t for t in cat.test if t.defect_type == 'Burrs')
    assert burrs.mask.shape == (15, 20) and burrs.mask.sum() == 10
    assert burrs.image.shape == (15, 20, 3)
    with pytest.raises(ValueError, match='size'):
        load_category(category, size=41)


def test_never_writes_into_the_dataset(category):
    before = {p: p.stat().st_mtime_ns for p in category.rglob('*')}
    load_category(category, size=20)
    assert {p: p.stat().st_mtime_ns for p in category.rglob('*')} == before


def _error(root):
    with pytest.raises(MadFormatError) as info:
        load_category(root)
    return str(info.value)


def test_error_missing_transforms(category):
    (category / 'transforms.json').unlink()
    assert str(category / 'transforms.json') in _error(category)


def test_error_missing_frame_file(category):
    (category / 'train/good/2.png').unlink()
    message = _error(category)
    assert str(category / 'train/good/2.png') in message and 'does not exist' in message


def test_error_mask_size_mismatch(category):
    _png(category / 'ground_truth/Burrs/0_mask.png', np.zeros((H, W + 1), np.uint8))
    message = _error(category)
    assert str(category / 'ground_truth/Burrs/0_mask.png') in message and '41x30' in message


def test_error_missing_mask(category):
    (category / 'ground_truth/Stains/3.png').unlink()
    assert str(category / 'ground_truth/Stains/3_mask.png') in _error(category)


@pytest.mark.parametrize('content', [b'not a png at all', b'truncated'])
def test_error_unreadable_png(category, content):
    path = category / 'test/good/0.png'
    if content == b'truncated':
        content = path.read_bytes()[:60]  # valid header, pixel data cut off
    path.write_bytes(content)
    message = _error(category)
    assert str(path) in message and 'unreadable PNG' in message


def test_error_malformed_transforms(category):
    (category / 'transforms.json').write_text('{"frames": []}')
    assert 'camera_angle_x' in _error(category)
    (category / 'transforms.json').write_text(json.dumps(
        {'camera_angle_x': 0.7, 'frames': [{'file_path': 'train/good/1',
                                            'transform_matrix': [[1, 0], [0, 1]]}]}))
    assert 'frame 0' in _error(category)


def test_error_huge_png_claim_is_refused_before_decoding(category):
    path = category / 'train/good/1.png'
    data = bytearray(path.read_bytes())
    data[16:24] = (100000).to_bytes(4, 'big') * 2
    path.write_bytes(bytes(data))
    assert '100000x100000' in _error(category)
