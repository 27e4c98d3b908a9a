"""Tests for the capture readers (transforms.json, COLMAP) and the loader in front of them."""
import json

import cv2
import numpy as np
import pycolmap
import pytest

from igspad_ros.core import cameras, undistort
from igspad_ros.data import image_files
from igspad_ros.data.capture import CaptureFormatError, detect_format, load_capture
from igspad_ros.data.mad import MadFormatError, load_category

W, H = 40, 30


def _write(path, rgb):
    """Write an RGB uint8 array (PNG or JPEG by the suffix); return what a reader decodes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb)
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if decoded.ndim == 3:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return decoded.astype(np.float32) / 255


def _image(seed, w=W, h=H):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _c2w(k):
    eye = 3.5 * np.array([np.cos(k), np.sin(k), 0.3])
    return cameras.viewmat_to_blender_c2w(cameras.look_at(eye))


def _transforms(root, frames, **top):
    root.mkdir(parents=True, exist_ok=True)
    (root / 'transforms.json').write_text(json.dumps({**top, 'frames': frames}))
    return root


def _frame(rel, k, **extra):
    return {'file_path': rel, 'transform_matrix': _c2w(k).tolist(), **extra}


def _colmap(root, cams, images, points=(), text=False):
    """Write a COLMAP model: cams [(model, params, w, h)], images [(name, cam_id, viewmat)]."""
    rec = pycolmap.Reconstruction()
    for cid, (model, params, w, h) in enumerate(cams, start=1):
        camera = pycolmap.Camera.create_from_model_name(cid, model, 1.0, w, h)
        camera.params = params
        rec.add_camera_with_trivial_rig(camera)
    for iid, (name, cid, viewmat) in enumerate(images, start=1):
        rec.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=cid, image_id=iid),
                                         pycolmap.Rigid3d(viewmat[:3]))
    for xyz, rgb in points:
        rec.add_point3D(np.asarray(xyz, float), pycolmap.Track(), np.asarray(rgb, np.uint8))
    folder = root / ('sparse' if text else 'sparse/0')
    folder.mkdir(parents=True, exist_ok=True)
    if text:
        rec.write_text(str(folder))
    else:
        rec.write(str(folder))
    return folder


def _K(fx, fy, cx, cy):
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _error(root, **kwargs):
    with pytest.raises(CaptureFormatError) as info:
        load_capture(root, **kwargs)
    return str(info.value)


# --- transforms.json --------------------------------------------------------------------


@pytest.fixture
def nerfstudio(tmp_path):
    """Global PINHOLE intrinsics, a JPEG and a PNG listed out of name order."""
    root = tmp_path / 'ns'
    expected = {'images/b.jpg': _write(root / 'images/b.jpg', _image(1)),
                'images/a.png': _write(root / 'images/a.png', _image(2))}
    _transforms(root, [_frame('./images/b.jpg', 1), _frame('images/a.png', 2)],
                camera_model='PINHOLE', fl_x=50.0, fl_y=52.0, cx=19.25, cy=14.0, w=W, h=H)
    return root, expected


def test_transforms_global_intrinsics_keep_the_principal_point_as_written(nerfstudio):
    """nerfstudio's cx, cy are pixel-edge, like COLMAP's and K's: no half-pixel shift."""
    root, expected = nerfstudio
    cap = load_capture(root)
    assert (cap.format, cap.name, cap.width, cap.height, cap.skipped) == (
        'transforms', 'ns', W, H, 0)
    np.testing.assert_array_equal(cap.K, _K(50.0, 52.0, 19.25, 14.0))
    assert [v.index for v in cap.train] == [0, 1]
    for view, (rel, image), k in zip(cap.train, expected.items(), (1, 2)):
        assert view.path == root / rel and view.mask is None
        np.testing.assert_array_equal(view.K, _K(50.0, 52.0, 19.25, 14.0))
        np.testing.assert_allclose(view.viewmat, cameras.blender_c2w_to_viewmat(_c2w(k)),
                                   atol=1e-9, rtol=0)
        np.testing.assert_array_equal(view.image, image)
        assert view.image.dtype == np.float32
    assert cap.undistorted == {'0': {'model': 'none', 'coeffs': [],
                                     'K_raw': _K(50.0, 52.0, 19.25, 14.0).tolist(),
                                     'size_raw': [W, H]}}
    json.dumps(cap.undistorted)


