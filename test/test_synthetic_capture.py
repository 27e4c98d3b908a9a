"""Tests for the synthetic captures (transforms.json and COLMAP) and make_synthetic --format."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest

from igspad_ros.core import cameras, undistort
from igspad_ros.data import synthetic
from igspad_ros.data import synthetic_capture as sc
from igspad_ros.data.capture import load_capture
from igspad_ros.data.mesh_render import render_mesh

ROOT = Path(__file__).resolve().parents[1]
SIZE, N_TRAIN, N_TEST = 96, 16, 8
DEFECTS = ('Burrs', 'Missing', 'Stains')


@pytest.fixture(scope='module')
def capture(tmp_path_factory):
    """{format: folder} of one 96 px capture in both formats (16 views, 8 test images)."""
    out = tmp_path_factory.mktemp('capture')
    return sc.make_capture(out, 'brick', size=SIZE, n_train=N_TRAIN, n_test=N_TEST, seed=0)


@pytest.fixture(scope='module')
def mesh():
    """The seed-0 object's mesh, in the object frame."""
    return synthetic.object_mesh(synthetic.build_object(0))


def _read(path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


def _transforms(root):
    return json.loads((root / 'transforms.json').read_text())


def _colmap(root):
    return pycolmap.Reconstruction(str(root / 'sparse' / '0'))


def _object_viewmat(blender_c2w):
    """Viewmat in the object frame (where the mesh lives) of a capture-world c2w."""
    return cameras.blender_c2w_to_viewmat(blender_c2w) @ sc.OBJECT_TO_WORLD


def test_camera_is_4_3_distorted_with_a_covering_canvas():
    camera = sc.capture_camera(160)
    assert camera.size == (160, 120)
    K = camera.K
    assert K[1, 1] == pytest.approx(0.97 * K[0, 0])
    assert (K[0, 2], K[1, 2]) == pytest.approx((0.53 * 160, 0.47 * 120))
    k1, k2, p1, p2, _ = camera.distortion.coeffs
    assert (k1, k2) == (-0.12, 0.02) and max(abs(p1), abs(p2)) <= 0.002
    assert camera.maps.valid.all()
    assert camera.pinhole_size[0] > 160 and camera.pinhole_size[1] > 120


def test_files_written_and_identical_in_both_formats(capture):
    roots = capture
    assert {k: v.name for k, v in roots.items()} == {'transforms': 'brick',
                                                     'colmap': 'brick_colmap'}
    tf, cm = roots['transforms'], roots['colmap']
    names = sorted(p.name for p in (tf / 'images').iterdir())
    assert names == [f'frame_{n:05d}.jpg' for n in range(N_TRAIN)]
    assert sorted(p.name for p in (cm / 'images').iterdir()) == names
    tests = sorted(str(p.relative_to(tf)) for p in (tf / 'test').glob('*/*'))
    assert tests == sorted(f'test/{k}/{n}.jpg' for k in synthetic.DEFECT_TYPES for n in (0, 1))
    masks = sorted(str(p.relative_to(tf)) for p in (tf / 'ground_truth').glob('*/*'))
    assert masks == sorted(f'ground_truth/{k}/{n}_mask.png' for k in DEFECTS for n in (0, 1))
    assert sorted(json.loads((tf / 'test_poses.json').read_text())) == tests
    for rel in [f'images/{n}' for n in names] + tests + masks + ['test_poses.json']:
        data = (tf / rel).read_bytes()
        assert data == (cm / rel).read_bytes(), rel
        if rel.endswith('.jpg'):
            assert data[:3] == b'\xff\xd8\xff', rel
            assert _read(tf / rel).shape == (72, 96, 3), rel
    assert not (tf / 'sparse').exists() and not (cm / 'transforms.json').exists()
    assert sorted(p.name for p in (cm / 'sparse' / '0').iterdir()) == [
        'cameras.bin', 'frames.bin', 'images.bin', 'points3D.bin', 'rigs.bin']


def test_transforms_json_camera_and_frames(capture):
    meta = _transforms(capture['transforms'])
    camera = sc.capture_camera(SIZE)
    assert meta['camera_model'] == 'OPENCV' and (meta['w'], meta['h']) == (96, 72)
    assert meta['fl_x'] == camera.K[0, 0] and meta['fl_y'] == camera.K[1, 1] != meta['fl_x']
    # nerfstudio's principal point is pixel-edge, as K's: written as it is
    assert (meta['cx'], meta['cy']) == (camera.K[0, 2], camera.K[1, 2])
    assert [meta[k] for k in ('k1', 'k2', 'p1', 'p2')] == list(camera.distortion.coeffs[:4])
    assert [f['file_path'] for f in meta['frames']] == [
        f'images/frame_{n:05d}.jpg' for n in range(N_TRAIN)]
    for frame, viewmat in zip(meta['frames'], synthetic.train_viewmats(N_TRAIN)):
        np.testing.assert_allclose(_object_viewmat(frame['transform_matrix']), viewmat,
                                   atol=1e-12)


def test_capture_world_is_not_the_object_frame(capture):
    """The cameras look at a point off the world origin, and the world's z is not up."""
    meta = _transforms(capture['transforms'])
    target = sc.OBJECT_TO_WORLD[:3, 3]
    assert np.linalg.norm(target) > 0.1
    tilt = np.degrees(np.arccos(sc.OBJECT_TO_WORLD[2, 2]))
    assert 5.0 < tilt < 20.0
    for frame in meta['frames']:
        viewmat = cameras.blender_c2w_to_viewmat(frame['transform_matrix'])
        cam = viewmat[:3, :3] @ target + viewmat[:3, 3]
        np.testing.assert_allclose(cam[:2], 0.0, atol=1e-9)


def test_colmap_model_has_the_transforms_cameras(capture):
    roots = capture
    meta = _transforms(roots['transforms'])
    rec = _colmap(roots['colmap'])
    assert (rec.num_cameras(), rec.num_reg_images()) == (1, N_TRAIN)
    cam = rec.cameras[1]
    assert cam.model_name == 'OPENCV' and (cam.width, cam.height) == (meta['w'], meta['h'])
    # COLMAP's and nerfstudio's principal points are both pixel-edge: the same numbers
    np.testing.assert_allclose(cam.params, [meta['fl_x'], meta['fl_y'], meta['cx'],
                                            meta['cy'], meta['k1'], meta['k2'],
                                            meta['p1'], meta['p2']], rtol=0, atol=1e-9)
    images = sorted(rec.images.values(), key=lambda im: im.image_id)
    assert [f'images/{im.name}' for im in images] == [f['file_path'] for f in meta['frames']]
    for image, frame in zip(images, meta['frames']):
        viewmat = cameras.blender_c2w_to_viewmat(frame['transform_matrix'])
        np.testing.assert_allclose(image.cam_from_world().matrix(), viewmat[:3], atol=1e-9)


def test_colmap_points_lie_on_the_object_and_show_its_colours(capture, mesh):
    root = capture['colmap']
    rec = _colmap(root)
    assert rec.num_points3D() > 1000
    photos = {im.image_id: _read(root / 'images' / im.name) for im in rec.images.values()}
    lo, hi = mesh.tris.reshape(-1, 3).min(0), mesh.tris.reshape(-1, 3).max(0)
    world_from_object = np.linalg.inv(sc.OBJECT_TO_WORLD)
    gaps, errors = [], []
    for point in rec.points3D.values():
        assert point.track.length() >= 2
        xyz = world_from_object[:3, :3] @ point.xyz + world_from_object[:3, 3]
        assert np.all(xyz >= lo - 1e-9) and np.all(xyz <= hi + 1e-9)
        for el in point.track.elements:
            image = rec.images[el.image_id]
            xy = image.points2D[el.point2D_idx].xy
            errors.append(np.abs(image.project_point(point.xyz) - xy).max())
            col, row = np.floor(xy).astype(int)
            gaps.append(np.abs(photos[el.image_id][row, col].astype(int) - point.color).max())
    # pycolmap's own projection puts each point on its keypoint: same lens, same convention
    assert max(errors) < 1e-9
    # a keypoint shows its point's colour (edges and JPEG aside)
    assert np.median(gaps) <= 6


def test_undistorted_training_image_matches_pinhole_render(capture, mesh):
    """Undistorting a written photo at the same K gives the pinhole render, to JPEG noise.

    Measured over the 16 views at 96 px: mean absolute difference 0.0079 (at most 0.0097
    per view; JPEG q95 alone accounts for about 0.006), mean phase-correlation shift 0.013
    px (at most 0.089 per view). A principal point off by half a pixel reads 0.0129 and a
    0.42 px shift.
    """
    root = capture['transforms']
    camera = sc.capture_camera(SIZE)
    maps = undistort.undistortion_maps(camera.K, camera.distortion, camera.size)
    assert maps.valid.all()
    diffs, shifts = [], []
    for frame in _transforms(root)['frames']:
        photo = _read(root / frame['file_path']).astype(np.float32) / 255.0
        pinhole = undistort.remap(photo, maps)
        ref = render_mesh(mesh, _object_viewmat(frame['transform_matrix']), camera.K,
                          *camera.size)[0]
        diffs.append(np.abs(pinhole - ref).mean())
        shifts.append(cv2.phaseCorrelate(ref.mean(2).astype(np.float64),
                                         pinhole.mean(2).astype(np.float64))[0])
    assert np.mean(diffs) < 0.0095 and max(diffs) < 0.012
    assert np.abs(np.mean(shifts, 0)).max() < 0.04 and np.abs(shifts).max() < 0.15


def test_test_split_masks_and_poses(capture, mesh):
    root = capture['transforms']
    camera = sc.capture_camera(SIZE)
    maps = undistort.undistortion_maps(camera.K, camera.distortion, camera.size)
    poses = json.loads((root / 'test_poses.json').read_text())
    for rel, c2w in poses.items():
        kind, stem = Path(rel).parent.name, Path(rel).stem
        image = _read(root / rel)
        if kind == 'good':
            # the test camera is the capture's: a good photo undistorts to the pinhole render
            ref = render_mesh(mesh, _object_viewmat(c2w), camera.K, *camera.size)[0]
            assert np.abs(undistort.remap(image / 255.0, maps) - ref).mean() < 0.012, rel
            continue
        mask = _read(root / 'ground_truth' / kind / f'{stem}_mask.png')
        assert mask.shape == (72, 96) and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 255}, rel
        assert (mask > 0).sum() >= 6, rel


