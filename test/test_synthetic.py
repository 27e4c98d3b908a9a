"""Tests for the synthetic MAD-format generator and offline/make_synthetic.py."""
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from igspad_ros.core import cameras
from igspad_ros.data import mesh_render, synthetic
from igspad_ros.data.mad import load_category

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / 'offline' / 'make_synthetic.py'


def _silhouette(tris, viewmat, K, width, height):
    """Union of the projected triangles, filled by OpenCV (independent of our rasteriser)."""
    pix, depth = cameras.project_points(tris.reshape(-1, 3), viewmat, K)
    assert np.all(depth > 0)
    # OpenCV puts pixel centres on integers; ours are at +0.5. 4 fractional bits.
    polys = np.round((pix.reshape(-1, 3, 2) - 0.5) * 16).astype(np.int32)
    sil = np.zeros((height, width), np.uint8)
    for poly in polys:   # one by one: fillPoly on many overlapping polygons is even-odd
        cv2.fillConvexPoly(sil, poly, 1, lineType=cv2.LINE_8, shift=4)
    return sil.astype(bool)


def _dilate(mask):
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def _triangle_set(mesh):
    return {t.tobytes() for t in np.round(mesh.tris, 9)}


def test_fixture_train_views_look_at_origin(synthetic_category):
    cat = synthetic_category
    assert (cat.width, cat.height, cat.name) == (64, 64, 'brick')
    assert cat.camera_angle_x == pytest.approx(0.6911)
    assert cat.K[0, 0] == pytest.approx(32.0 / math.tan(0.6911 / 2))
    assert [v.index for v in cat.train] == list(range(210))
    for view in cat.train:
        pix, depth = cameras.project_points(np.zeros((1, 3)), view.viewmat, cat.K)
        np.testing.assert_allclose(pix[0], [32.0, 32.0], atol=1e-9)
        assert depth[0] == pytest.approx(3.5)
        assert view.image.shape == (64, 64, 3)
    # The object fills a good part of the view and leaves a white border.
    coverage = np.mean([np.mean(v.image.min(axis=2) < 0.98) for v in cat.train])
    assert 0.08 < coverage < 0.5
    assert np.all(cat.train[0].image[0] == 1.0)


def test_fixture_test_split_and_masks(synthetic_category):
    test = synthetic_category.test
    kinds = [t.defect_type for t in test]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        'good': 4, 'Burrs': 4, 'Missing': 4, 'Stains': 4}
    min_pixels = math.ceil(0.005 * 64 * 64)
    for t in test:
        if t.defect_type == 'good':
            assert not t.mask.any()
        else:
            assert t.mask.sum() >= min_pixels, t.rel_path
        assert t.true_viewmat is not None
        centre = cameras.camera_center(t.true_viewmat)
        radius = np.linalg.norm(centre)
        assert 3.2 <= radius <= 3.8
        elev = math.degrees(math.asin(centre[2] / radius))
        assert synthetic.ELEVATIONS_DEG[0] <= elev <= synthetic.ELEVATIONS_DEG[-1]
        # Off the training grid: no training camera within 0.5 degrees of rotation.
        nearest = min(cameras.rotation_error_deg(t.true_viewmat, v.viewmat)
                      for v in synthetic_category.train)
        assert nearest > 0.5


