"""Tests of GaussianScene: the 3DGS PLY layout, foreign and corrupt files, sidecars."""
import json

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from igspad_ros.core.scene import (GaussianScene, PlyFormatError, SceneMetaError,
                                   read_scene_meta, sidecar_path, write_scene_meta)


def _scene(n=50, degree=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return GaussianScene(means=torch.randn(n, 3, generator=g),
                         quats=torch.randn(n, 4, generator=g),
                         log_scales=torch.randn(n, 3, generator=g) - 3,
                         opacity_logits=torch.randn(n, generator=g),
                         sh=torch.randn(n, k, 3, generator=g))


@pytest.mark.parametrize('degree', [0, 1, 3])
def test_ply_write_read_is_exact(tmp_path, degree):
    scene = _scene(degree=degree)
    scene.save_ply(tmp_path / 'scene.ply')
    loaded = GaussianScene.load_ply(tmp_path / 'scene.ply')
    assert loaded.n == 50 and loaded.sh_degree == degree
    for key, value in scene.tensors().items():
        assert torch.equal(loaded.tensors()[key], value), key


def test_ply_layout_is_the_3dgs_one(tmp_path):
    scene = _scene(n=4, degree=1)
    scene.sh.zero_()
    scene.sh[:, 1, 0] = 1.0     # red, first non-DC coefficient
    scene.sh[:, 2, 1] = 2.0     # green, second
    scene.sh[:, 3, 2] = 3.0     # blue, third
    scene.save_ply(tmp_path / 'scene.ply')
    raw = (tmp_path / 'scene.ply').read_bytes()
    assert raw.startswith(b'ply\nformat binary_little_endian 1.0\n')
    ply = PlyData.read(str(tmp_path / 'scene.ply'))
    names = [p.name for p in ply['vertex'].properties]
    assert names == (['x', 'y', 'z', 'nx', 'ny', 'nz', 'f_dc_0', 'f_dc_1', 'f_dc_2']
                     + [f'f_rest_{i}' for i in range(9)]
                     + ['opacity', 'scale_0', 'scale_1', 'scale_2',
                        'rot_0', 'rot_1', 'rot_2', 'rot_3'])
    v = ply['vertex'].data
    # Channel-major f_rest: R coefficients 0..2, then G 3..5, then B 6..8.
    rest = np.stack([v[f'f_rest_{i}'] for i in range(9)], 1)[0]
    np.testing.assert_array_equal(rest, [1, 0, 0, 0, 2, 0, 0, 0, 3])
    np.testing.assert_array_equal(v['rot_0'], scene.quats[:, 0].numpy())
    np.testing.assert_array_equal(v['opacity'], scene.opacity_logits.numpy())
    assert len(raw) == raw.index(b'end_header\n') + 11 + 4 * 4 * 26


def test_foreign_layouts_load(tmp_path):
    # Another exporter's file: extra properties, a different order, big endian, no normals.
    n, rng = 6, np.random.default_rng(1)
    names = (['opacity'] + [f'rot_{i}' for i in range(4)] + ['x', 'y', 'z', 'red']
             + [f'scale_{i}' for i in range(3)] + [f'f_dc_{i}' for i in range(3)]
             + [f'f_rest_{i}' for i in range(9)])
    values = {name: rng.normal(size=n).astype(np.float32) for name in names}
    vertex = np.empty(n, dtype=[(name, '>f4') for name in names])
    for name in names:
        vertex[name] = values[name]
    path = tmp_path / 'foreign.ply'
    PlyData([PlyElement.describe(vertex, 'vertex')], byte_order='>').write(str(path))
    scene = GaussianScene.load_ply(path)
    assert scene.sh_degree == 1
    np.testing.assert_array_equal(scene.means[:, 1].numpy(), values['y'])
    np.testing.assert_array_equal(scene.quats[:, 3].numpy(), values['rot_3'])
    np.testing.assert_array_equal(scene.sh[:, 2, 1].numpy(), values['f_rest_4'])
    np.testing.assert_array_equal(scene.sh[:, 3, 2].numpy(), values['f_rest_8'])
    # The same in ASCII.
    PlyData([PlyElement.describe(vertex, 'vertex')], text=True).write(str(path))
    assert torch.equal(GaussianScene.load_ply(path).sh, scene.sh)


def test_gsplat_export_loads(tmp_path):
    # gsplat's own exporter (no normals, shN flattened channel-major) reads back exactly.
    from gsplat.exporter import export_splats
    scene = _scene(n=30, degree=2)
    export_splats(scene.means, scene.log_scales, scene.quats, scene.opacity_logits,
                  scene.sh[:, :1], scene.sh[:, 1:], format='ply', save_to=str(tmp_path / 'g.ply'))
    loaded = GaussianScene.load_ply(tmp_path / 'g.ply')
    for key, value in scene.tensors().items():
        assert torch.equal(loaded.tensors()[key], value), key


def _write_header(path, header, body=b''):
    path.write_bytes(header.encode('ascii') + body)
    return path


@pytest.mark.parametrize('case, match', [
    ('garbage', 'not a PLY'),
    ('truncated', 'claims'),
    ('huge', 'claims'),
    ('mesh', 'missing properties'),
    ('nan', 'non-finite'),
    ('rest', 'f_rest'),
    ('empty', 'no Gaussians'),
])
def test_corrupt_or_foreign_ply_is_a_clear_error(tmp_path, case, match):
    path = tmp_path / 'bad.ply'
    if case == 'garbage':
        path.write_bytes(b'\x00\x01not a ply at all' * 10)
    elif case in ('truncated', 'nan', 'empty'):
        scene = _scene(n=0 if case == 'empty' else 20, degree=0)
        if case == 'nan':
            scene.means[3, 1] = float('nan')
        scene.save_ply(path)
        if case == 'truncated':
            path.write_bytes(path.read_bytes()[:-100])
    elif case == 'huge':
        _write_header(path, 'ply\nformat binary_little_endian 1.0\nelement vertex 19000000\n'
                      'property float x\nproperty float y\nproperty float z\nend_header\n',
                      b'\x00' * 64)
    elif case == 'mesh':
        vertex = np.zeros(3, dtype=[('x', '<f4'), ('y', '<f4'), ('z', '<f4')])
        PlyData([PlyElement.describe(vertex, 'vertex')]).write(str(path))
    elif case == 'rest':
        names = ['x', 'y', 'z', 'f_dc_0', 'f_dc_1', 'f_dc_2', 'opacity'] + \
            [f'scale_{i}' for i in range(3)] + [f'rot_{i}' for i in range(4)] + \
            [f'f_rest_{i}' for i in range(6)]
        vertex = np.zeros(2, dtype=[(name, '<f4') for name in names])
        PlyData([PlyElement.describe(vertex, 'vertex')]).write(str(path))
    with pytest.raises(PlyFormatError, match=match) as err:
        GaussianScene.load_ply(path)
    assert str(path) in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PlyFormatError, match='cannot read'):
        GaussianScene.load_ply(tmp_path / 'absent.ply')


