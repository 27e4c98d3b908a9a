"""Tests of scene training: the shared trained scene, the loss, the offline tool."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from igspad_ros.core import cameras
from igspad_ros.core.cameras import project_points
from igspad_ros.core.render import render
from igspad_ros.core.scene import GaussianScene, read_scene_meta
from igspad_ros.core.train import (TrainConfig, initial_points, photometric_loss, render_psnr,
                                   ssim, train_scene)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    """Run the test on one torch thread (restored after): a shared 2-core box thrashes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_trained_scene_is_a_faithful_model(trained_scene_path, synthetic_category, one_thread):
    cat = synthetic_category
    scene = GaussianScene.load_ply(trained_scene_path)
    meta = read_scene_meta(trained_scene_path)
    assert meta['width'] == cat.width == 64 and meta['category'] == 'brick'
    np.testing.assert_allclose(meta['K'], cat.K)
    assert meta['train']['psnr'] >= 24.0          # held-out views (every 8th)
    assert 500 < scene.n < 20000
    psnrs = [render_psnr(scene, cat.train[i].viewmat, cat.K, cat.train[i].image)
             for i in (1, 45, 101, 150, 203)]
    assert min(psnrs) >= 22.0, psnrs


def test_trained_scene_reloads_and_renders_identically(synthetic_category, tmp_path, one_thread):
    cat = synthetic_category
    views = cat.train[::20]
    config = TrainConfig.for_device('cpu', iters=25, size=None, n_init=300, holdout_every=0,
                                    refine_start_iter=10, refine_every=10)
    scene, report = train_scene([v.image for v in views], [v.viewmat for v in views], cat.K,
                                config)
    assert report.psnr is None and report.iters == 25 and report.n_gaussians == scene.n
    scene.save_ply(tmp_path / 'scene.ply')
    loaded = GaussianScene.load_ply(tmp_path / 'scene.ply')
    viewmat = torch.tensor(cat.test[0].true_viewmat, dtype=torch.float32)
    a = render(scene, viewmat, cat.K, 64, 64).rgb
    b = render(loaded, viewmat, cat.K, 64, 64).rgb
    assert torch.equal(a, b)


def test_ssim_and_photometric_loss():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(32, 32, 3, generator=g)
    assert ssim(image, image).item() == pytest.approx(1.0, abs=1e-6)
    assert photometric_loss(image, image).item() == pytest.approx(0.0, abs=1e-6)
    noise = torch.randn(32, 32, 3, generator=g)
    scores = [ssim((image + s * noise).clamp(0, 1), image).item() for s in (0.02, 0.1, 0.3)]
    assert scores[0] > scores[1] > scores[2] and scores[0] < 1.0
    # Constant offset: L1 part is exactly 0.8 * offset; SSIM of a shifted image stays < 1.
    shifted = image * 0.5 + 0.25
    loss = photometric_loss(shifted + 0.1, shifted).item()
    expected = 0.8 * 0.1 + 0.2 * (1 - ssim(shifted + 0.1, shifted).item())
    assert loss == pytest.approx(expected, rel=1e-6)


def test_initial_points_carve_to_the_object(synthetic_category):
    cat = synthetic_category
    views = cat.train[::7]
    images, viewmats = [v.image for v in views], [v.viewmat for v in views]
    points = initial_points(images, viewmats, cat.K, 1000, True, np.random.default_rng(0))
    assert points.shape == (1000, 3) and points.dtype == np.float32
    hull = points[:800]
    # Carved points project onto the object (non-white) in a held view.
    pix, _ = project_points(hull, cat.train[3].viewmat, cat.K)
    col, row = np.clip(pix.astype(int), 0, 63).T
    assert (cat.train[3].image[row, col].min(axis=1) < 0.95).mean() > 0.8
    # The object (a 1.3 x 1.1 plate) lies near the origin.
    assert np.abs(hull).max() < 1.3


def test_train_config_is_range_checked():
    with pytest.raises(ValueError, match='iters'):
        TrainConfig(iters=0)
    with pytest.raises(ValueError, match='holdout_every'):
        TrainConfig(holdout_every=1)
    with pytest.raises(ValueError, match='pose_pivot'):
        TrainConfig(pose_pivot='centre')
    assert TrainConfig.for_device('cuda').size == 800
    assert TrainConfig.for_device('cpu').size == 128