def test_masks_lie_on_projected_defect_geometry(synthetic_category):
    cat = synthetic_category
    bricks = synthetic.build_object(0)
    perfect = synthetic.object_mesh(bricks)
    samples = synthetic.make_test_samples(bricks, cat.K, 64, 64, 16, seed=0)
    loaded = {t.rel_path: t for t in cat.test}
    assert set(loaded) == {s.rel_path for s in samples}
    for s in samples:
        t = loaded[s.rel_path]
        # The regenerated sample is the file that was written.
        np.testing.assert_array_equal(np.round(t.image * 255).astype(np.uint8), s.image)
        np.testing.assert_array_equal(t.mask, s.mask)
        np.testing.assert_allclose(t.true_viewmat, s.viewmat, atol=1e-9)
        # The defect-free twin differs from the image on exactly the mask's pixels.
        np.testing.assert_array_equal(np.any(s.clean != s.image, axis=2), s.mask)
        if s.defect_type == 'good':
            assert not s.mask.any()
            continue
        if s.defect_type == 'Missing':
            gone = _triangle_set(s.mesh)
            region = perfect.tris[[tri.tobytes() not in gone
                                   for tri in np.round(perfect.tris, 9)]]
        elif s.defect_type == 'Burrs':
            region = s.mesh.tris[len(perfect.tris):]
            assert len(region) >= 8
        else:
            region = perfect.tris
        sil = _silhouette(region, t.true_viewmat, cat.K, 64, 64)
        assert np.all(_dilate(sil)[t.mask]), s.rel_path
        # The defect is not everywhere: the mask is a small part of the object.
        whole = _silhouette(perfect.tris, t.true_viewmat, cat.K, 64, 64)
        assert t.mask.sum() < 0.5 * whole.sum()


def test_stains_change_only_the_blotch_pixels():
    # 0.3 * 255 = 76.5 in float32: blending in float64 once rounded it up to 77 on every
    # pixel of such a colour, so whole faces far from the stain fell into its mask.
    rgb = np.full((64, 80, 3), 0.3, np.float32)
    cover = np.zeros((64, 80), np.float32)
    cover[8:56, 10:70] = 1.0
    painted = synthetic._paint_stains(rgb, cover, np.random.default_rng(3))
    changed = np.any(painted != synthetic._to_u8(rgb), axis=2)
    ys, xs = np.nonzero(changed)
    # at most three ellipses of 7 % x 5 % of the frame, painted near one object pixel
    assert 0 < changed.sum() < 0.12 * changed.size
    assert np.ptp(xs) < 0.45 * 80 and np.ptp(ys) < 0.45 * 64
    assert not changed[cover == 0].any()


def test_rasteriser_matches_projected_silhouette():
    mesh = synthetic.object_mesh(synthetic.build_object(3))
    K = cameras.intrinsics_from_fov(synthetic.CAMERA_ANGLE_X, 96, 96)
    viewmat = synthetic.train_viewmats()[37]
    rgb, cover = mesh_render.render_mesh(mesh, viewmat, K, 96, 96)
    sil = _silhouette(mesh.tris, viewmat, K, 96, 96)
    inside = cover > 0.5
    # OpenCV's fill takes every pixel an edge touches, so it may only be half a pixel wider.
    assert not np.any(inside & ~sil)
    assert not np.any(sil & ~_dilate(inside))
    assert (sil & ~inside).sum() < 0.1 * inside.sum()
    assert inside.sum() > 0.15 * 96 * 96
    assert np.all(rgb[~_dilate(sil)] == 1.0)
    # Flat Lambert faces: an interior pixel has exactly its face's shaded colour.
    shaded = mesh.colors * mesh_render.shade(mesh.normals)[:, None]
    inner = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    dist = np.abs(rgb[inner][:, None, :] - shaded[None]).max(axis=2).min(axis=1)
    assert np.median(dist) < 1e-6


def test_object_is_seeded_and_textured():
    def layout(bricks):
        return [(b.x, b.y, b.w, b.d, b.layer) for b in bricks]

    a = synthetic.build_object(0)
    assert layout(a) == layout(synthetic.build_object(0))
    assert layout(a) != layout(synthetic.build_object(1))
    mesh = synthetic.object_mesh(a)
    extent = np.ptp(mesh.tris.reshape(-1, 3), axis=0)
    assert 1.0 <= extent[:2].max() <= 1.5
    assert len(np.unique(mesh.colors, axis=0)) >= 3
    assert len(np.unique(np.round(mesh_render.shade(mesh.normals), 6))) >= 5