def test_from_points_sets_colour_and_shape():
    points = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    scene = GaussianScene.from_points(points, np.full((4, 3), 0.5), sh_degree=2, opacity=0.2)
    assert scene.sh.shape == (4, 9, 3) and scene.sh_degree == 2
    assert torch.equal(scene.sh, torch.zeros(4, 9, 3))      # DC 0 gives colour 0.5
    assert torch.sigmoid(scene.opacity_logits[0]).item() == pytest.approx(0.2)
    # Isotropic scale = mean distance to the 3 nearest neighbours.
    expected = (1 + 2 * np.sqrt(2)) / 3
    assert torch.exp(scene.log_scales[1]).numpy() == pytest.approx([expected] * 3, rel=1e-5)
    with pytest.raises(ValueError, match='colors'):
        GaussianScene.from_points(points, np.zeros((3, 3)))


def test_scene_shapes_are_checked():
    with pytest.raises(ValueError, match='quats'):
        GaussianScene(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2),
                      torch.zeros(2, 1, 3))
    with pytest.raises(ValueError, match='SH coefficients'):
        GaussianScene(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2),
                      torch.zeros(2, 5, 3))


def test_sidecar_paths(tmp_path):
    scene = tmp_path / 'obj' / 'scene.ply'
    assert sidecar_path(scene, 'index') == tmp_path / 'obj' / 'scene.index.npz'
    assert sidecar_path(scene, 'meta') == tmp_path / 'obj' / 'scene.meta.json'
    with pytest.raises(ValueError, match='kind'):
        sidecar_path(scene, 'weights')


def test_scene_meta_round_trip_and_merge(tmp_path):
    scene = tmp_path / 'scene.ply'
    K = np.array([[80.0, 0, 32], [0, 80, 32], [0, 0, 1]])
    write_scene_meta(scene, {'width': 64, 'height': 64, 'K': K, 'camera_angle_x': 0.69,
                             'category': 'brick', 'train': {'psnr': np.float32(30.5)}})
    write_scene_meta(scene, {'thresholds': {'dino': 0.25}})
    meta = read_scene_meta(scene)
    np.testing.assert_array_equal(meta['K'], K)
    assert meta['train'] == {'psnr': 30.5} and meta['thresholds'] == {'dino': 0.25}
    assert meta['width'] == 64 and meta['category'] == 'brick'


@pytest.mark.parametrize('content, match', [
    (None, 'not found'),
    ('{not json', 'unreadable JSON'),
    ('[1, 2]', 'JSON object'),
    (json.dumps({'width': 64, 'height': 64, 'K': [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}),
     'category'),
    (json.dumps({'width': -3, 'height': 64, 'K': np.eye(3).tolist(), 'camera_angle_x': 1,
                 'category': 'x'}), 'width'),
    (json.dumps({'width': 64, 'height': 64, 'K': [[1, 2], [3, 4]], 'camera_angle_x': 1,
                 'category': 'x'}), 'K'),
])
def test_bad_scene_meta_is_a_clear_error(tmp_path, content, match):
    scene = tmp_path / 'scene.ply'
    if content is not None:
        sidecar_path(scene, 'meta').write_text(content)
    with pytest.raises(SceneMetaError, match=match):
        read_scene_meta(scene)
