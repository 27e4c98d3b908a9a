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
from igspad_ros.data.room import ROOM_HALF, TABLE_THICKNESS

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
    for point in rec.points3D.values():
        xyz = world_from_object[:3, :3] @ point.xyz + world_from_object[:3, 3]
        assert np.all(xyz >= lo - 1e-9) and np.all(xyz <= hi + 1e-9)
    errors, gaps = _track_errors_and_colour_gaps(rec, photos)
    # pycolmap's own projection puts each point on its keypoint: same lens, same convention
    assert max(errors) < 1e-9
    # a keypoint shows its point's colour (edges and JPEG aside)
    assert np.median(gaps) <= 6


def _track_errors_and_colour_gaps(rec, photos):
    """Per track element: reprojection error (px) and |photo colour - point colour| (8 bit).

    Every point must be seen by two views at least, as SfM triangulates.
    """
    errors, gaps = [], []
    for point in rec.points3D.values():
        assert point.track.length() >= 2
        for el in point.track.elements:
            image = rec.images[el.image_id]
            xy = image.points2D[el.point2D_idx].xy
            errors.append(np.abs(image.project_point(point.xyz) - xy).max())
            col, row = np.floor(xy).astype(int)
            gaps.append(np.abs(photos[el.image_id][row, col].astype(int) - point.color).max())
    return errors, gaps


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


HARD_SIZE, HARD_TRAIN, HARD_TEST, HARD_SEED = 64, 10, 8, 1
NOISE = (1.0, 0.01)


@pytest.fixture(scope='module')
def room_captures(tmp_path_factory):
    """Two 64 px seed-1 captures in the room: 'room' as is, 'hard' with exposure and noise."""
    out = tmp_path_factory.mktemp('room')
    args = dict(size=HARD_SIZE, n_train=HARD_TRAIN, n_test=HARD_TEST, seed=HARD_SEED,
                background='room')
    return {'room': sc.make_capture(out, 'room', **args),
            'hard': sc.make_capture(out, 'hard', exposure=0.2, pose_noise=NOISE, **args)}


def _photos(root):
    rels = sorted(str(p.relative_to(root)) for p in root.glob('images/*.jpg'))
    rels += sorted(str(p.relative_to(root)) for p in root.glob('test/*/*.jpg'))
    return {rel: _read(root / rel) for rel in rels}