def test_train_subset_is_evenly_spread():
    full = synthetic.train_viewmats(210)
    sub = synthetic.train_viewmats(5)
    for v, k in zip(sub, (0, 52, 104, 157, 209)):
        np.testing.assert_array_equal(v, full[k])
    centres = np.array([cameras.camera_center(v) for v in full])
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 3.5)
    elev = np.degrees(np.arcsin(centres[:, 2] / 3.5)).reshape(14, 15)
    np.testing.assert_allclose(elev, np.repeat(synthetic.ELEVATIONS_DEG[:, None], 15, 1))


@pytest.mark.parametrize('kwargs, word', [
    ({'size': 0}, 'size'), ({'n_train': 211}, 'n_train'), ({'n_test': -1}, 'n_test'),
    ({'category': 'a/b'}, 'category'), ({'burr_scale': 5.0}, 'burr_scale')])
def test_make_category_rejects_bad_arguments(tmp_path, kwargs, word):
    with pytest.raises(synthetic.SyntheticConfigError, match=word):
        synthetic.make_category(tmp_path, **{'size': 32, **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_burr_scale_scales_the_burr_geometry():
    bricks = synthetic.build_object(0)
    n_perfect = len(synthetic.object_mesh(bricks).tris)
    viewmat = synthetic.train_viewmats(210)[100]

    def burr_area(scale):
        tris = synthetic._with_burrs(bricks, viewmat, np.random.default_rng(7), scale).tris
        extra = tris[n_perfect:]
        assert len(extra) >= 8
        return np.linalg.norm(np.cross(extra[:, 1] - extra[:, 0], extra[:, 2] - extra[:, 0]),
                              axis=1).sum()

    assert burr_area(2.0) == pytest.approx(4.0 * burr_area(1.0), rel=1e-9)


def test_make_category_refuses_existing_folder(tmp_path):
    (tmp_path / 'brick').mkdir()
    (tmp_path / 'brick' / 'keep.txt').write_text('user data')
    with pytest.raises(synthetic.SyntheticConfigError, match='not empty'):
        synthetic.make_category(tmp_path, size=32, n_train=2, n_test=0)
    assert [p.name for p in (tmp_path / 'brick').iterdir()] == ['keep.txt']


def _tool(*args):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_tool_writes_category_and_one_summary_line(tmp_path):
    result = _tool('--out', str(tmp_path), '--category', 'cli', '--size', '32',
                   '--n-train', '4', '--n-test', '8', '--seed', '2')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'wrote {tmp_path / "cli"}')
    assert '4 train + 8 test images' in lines[0]
    cat = load_category(tmp_path / 'cli')
    assert (len(cat.train), len(cat.test), cat.width) == (4, 8, 32)
    assert sorted(t.defect_type for t in cat.test) == ['Burrs'] * 2 + ['Missing'] * 2 + [
        'Stains'] * 2 + ['good'] * 2


def test_tool_bad_size_exits_2_with_one_line(tmp_path):
    result = _tool('--out', str(tmp_path), '--category', 'c', '--size', '0')
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'make_synthetic.py: error: size must be an integer in [16, 4096], got 0']
    assert result.stdout == '' and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('bad', [['--size', 'x'], ['--n-train', '0'], [], ['--out-is-file']])
def test_tool_user_errors_exit_2_with_one_line(tmp_path, capsys, bad, load_script):
    out = tmp_path / 'out'
    args = ['--out', str(out), '--category', 'c', '--size', '32', *bad]
    if bad == []:
        args.remove('--category')
        args.remove('c')
    if bad == ['--out-is-file']:
        out.write_text('not a folder')
        args.remove('--out-is-file')
    main = load_script('offline/make_synthetic.py').main
    try:
        status = main(args)
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    assert status == 2
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert 'error' in captured.err and captured.out == ''