@pytest.mark.parametrize('size', [None, 64])
def test_both_formats_load_to_identical_cameras_and_test_splits(capture, mesh, size):
    tf = load_capture(capture['transforms'], size=size)
    cm = load_capture(capture['colmap'], size=size)
    assert (tf.format, cm.format) == ('transforms', 'colmap')
    assert (tf.width, tf.height) == (cm.width, cm.height) == (size or 96, (size or 96) * 3 // 4)
    np.testing.assert_allclose(tf.K, cm.K, rtol=0, atol=1e-9)
    assert len(tf.train) == len(cm.train) == N_TRAIN and cm.skipped == 0
    for a, b in zip(tf.train, cm.train):
        assert a.path.name == b.path.name
        np.testing.assert_allclose(a.K, b.K, rtol=0, atol=1e-9)
        np.testing.assert_allclose(a.viewmat, b.viewmat, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(a.image, b.image)
    assert [t.rel_path for t in tf.test] == [t.rel_path for t in cm.test]
    assert len(tf.test) == N_TEST
    for a, b in zip(tf.test, cm.test):
        assert a.defect_type == b.defect_type and a.mask.any() == (a.defect_type != 'good')
        np.testing.assert_allclose(a.K, b.K, rtol=0, atol=1e-9)
        np.testing.assert_allclose(a.true_viewmat, b.true_viewmat, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
    # Loaded views are the pinhole the readers promise, a render at their K and pose: mean
    # absolute difference measured 0.0079 at full size, 0.0114 downscaled to 64 px.
    diffs = [np.abs(v.image - render_mesh(mesh, v.viewmat @ sc.OBJECT_TO_WORLD, v.K, tf.width,
                                          tf.height)[0]).mean() for v in tf.train]
    assert np.mean(diffs) < {None: 0.0095, 64: 0.013}[size]


def test_make_capture_one_format_and_refusals(tmp_path):
    roots = sc.make_capture(tmp_path, 'only', size=32, n_train=2, n_test=0,
                            formats=('colmap',))
    assert list(roots) == ['colmap'] and sorted(p.name for p in tmp_path.iterdir()) == [
        'only_colmap']
    assert _colmap(roots['colmap']).num_reg_images() == 2
    with pytest.raises(synthetic.SyntheticConfigError, match='not empty'):
        sc.make_capture(tmp_path, 'only', size=32, n_train=2, n_test=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['only_colmap']
    for bad in ((), ('mad',), ('colmap', 'colmap')):
        with pytest.raises(synthetic.SyntheticConfigError, match='formats'):
            sc.make_capture(tmp_path, 'x', size=32, n_train=2, n_test=0, formats=bad)
    with pytest.raises(synthetic.SyntheticConfigError, match='size'):
        sc.make_capture(tmp_path, 'x', size=8, n_train=2, n_test=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['only_colmap']


def _tool(load_script, capsys, *args):
    main = load_script('offline/make_synthetic.py').main
    try:
        status = main(list(args))
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_tool_writes_both_formats_with_one_summary_line(tmp_path, capsys, load_script):
    status, out, err = _tool(load_script, capsys, '--out', str(tmp_path), '--category', 'cap',
                             '--size', '48', '--n-train', '3', '--n-test', '4',
                             '--format', 'both')
    assert status == 0, err
    assert out.splitlines() == [out.strip()] and out.startswith(
        f'wrote {tmp_path / "cap"} and {tmp_path / "cap_colmap"}: 3 train + 4 test images '
        '(1 Burrs, 1 Missing, 1 Stains, 1 good) at 48x36 in ')
    assert len(_transforms(tmp_path / 'cap')['frames']) == 3
    assert _colmap(tmp_path / 'cap_colmap').num_reg_images() == 3


def test_tool_default_format_is_the_unchanged_mad_category(tmp_path, capsys, load_script):
    args = ('--size', '32', '--n-train', '3', '--n-test', '4', '--seed', '1')
    status, out, err = _tool(load_script, capsys, '--out', str(tmp_path / 'tool'),
                             '--category', 'c', *args)
    assert status == 0, err
    assert out.startswith(f'wrote {tmp_path / "tool" / "c"}: 3 train + 4 test images '
                          '(1 Burrs, 1 Missing, 1 Stains, 1 good) at 32x32 in ')
    assert _tool(load_script, capsys, '--out', str(tmp_path / 'mad'), '--category', 'c',
                 '--format', 'mad', *args)[0] == 0
    direct = synthetic.make_category(tmp_path / 'direct', 'c', size=32, n_train=3, n_test=4,
                                     seed=1)
    files = sorted(p.relative_to(direct) for p in direct.rglob('*') if p.is_file())
    for other in (tmp_path / 'tool' / 'c', tmp_path / 'mad' / 'c'):
        assert sorted(p.relative_to(other) for p in other.rglob('*') if p.is_file()) == files
        for rel in files:
            assert (other / rel).read_bytes() == (direct / rel).read_bytes(), rel


@pytest.mark.parametrize('bad', [['--format', 'ply'], ['--size', '4'], ['--out-is-file']])
def test_tool_capture_user_errors_exit_2_with_one_line(tmp_path, capsys, load_script, bad):
    out = tmp_path / 'out'
    if bad == ['--out-is-file']:
        out.write_text('not a folder')
        bad = []
    status, stdout, err = _tool(load_script, capsys, '--out', str(out), '--category', 'c',
                                '--size', '32', '--format', 'colmap', *bad)
    assert status == 2 and stdout == ''
    assert len(err.strip().splitlines()) == 1 and 'error' in err, err


def test_tool_runs_as_a_script(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / 'offline' / 'make_synthetic.py'),
                             '--out', str(tmp_path), '--category', 'c', '--size', '32',
                             '--n-train', '2', '--n-test', '0', '--format', 'transforms'],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f'wrote {tmp_path / "c"}: 2 train + 0 test images () '
                                    'at 32x24 in ')