def _block_std(image):
    """Grey-level standard deviations of the image's 8x8 pixel blocks."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    h, w = (n // 8 * 8 for n in grey.shape)
    return grey[:h, :w].reshape(h // 8, 8, w // 8, 8).std(axis=(1, 3))


def test_room_leaves_no_white_and_is_textured(room_captures, capture):
    photos = _photos(room_captures['room']['transforms'])
    assert len(photos) == HARD_TRAIN + HARD_TEST
    for rel, image in photos.items():
        assert image.shape == (48, 64, 3), rel
        assert not np.all(image >= 255, axis=2).any(), rel
    # Texture everywhere: over the photos, the 8x8 blocks' grey std has a 10th percentile
    # of 2.8 at least (median 11.7 at least) in the room, 0.0 on white (median 8.0 at most).
    room = [_block_std(image) for image in photos.values()]
    white = [_block_std(image) for image in _photos(capture['transforms']).values()]
    assert min(np.percentile(b, 10) for b in room) > 2.0
    assert min(np.median(b) for b in room) > 9.0
    assert max(np.percentile(b, 10) for b in white) < 0.5


def test_canvas_frame_is_what_the_photo_shows():
    camera = sc.capture_camera(48)
    frame = camera.frame
    w, h = camera.pinhole_size
    assert frame.shape == (h, w) and 0.5 < frame.mean() < 1.0
    canvas = np.full((h, w, 3), 0.5, np.float32)
    outside = canvas.copy()
    outside[~frame] = 0.0
    np.testing.assert_array_equal(camera.photo(outside), camera.photo(canvas))
    # every frame pixel reaches the photo
    ys, xs = np.nonzero(frame)
    for i in np.linspace(0, len(ys) - 1, 25).astype(int):
        inside = canvas.copy()
        inside[ys[i], xs[i]] = 1.0
        assert np.any(camera.photo(inside) != camera.photo(canvas)), (ys[i], xs[i])


def test_room_defects_show_inside_the_frame():
    """With only a central window shown, every defect changes enough pixels inside it."""
    camera = sc.capture_camera(HARD_SIZE)
    w, h = camera.pinhole_size
    frame = np.zeros((h, w), bool)
    frame[h // 4:3 * h // 4, w // 4:3 * w // 4] = True
    bricks = synthetic.build_object(HARD_SEED)
    room = sc.room_mesh(synthetic.object_mesh(bricks), HARD_SEED)
    samples = list(sc.test_samples_in_room(room, bricks, camera.pinhole_K, w, h, 8,
                                           HARD_SEED, frame=frame))
    need = synthetic.min_defect_pixels(w, h)
    shown = [int((s.mask & frame).sum()) for s in samples if s.defect_type != 'good']
    assert len(shown) == 6 and min(shown) >= need, (shown, need)


def test_room_masks_are_the_changed_pixels_on_the_object(room_captures):
    """Masks and test poses of the hard capture, rebuilt from the same seed and gains."""
    root = room_captures['hard']['transforms']
    camera = sc.capture_camera(HARD_SIZE)
    bricks = synthetic.build_object(HARD_SEED)
    perfect = synthetic.object_mesh(bricks)
    room = sc.room_mesh(perfect, HARD_SEED)
    gains = json.loads((root / 'photometric.json').read_text())
    poses = json.loads((root / 'test_poses.json').read_text())
    samples = list(sc.test_samples_in_room(room, bricks, camera.pinhole_K,
                                           *camera.pinhole_size, HARD_TEST, HARD_SEED,
                                           frame=camera.frame))
    assert [str(Path(s.rel_path).with_suffix('.jpg')) for s in samples] == list(poses)
    kinds = [s.defect_type for s in samples]
    assert kinds == list(synthetic.DEFECT_TYPES) * 2
    world_from_object = np.linalg.inv(sc.OBJECT_TO_WORLD)
    jpeg = []
    for sample in samples:
        rel = str(Path(sample.rel_path).with_suffix('.jpg'))
        # every test camera looks from above the table top, the object in full view
        assert cameras.camera_center(sample.viewmat)[2] > room.table_top, rel
        np.testing.assert_allclose(poses[rel], cameras.viewmat_to_blender_c2w(
            sample.viewmat @ world_from_object), atol=1e-12)
        image = camera.photo(sample.image / 255.0, gains[rel])
        jpeg.append(np.abs(image.astype(int) - _read(root / rel)).mean())
        if sample.defect_type == 'good':
            assert not (root / 'ground_truth' / 'good').exists()
            continue
        mask = _read(root / 'ground_truth' / sample.defect_type
                     / f'{Path(rel).stem}_mask.png') > 0
        np.testing.assert_array_equal(
            mask, np.any(image != camera.photo(sample.clean / 255.0, gains[rel]), axis=2))
        assert mask.sum() >= 6, rel
        # ... and on the object: inside its silhouette (perfect or defective), 1 px spread
        cover = np.maximum(*(render_mesh(m, sample.viewmat, camera.pinhole_K,
                                         *camera.pinhole_size)[1]
                             for m in (perfect, sample.mesh)))
        silhouette = undistort.remap(np.repeat(cover[..., None], 3, 2).astype(np.float32),
                                     camera.maps)[..., 0] > 0
        assert not (mask & ~cv2.dilate(silhouette.astype(np.uint8), np.ones((3, 3)))).any()
    # the rebuilt photos are the written ones, to JPEG q95 noise on 3-5 px texture cells
    # (mean absolute difference measured 3.5-4.8 grey levels; another view reads 30+)
    assert max(jpeg) < 6.0


def test_exposure_gains_are_the_ratio_to_the_gain_free_photo(tmp_path, capture):
    root = sc.make_capture(tmp_path, 'brick', size=SIZE, n_train=N_TRAIN, n_test=N_TEST,
                           seed=0, formats=('transforms',), exposure=0.2)['transforms']
    gains = json.loads((root / 'photometric.json').read_text())
    plain = _photos(capture['transforms'])
    assert sorted(gains) == sorted(plain)
    exposure, balance, ratios = [], [], []
    for rel, (r, g, b) in gains.items():
        exposure.append(np.mean((r, g, b)))
        balance.append(max(r, g, b) / min(r, g, b))
        photo, ref = _read(root / rel).astype(float), plain[rel].astype(float)
        # the object's unsaturated pixels (the white background is 255 without gains)
        ok = np.all((ref > 40) & (ref < 215) & (photo < 250), axis=2)
        assert ok.sum() > 200, rel
        ratio = np.median(photo[ok] / ref[ok], axis=0)
        ratios.append(np.abs(ratio - (r, g, b)).max())
        # measured within 0.014 of the recorded gains, 0.0085 on average (JPEG q95 with
        # subsampled chroma on both photos)
        np.testing.assert_allclose(ratio, (r, g, b), atol=0.02, err_msg=rel)
    assert np.mean(ratios) < 0.011
    # exposure within [0.8, 1.2] (white balance moves the mean a little) and used widely;
    # channels apart by the white balance, at most 1.05 / 0.95
    assert 0.78 <= min(exposure) and max(exposure) <= 1.22 and np.ptp(exposure) > 0.15
    assert 1.02 < max(balance) <= 1.05 / 0.95 + 1e-9
    assert not (capture['transforms'] / 'photometric.json').exists()


def test_pose_noise_is_exactly_the_asked_magnitudes(room_captures):
    roots = room_captures['hard']
    true = json.loads((roots['transforms'] / 'train_poses_true.json').read_text())
    assert list(true) == [f'images/frame_{n:05d}.jpg' for n in range(HARD_TRAIN)]
    centre = sc.OBJECT_TO_WORLD[:3, 3]
    for fmt, root in roots.items():
        views = load_capture(root, load_test=False).train
        assert len(views) == HARD_TRAIN
        axes = []
        for view in views:
            viewmat = cameras.blender_c2w_to_viewmat(true[f'images/{view.path.name}'])
            np.testing.assert_allclose(viewmat @ sc.OBJECT_TO_WORLD,
                                       synthetic.train_viewmats(HARD_TRAIN)[view.index],
                                       atol=1e-12)
            angle = cameras.rotation_error_deg(view.viewmat, viewmat)
            assert angle == pytest.approx(1.0, abs=1e-6)
            shift = cameras.camera_center(view.viewmat) - cameras.camera_center(viewmat)
            distance = np.linalg.norm(cameras.camera_center(viewmat) - centre)
            assert np.linalg.norm(shift) / distance == pytest.approx(0.01, abs=1e-9)
            axes.append(shift / np.linalg.norm(shift))
        # random directions, not one offset for all
        assert np.abs(np.array(axes) @ axes[0])[1:].min() < 0.9, fmt
    assert not (room_captures['room']['transforms'] / 'train_poses_true.json').exists()


def test_room_points3d_cover_the_background(room_captures):
    rec = _colmap(room_captures['room']['colmap'])
    room = sc.room_mesh(synthetic.object_mesh(synthetic.build_object(HARD_SEED)), HARD_SEED)
    world_from_object = np.linalg.inv(sc.OBJECT_TO_WORLD)
    xyz = np.array([p.xyz for p in rec.points3D.values()]) @ world_from_object[:3, :3].T \
        + world_from_object[:3, 3]
    on_table = np.abs(xyz[:, 2] - room.table_top) < 1e-9
    on_room = np.abs(xyz).max(1) > ROOM_HALF - 1e-9
    under = np.abs(xyz[:, 2] - room.table_top + TABLE_THICKNESS) < 1e-9
    on_object = np.all(np.abs(xyz) < 0.7, axis=1) & ~on_table
    assert np.all(on_table | under | on_room | on_object)
    # measured 1615 on the table top, 23 on the walls, floor and ceiling (seen twice by
    # ten views: at 160 px, 120 views, 3600 of 12000), 1428 on the object, 132 beneath
    assert on_table.sum() > 1200 and on_room.sum() > 15 and on_object.sum() > 1200
    assert under.sum() > 50
    photos = {im.image_id: _read(room_captures['room']['colmap'] / 'images' / im.name)
              for im in rec.images.values()}
    errors, gaps = _track_errors_and_colour_gaps(rec, photos)
    assert max(errors) < 1e-9
    # a keypoint shows its point's colour: measured median 11 on these 64 px photos, whose
    # texture cells are 1-2 px wide (a pixel mixes neighbouring cells; JPEG)
    assert np.median(gaps) <= 14


def test_hardening_options_are_range_checked(tmp_path):
    for bad in (dict(background='sky'), dict(exposure=0.6), dict(exposure=-0.1),
                dict(pose_noise=(1.0,)), dict(pose_noise=(45.0, 0.0)),
                dict(pose_noise=(1.0, -0.01))):
        with pytest.raises(synthetic.SyntheticConfigError, match=next(iter(bad))):
            sc.make_capture(tmp_path, 'x', size=32, n_train=2, n_test=0, **bad)
    assert list(tmp_path.iterdir()) == []


def test_tool_passes_the_hardening_options(tmp_path, capsys, load_script):
    status, out, err = _tool(load_script, capsys, '--out', str(tmp_path), '--category', 'c',
                             '--size', '32', '--n-train', '2', '--n-test', '4', '--seed', '1',
                             '--format', 'transforms', '--background', 'room',
                             '--exposure', '0.1', '--pose-noise', '2,0.05')
    assert status == 0, err
    root = tmp_path / 'c'
    gains = json.loads((root / 'photometric.json').read_text())
    assert len(gains) == 6 and all(0.85 < g < 1.15 for v in gains.values() for g in v)
    true = json.loads((root / 'train_poses_true.json').read_text())
    for frame in _transforms(root)['frames']:
        written = cameras.blender_c2w_to_viewmat(frame['transform_matrix'])
        true_viewmat = cameras.blender_c2w_to_viewmat(true[frame['file_path']])
        assert cameras.rotation_error_deg(written, true_viewmat) == pytest.approx(2.0)
    assert not np.all(_read(root / 'images' / 'frame_00000.jpg') >= 255, axis=2).any()


@pytest.mark.parametrize('bad', [['--background', 'room'], ['--exposure', '0.2'],
                                 ['--pose-noise', '1,0.01'], ['--format', 'colmap',
                                                              '--pose-noise', '1']])
def test_tool_refuses_hardening_misuse_with_one_line(tmp_path, capsys, load_script, bad):
    status, stdout, err = _tool(load_script, capsys, '--out', str(tmp_path), '--category', 'c',
                                '--size', '32', '--n-train', '2', '--n-test', '0', *bad)
    assert status == 2 and stdout == ''
    assert len(err.strip().splitlines()) == 1 and 'error' in err, err
    if '--format' not in bad:
        assert f'{bad[0]} applies to the capture formats' in err, err
    assert list(tmp_path.iterdir()) == []