def test_offline_tool_writes_scene_and_meta(synthetic_category_dir, tmp_path, capsys,
                                            one_thread, load_script):
    out = tmp_path / 'brick' / 'scene.ply'
    tool = load_script('offline/train_scene.py')
    code = tool.main(['--data', str(synthetic_category_dir), '--out', str(out),
                      '--device', 'cpu', '--iters', '15', '--size', '32', '--threads', '1'])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'wrote {out}')
    meta = json.loads(out.with_name('scene.meta.json').read_text())
    assert meta['width'] == 32 and meta['category'] == 'brick'
    assert meta['train']['iters'] == 15 and meta['train']['n_holdout_views'] == 27
    assert GaussianScene.load_ply(out).n == meta['train']['n_gaussians']


@pytest.mark.parametrize('case', ['missing_data', 'inside_data', 'bad_iters'])
def test_offline_tool_user_errors_exit_2(synthetic_category_dir, tmp_path, capsys, case,
                                         load_script):
    args = {'missing_data': ['--data', str(tmp_path / 'nope'), '--out', str(tmp_path / 's.ply')],
            'inside_data': ['--data', str(synthetic_category_dir),
                            '--out', str(synthetic_category_dir / 'scene.ply')],
            'bad_iters': ['--data', str(synthetic_category_dir), '--out',
                          str(tmp_path / 's.ply'), '--iters', '0']}[case]
    assert load_script('offline/train_scene.py').main(args + ['--device', 'cpu']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'error' in err[0]
    assert not (synthetic_category_dir / 'scene.ply').exists()


def test_diverged_training_exits_2_and_writes_nothing(synthetic_category_dir, tmp_path,
                                                      capsys, monkeypatch, one_thread,
                                                      load_script):
    # a NaN loss gives NaN gradients, and Adam writes them into the Gaussians: the tool
    # must say so rather than save a scene that fails later in an unrelated place
    import igspad_ros.core.train as train_module
    loss = train_module.photometric_loss
    monkeypatch.setattr(train_module, 'photometric_loss',
                        lambda *args: loss(*args) * float('nan'))
    out = tmp_path / 'scene.ply'
    code = load_script('offline/train_scene.py').main(
        ['--data', str(synthetic_category_dir), '--out', str(out), '--device', 'cpu',
         '--iters', '15', '--size', '32', '--threads', '1'])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        'error: train_scene: the optimisation diverged after 15 steps (non-finite means, '
        'opacities, quats, scales, sh0); nothing was written')
    assert not out.exists()


def test_pose_refinement_brings_noisy_training_poses_closer(synthetic_category, one_thread):
    cat = synthetic_category
    views = cat.train[::3]
    rng = np.random.default_rng(0)
    truth = [v.viewmat for v in views]
    noisy = [cameras.perturb_viewmat(v, 1.0, 0.01, rng) for v in truth]
    config = TrainConfig.for_device('cpu', iters=700, size=None, n_init=2000, holdout_every=0,
                                    refine_start_iter=100, refine_stop_iter=500,
                                    grow_grad2d=4e-4, pose_opt=True)
    scene, report = train_scene([v.image for v in views], noisy, cat.K, config)
    before = _drift_free_rotation_error(noisy, truth)
    after = _drift_free_rotation_error(report.viewmats, truth)
    # measured: 1.00 -> 0.69 degrees (at 64 px; 0.56 about the camera centre, the 160 px
    # capture in README gains from the object pivot); each view moved by a median 0.8 deg
    assert before == pytest.approx(1.0, abs=0.01)
    assert after < 0.75
    assert report.pose_correction['rot_deg_median'] > 0.5


def _drift_free_rotation_error(viewmats, truth):
    """Median rotation error (deg) after removing the mean world transform between the sets.

    A scene refined with its cameras may settle in a slightly turned and moved frame; that
    common drift says nothing of how well the views agree with each other.
    """
    drift = [np.linalg.inv(t) @ v for v, t in zip(viewmats, truth)]
    u, _, vt = np.linalg.svd(sum(d[:3, :3] for d in drift))
    mean = np.eye(4)
    mean[:3, :3] = u @ vt
    mean[:3, 3] = np.mean([d[:3, 3] for d in drift], axis=0)
    return float(np.median([cameras.rotation_error_deg(v, t @ mean)
                            for v, t in zip(viewmats, truth)]))