def test_transforms_per_frame_intrinsics_and_paths_without_extension(tmp_path):
    root = tmp_path / 'pf'
    a = _write(root / 'frames/0.png', _image(3))
    b = _write(root / 'frames/1.JPG', _image(4, 30, 20))
    _transforms(root, [_frame('frames/0', 0, fl_x=40.0, cx=20.0, cy=15.0, w=W, h=H),
                       _frame('./frames/1', 1, fl_x=30.0, fl_y=31.0, cx=14.5, cy=9.5,
                              w=30, h=20)])
    cap = load_capture(root)
    first, second = cap.train
    assert (first.path.name, second.path.name) == ('0.png', '1.JPG')
    np.testing.assert_array_equal(first.K, _K(40.0, 40.0, 20.0, 15.0))
    np.testing.assert_array_equal(second.K, _K(30.0, 31.0, 14.5, 9.5))
    np.testing.assert_array_equal(cap.K, first.K)
    np.testing.assert_array_equal(first.image, a)
    np.testing.assert_array_equal(second.image, b)
    assert len(cap.undistorted) == 2

    small = load_capture(root, size=20)
    assert small.train[0].image.shape == (15, 20, 3) and small.train[1].image.shape == (13, 20, 3)
    assert (small.width, small.height) == (20, 15)
    np.testing.assert_allclose(small.train[1].K, cameras.scale_intrinsics(
        _K(30.0, 31.0, 14.5, 9.5), (30, 20), (20, 13)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(small.train[0].image, cv2.resize(a, (20, 15),
                                                                interpolation=cv2.INTER_AREA))


def test_transforms_camera_angle_x_alone_gives_a_centred_pinhole(tmp_path):
    """instant-ngp / Blender: camera_angle_x[_y], sizes from the files, paths outside train."""
    root = tmp_path / 'ngp'
    _write(root / 'train/r_0.png', _image(5))
    _transforms(root, [_frame('./train/r_0', 0)], camera_angle_x=0.7, camera_angle_y=0.55)
    assert detect_format(root) == 'transforms'
    K = load_capture(root).K
    fx = 0.5 * W / np.tan(0.35)
    np.testing.assert_allclose(K, _K(fx, 0.5 * H / np.tan(0.275), 20.0, 15.0), rtol=0,
                               atol=1e-12)


def test_transforms_without_cx_cy_centre_the_principal_point(tmp_path):
    """Absent cx, cy default to w / 2, h / 2: the pixel-edge image centre."""
    root = tmp_path / 'nocx'
    _write(root / 'images/0.png', _image(5))
    _transforms(root, [_frame('images/0.png', 0)], fl_x=30.0, fl_y=31.0, w=W, h=H)
    np.testing.assert_array_equal(load_capture(root).K, _K(30.0, 31.0, 20.0, 15.0))


def test_mad_transforms_go_through_the_mad_reader_and_agree_when_forced(tmp_path):
    root = tmp_path / 'Toy'
    for n in (1, 2):
        _write(root / f'train/good/{n}.png', _image(n))
    _transforms(root, [_frame('./train/good/2', 2), _frame('train/good/1.png', 1)],
                camera_angle_x=0.6911)
    assert detect_format(root) == 'mad'
    mad = load_capture(root)
    assert mad.format == 'mad' and [v.index for v in mad.train] == [1, 2]
    forced = load_capture(root, format='transforms')
    assert forced.format == 'transforms' and [v.path.name for v in forced.train] == [
        '2.png', '1.png']
    np.testing.assert_allclose(forced.K, mad.K, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(forced.train[0].image, mad.train[1].image)


def test_pincushion_marks_corners_invalid_and_images_are_undistorted(tmp_path):
    root = tmp_path / 'lens'
    raw = _write(root / 'images/0.png', _image(6))
    _transforms(root, [_frame('images/0.png', 0)], camera_model='OPENCV', fl_x=30.0,
                fl_y=30.0, cx=20.0, cy=15.0, w=W, h=H, k1=0.3, p1=0.001)
    cap = load_capture(root)
    view = cap.train[0]
    K = _K(30.0, 30.0, 20.0, 15.0)
    maps = undistort.undistortion_maps(K, undistort.Distortion('radtan', (0.3, 0, 0.001, 0, 0)),
                                       (W, H))
    assert view.mask.dtype == bool and view.mask.shape == (H, W)
    assert not view.mask[0, 0] and not view.mask[-1, -1] and view.mask[15, 20]
    np.testing.assert_array_equal(view.mask, maps.valid)
    assert 0 < (~view.mask).sum() < W * H // 2
    np.testing.assert_array_equal(view.image, undistort.remap(raw, maps))
    np.testing.assert_array_equal(view.K, K)
    assert cap.undistorted['0']['model'] == 'radtan'
    assert cap.undistorted['0']['coeffs'] == [0.3, 0.0, 0.001, 0.0, 0.0]

    small = load_capture(root, size=20).train[0]
    np.testing.assert_array_equal(small.mask, image_files.resize_mask(maps.valid, (20, 15)))


def test_mask_path_is_anded_with_the_undistortion_mask(tmp_path):
    root = tmp_path / 'masked'
    _write(root / 'images/0.png', _image(7))
    _write(root / 'images/1.png', _image(8))
    keep = np.zeros((H, W), np.uint8)
    keep[:, :25] = 255
    _write(root / 'masks/0.png', keep)
    _write(root / 'masks/1.png', keep)
    _transforms(root, [_frame('images/0.png', 0, mask_path='masks/0.png'),
                       _frame('images/1.png', 1, mask_path='./masks/1', k1=0.3)],
                fl_x=30.0, cx=20.0, cy=15.0, w=W, h=H)
    plain, lens = load_capture(root).train
    np.testing.assert_array_equal(plain.mask, keep > 0)
    maps = undistort.undistortion_maps(_K(30.0, 30.0, 20.0, 15.0),
                                       undistort.Distortion('radtan', (0.3,)), (W, H))
    remapped = undistort.remap(keep, maps, interpolation=cv2.INTER_NEAREST) > 0
    np.testing.assert_array_equal(lens.mask, maps.valid & remapped)
    assert lens.mask.sum() < plain.mask.sum() and not lens.mask[:, 25:].any()


def test_fisheye_and_unsupported_lenses(tmp_path):
    root = tmp_path / 'fish'
    _write(root / 'images/0.png', _image(9))
    _transforms(root, [_frame('images/0.png', 0)], camera_model='OPENCV_FISHEYE', fl_x=25.0,
                cx=20.0, cy=15.0, w=W, h=H, k1=0.05, k2=0.01, k3=0.002, k4=0.001)
    cap = load_capture(root)
    assert cap.undistorted['0']['model'] == 'fisheye'
    assert cap.undistorted['0']['coeffs'] == [0.05, 0.01, 0.002, 0.001]
    assert cap.train[0].mask is not None
    _transforms(root, [_frame('images/0.png', 0)], camera_model='OPENCV', fl_x=25.0, w=W, h=H,
                k1=0.1, k4=0.01)
    assert 'k4' in _error(root) and 'transforms.json' in _error(root)
    _transforms(root, [_frame('images/0.png', 0)], camera_model='EQUIRECTANGULAR', fl_x=25.0)
    message = _error(root)
    assert "'EQUIRECTANGULAR'" in message and str(root / 'transforms.json') in message


def test_transforms_errors_name_the_file(nerfstudio):
    root, _ = nerfstudio
    (root / 'images/a.png').unlink()
    message = _error(root)
    assert str(root / 'images/a.png') in message and 'does not exist' in message
    _write(root / 'images/a.png', _image(2, 41, 30))
    message = _error(root)
    assert str(root / 'images/a.png') in message and '41x30' in message
    _transforms(root, [_frame('images/b.jpg', 1, fl_x=-3.0)], w=W, h=H)
    assert 'fl_x must be a positive number' in _error(root)
    _transforms(root, [_frame('images/b.jpg', 1)], fl_x=30.0, w=100000, h=100000)
    assert '100000x100000' in _error(root)


def test_jpeg_size_claims_are_refused_before_decoding(tmp_path):
    path = tmp_path / 'big.jpg'
    _write(path, _image(10))
    data = bytearray(path.read_bytes())
    sof = data.index(b'\xff\xc0')
    data[sof + 5:sof + 9] = (10000).to_bytes(2, 'big') * 2   # height, width
    path.write_bytes(bytes(data))
    with pytest.raises(CaptureFormatError, match='10000x10000'):
        image_files.image_size(path)
    (tmp_path / 'text.png').write_text('no image')
    with pytest.raises(CaptureFormatError, match='text.png: unreadable PNG or JPEG'):
        image_files.image_size(tmp_path / 'text.png')


# --- COLMAP -----------------------------------------------------------------------------


def _viewmat(k):
    return cameras.look_at(3.0 * np.array([np.cos(k), np.sin(k), 0.4]))


@pytest.fixture
def colmap_capture(tmp_path):
    """Two cameras (SIMPLE_RADIAL, PINHOLE), three registered images, one stray file."""
    root = tmp_path / 'cm'
    expected = {name: _write(root / 'images' / name, _image(seed))
                for name, seed in (('c.png', 11), ('a.jpg', 12), ('b.png', 13), ('x.png', 14))}
    cams = [('SIMPLE_RADIAL', [35.0, 20.0, 15.0, 0.0], W, H),
            ('PINHOLE', [36.0, 37.0, 19.0, 16.0], W, H)]
    images = [('c.png', 1, _viewmat(0)), ('a.jpg', 2, _viewmat(1)), ('b.png', 1, _viewmat(2))]
    points = [((0.1, 0.2, 0.3), (255, 0, 51)), ((-1.0, 0.5, 2.0), (0, 128, 255))]
    return root, expected, cams, images, points


@pytest.mark.parametrize('text', [False, True])
def test_colmap_model_binary_and_text(colmap_capture, text):
    root, expected, cams, images, points = colmap_capture
    _colmap(root, cams, images, points, text=text)
    assert detect_format(root) == 'colmap'
    cap = load_capture(root)
    assert (cap.format, cap.name, cap.skipped) == ('colmap', 'cm', 1)
    assert [v.path.name for v in cap.train] == ['a.jpg', 'b.png', 'c.png']
    assert [v.index for v in cap.train] == [0, 1, 2]
    # COLMAP's principal point is already pixel-edge: no half-pixel shift
    np.testing.assert_array_equal(cap.train[0].K, _K(36.0, 37.0, 19.0, 16.0))
    np.testing.assert_array_equal(cap.train[1].K, _K(35.0, 35.0, 20.0, 15.0))
    np.testing.assert_array_equal(cap.K, cap.train[0].K)
    for view, k in zip(cap.train, (1, 2, 0)):
        np.testing.assert_allclose(view.viewmat, _viewmat(k), atol=1e-9, rtol=0)
        np.testing.assert_array_equal(view.image, expected[view.path.name])
        assert view.mask is None
    np.testing.assert_allclose(cap.points, [[0.1, 0.2, 0.3], [-1.0, 0.5, 2.0]], rtol=0,
                               atol=1e-12)
    np.testing.assert_allclose(cap.point_colors, [[1.0, 0.0, 0.2], [0.0, 128 / 255, 1.0]])
    assert sorted(cap.undistorted) == ['1', '2']


def test_colmap_distortion_and_size(colmap_capture):
    root, expected, cams, images, _ = colmap_capture
    cams[0] = ('SIMPLE_RADIAL', [30.0, 20.0, 15.0, 0.3], W, H)
    _colmap(root, cams, images)
    cap = load_capture(root, size=20)
    view = next(v for v in cap.train if v.path.name == 'b.png')
    maps = undistort.undistortion_maps(_K(30.0, 30.0, 20.0, 15.0),
                                       undistort.Distortion('radtan', (0.3,)), (W, H))
    np.testing.assert_array_equal(view.mask, image_files.resize_mask(maps.valid, (20, 15)))
    assert view.image.shape == (15, 20, 3) and not view.mask[0, 0]
    np.testing.assert_array_equal(view.K, _K(15.0, 15.0, 10.0, 7.5))
    assert cap.undistorted['1'] == {'model': 'radtan', 'coeffs': [0.3, 0.0, 0.0, 0.0, 0.0],
                                    'K_raw': _K(30.0, 30.0, 20.0, 15.0).tolist(),
                                    'size_raw': [W, H]}


@pytest.mark.parametrize('model, params, lens', [
    ('FULL_OPENCV', [30, 31, 20, 15, .1, .01, .001, .002, .003, .004, .005, .006], 'rational'),
    ('RADIAL_FISHEYE', [30, 20, 15, .05, .01], 'fisheye'),
    ('OPENCV_FISHEYE', [30, 31, 20, 15, .05, .01, .002, .001], 'fisheye'),
])
def test_colmap_lens_models(tmp_path, model, params, lens):
    root = tmp_path / 'lens'
    _write(root / 'images/0.png', _image(15))
    _colmap(root, [(model, params, W, H)], [('0.png', 1, _viewmat(0))])
    cap = load_capture(root)
    n_focal = 1 if model == 'RADIAL_FISHEYE' else 2
    assert cap.undistorted['1']['model'] == lens
    assert cap.undistorted['1']['coeffs'][:len(params) - n_focal - 2] == params[n_focal + 2:]
    assert cap.train[0].mask is not None


def test_nerfstudio_and_colmap_opencv_load_the_same_camera(tmp_path):
    fx, fy, cx, cy, k1, k2, p1, p2 = 33.0, 34.0, 19.2, 14.7, 0.2, -0.05, 0.001, -0.002
    picture = _image(16)
    ns = tmp_path / 'ns'
    _write(ns / 'images/0.png', picture)
    _transforms(ns, [_frame('images/0.png', 0)], camera_model='OPENCV', fl_x=fx, fl_y=fy,
                cx=cx, cy=cy, w=W, h=H, k1=k1, k2=k2, p1=p1, p2=p2)
    cm = tmp_path / 'cm'
    _write(cm / 'images/0.png', picture)
    _colmap(cm, [('OPENCV', [fx, fy, cx, cy, k1, k2, p1, p2], W, H)],
            [('0.png', 1, cameras.blender_c2w_to_viewmat(_c2w(0)))])
    a, b = load_capture(ns).train[0], load_capture(cm).train[0]
    # the same numbers in both formats are the same camera: both are pixel-edge
    np.testing.assert_array_equal(a.K, _K(fx, fy, cx, cy))
    np.testing.assert_array_equal(b.K, _K(fx, fy, cx, cy))
    np.testing.assert_allclose(a.viewmat, b.viewmat, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.image, b.image, rtol=0, atol=1e-6)


def test_colmap_errors_name_the_file(colmap_capture):
    root, _, cams, images, _ = colmap_capture
    folder = _colmap(root, [('FOV', [30.0, 31.0, 20.0, 15.0, 0.01], W, H)], images[:1])
    message = _error(root)
    assert 'FOV' in message and str(folder / 'cameras.bin') in message
    _colmap(root, cams, images)
    (root / 'images/b.png').unlink()
    message = _error(root)
    assert str(root / 'images/b.png') in message and 'does not exist' in message


# --- test splits, detection, errors -----------------------------------------------------


def test_capture_test_split_is_undistorted_with_the_capture_camera(tmp_path):
    root = tmp_path / 'split'
    _write(root / 'images/0.png', _image(17))
    _transforms(root, [_frame('images/0.png', 0, fl_x=99.0)], fl_x=30.0, cx=20.0, cy=15.0,
                w=W, h=H, k1=0.3)
    good = _write(root / 'test/good/0.jpg', _image(18))
    _write(root / 'test/Burrs/2.png', _image(19))
    defect = np.zeros((H, W), np.uint8)
    defect[10:20, 5:15] = 255
    _write(root / 'ground_truth/Burrs/2_mask.png', defect)
    (root / 'test_poses.json').write_text(json.dumps({'test/Burrs/2.png': _c2w(3).tolist()}))
    cap = load_capture(root)
    np.testing.assert_array_equal(cap.train[0].K, _K(99.0, 99.0, 20.0, 15.0))
    K = _K(30.0, 30.0, 20.0, 15.0)
    maps = undistort.undistortion_maps(K, undistort.Distortion('radtan', (0.3,)), (W, H))
    by_path = {t.rel_path: t for t in cap.test}
    assert sorted(by_path) == ['test/Burrs/2.png', 'test/good/0.jpg']
    burrs, ok = by_path['test/Burrs/2.png'], by_path['test/good/0.jpg']
    np.testing.assert_array_equal(ok.image, undistort.remap(good, maps))
    assert ok.mask.shape == (H, W) and not ok.mask.any() and ok.true_viewmat is None
    np.testing.assert_array_equal(
        burrs.mask, undistort.remap(defect, maps, interpolation=cv2.INTER_NEAREST) > 0)
    np.testing.assert_allclose(burrs.true_viewmat, cameras.blender_c2w_to_viewmat(_c2w(3)))
    np.testing.assert_array_equal(burrs.K, K)
    assert burrs.defect_type == 'Burrs'
    small = load_capture(root, size=20, load_train=False)
    assert small.train == [] and small.test[0].image.shape == (15, 20, 3)
    _write(root / 'test/good/0.jpg', _image(18, 30, 20))
    message = _error(root, load_train=False)
    assert str(root / 'test/good/0.jpg') in message and '30x20' in message


def test_colmap_test_split_uses_the_first_registered_camera(colmap_capture):
    root, _, cams, images, _ = colmap_capture
    _colmap(root, cams, images)
    _write(root / 'test/good/0.png', _image(20))
    cap = load_capture(root)
    np.testing.assert_array_equal(cap.test[0].K, _K(36.0, 37.0, 19.0, 16.0))


def test_detection_forcing_and_the_folder_that_is_no_capture(tmp_path, nerfstudio,
                                                             colmap_capture):
    ns_root, _ = nerfstudio
    cm_root, _, cams, images, _ = colmap_capture
    _colmap(cm_root, cams, images)
    _colmap(ns_root, [('PINHOLE', [60.0, 60.0, 20.0, 15.0], W, H)],
            [('b.jpg', 1, _viewmat(0))])
    assert detect_format(ns_root) == 'transforms'
    forced = load_capture(ns_root, format='colmap')
    assert forced.format == 'colmap' and forced.skipped == 1
    np.testing.assert_array_equal(forced.K, _K(60.0, 60.0, 20.0, 15.0))
    assert 'transforms.json' in _error(cm_root, format='transforms')
    with pytest.raises(ValueError, match='format'):
        load_capture(ns_root, format='blender')
    empty = tmp_path / 'empty'
    empty.mkdir()
    message = _error(empty)
    assert str(empty) in message and 'no transforms.json' in message
    assert 'sparse/0' in message and 'sparse/' in message
    assert 'not a folder' in _error(tmp_path / 'missing')
    assert MadFormatError is CaptureFormatError
    with pytest.raises(MadFormatError):
        load_category(empty)
