"""Tests of render(): the tiled CPU rasteriser against the dense reference and by hand."""
import math

import numpy as np
import pytest
import torch

from igspad_ros.core.cameras import intrinsics_from_fov, look_at, se3_exp
from igspad_ros.core.render import RenderInputError, render, supersample_factor
from igspad_ros.core.render.reference import rasterize_dense
from igspad_ros.core.render.reference import random_scene as reference_scene
from igspad_ros.core.scene import GaussianScene

FOV = 0.6911   # MAD-Sim camera_angle_x


def random_scene(n, seed=0, dtype=torch.float64, sh_degree=2):
    """The reference module's seeded scene, float64 by default for exact comparisons."""
    return reference_scene(n, seed=seed, dtype=dtype, sh_degree=sh_degree)


def _camera(size, eye=(2.4, 1.6, 1.7), dtype=torch.float64):
    return (torch.tensor(look_at(eye), dtype=dtype),
            torch.tensor(intrinsics_from_fov(FOV, size, size), dtype=dtype))


def _loss_weights(shape, dtype):
    g = torch.Generator().manual_seed(7)
    return torch.rand(shape, generator=g).to(dtype)


def _tiled_and_dense(scene, viewmats, K, size):
    """Images, alphas and viewmat gradients of a fixed weighted loss from both rasterisers."""
    results = []
    for dense in (False, True):
        vm = viewmats.clone().requires_grad_(True)
        if dense:
            Ks = K[None].expand(vm.shape[0], 3, 3)
            rgb, alpha, _ = rasterize_dense(scene, vm, Ks, size, size,
                                            torch.ones(3, dtype=vm.dtype))
        else:
            out = render(scene, vm, K, size, size)
            rgb, alpha = out.rgb, out.alpha
        (rgb * _loss_weights(rgb.shape, rgb.dtype)).mean().backward()
        results.append((rgb.detach(), alpha.detach(), vm.grad))
    return results


def test_tiled_matches_dense_reference_images_and_viewmat_gradients():
    scene = random_scene(400)
    V, K = _camera(48)
    V2 = torch.tensor(look_at((-1.5, 2.8, 0.9)), dtype=torch.float64)
    (rgb_t, a_t, g_t), (rgb_d, a_d, g_d) = _tiled_and_dense(scene, torch.stack([V, V2]), K, 48)
    assert rgb_t.shape == (2, 48, 48, 3) and a_t.shape == (2, 48, 48, 1)
    assert 0.2 < a_d.mean() < 0.9          # the scene covers a good part of the image
    assert (rgb_t - rgb_d).abs().max() <= 1e-4
    assert (a_t - a_d).abs().max() <= 1e-4
    assert g_d.abs().max() > 1e-3          # a real gradient, not zeros on both sides
    assert (g_t - g_d).abs().max() <= 1e-4


def test_float32_tiled_close_to_float64_reference():
    scene = random_scene(400)
    V, K = _camera(48)
    ref = rasterize_dense(scene, V[None], K[None], 48, 48, torch.ones(3, dtype=torch.float64))[0]
    out = render(scene.to(dtype=torch.float32), V.float(), K.float(), 48, 48)
    diff = (out.rgb.double() - ref[0]).abs()
    assert out.rgb.dtype == torch.float32
    assert diff.mean() < 1e-5
    assert diff.max() < 5e-3     # isolated pixels may flip the 1/255 alpha cut-off


def test_scene_gradients_match_dense_reference():
    scene = random_scene(150, seed=3)
    V, K = _camera(32)
    grads = []
    for dense in (False, True):
        params = {k: v.clone().requires_grad_(True) for k, v in scene.tensors().items()}
        s = GaussianScene(**params)
        if dense:
            rgb = rasterize_dense(s, V[None], K[None], 32, 32, torch.ones(3, dtype=V.dtype))[0][0]
        else:
            rgb = render(s, V, K, 32, 32).rgb
        (rgb * _loss_weights(rgb.shape, rgb.dtype)).sum().backward()
        grads.append({k: p.grad for k, p in params.items()})
    for key in grads[0]:
        scale = grads[1][key].abs().max()
        assert scale > 0, key
        assert (grads[0][key] - grads[1][key]).abs().max() <= 1e-6 * max(1.0, float(scale)), key


def test_viewmat_gradient_matches_finite_differences():
    scene = random_scene(120, seed=5)
    V, K = _camera(32)
    weights = _loss_weights((32, 32, 3), torch.float64)

    def loss(xi):
        return (render(scene, se3_exp(xi) @ V, K, 32, 32).rgb * weights).sum()

    xi = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    loss(xi).backward()
    numeric = torch.zeros(6, dtype=torch.float64)
    eps = 1e-6
    for i in range(6):
        step = torch.zeros(6, dtype=torch.float64)
        step[i] = eps
        numeric[i] = (loss(step) - loss(-step)) / (2 * eps)
    rel = (xi.grad - numeric).norm() / numeric.norm()
    assert numeric.norm() > 1.0
    assert rel < 1e-2


def test_batched_viewmats_equal_single_renders():
    scene = random_scene(300, dtype=torch.float32)
    V, K = _camera(40, dtype=torch.float32)
    V2 = torch.tensor(look_at((0.5, -3.0, 1.0)), dtype=torch.float32)
    batch = render(scene, torch.stack([V, V2]), K.numpy(), 40, 40)
    assert batch.rgb.shape == (2, 40, 40, 3) and batch.info['n_cameras'] == 2
    for i, vm in enumerate((V, V2)):
        single = render(scene, vm, K, 40, 40)
        assert torch.allclose(batch.rgb[i], single.rgb, atol=1e-6)
        assert torch.allclose(batch.alpha[i], single.alpha, atol=1e-6)


def test_single_gaussian_matches_closed_form():
    # One isotropic Gaussian straight ahead: the pixel at its centre shows
    # opacity * colour + (1 - opacity) * background; far pixels show the background.
    colour, opacity = torch.tensor([[0.8, 0.2, 0.1]]), 0.7
    scene = GaussianScene.from_points([[0.0, 0.0, 0.0]], colour, sh_degree=1, scale=0.05,
                                      opacity=opacity)
    V = torch.tensor(look_at((0.0, -3.0, 0.0)), dtype=torch.float32)
    K = intrinsics_from_fov(FOV, 33, 33)
    out = render(scene, V, K, 33, 33, background=(0.0, 0.0, 1.0))
    expected = opacity * colour[0] + (1 - opacity) * torch.tensor([0.0, 0.0, 1.0])
    assert torch.allclose(out.rgb[16, 16], expected, atol=1e-5)
    assert out.alpha[16, 16, 0] == pytest.approx(opacity, abs=1e-6)
    assert torch.equal(out.rgb[0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert out.alpha[0, 0, 0] == 0.0
    # The 2D standard deviation: f * s / z blurred by eps2d = 0.3 px^2.
    f = K[0, 0]
    sigma2 = (f * 0.05 / 3.0) ** 2 + 0.3
    off = 3
    falloff = opacity * math.exp(-0.5 * off * off / sigma2)
    assert out.alpha[16, 16 + off, 0] == pytest.approx(falloff, rel=1e-4)


def test_empty_view_is_background():
    scene = random_scene(50, dtype=torch.float32)
    V = torch.tensor(look_at((0.0, -3.0, 0.0), target=(0.0, -6.0, 0.0)), dtype=torch.float32)
    K = intrinsics_from_fov(FOV, 16, 16)
    out = render(scene, V, K, 16, 16, background=(0.25, 0.5, 0.75))
    assert torch.equal(out.alpha, torch.zeros(16, 16, 1))
    assert torch.equal(out.rgb, torch.tensor([0.25, 0.5, 0.75]).expand(16, 16, 3))


def test_info_carries_what_default_strategy_needs():
    scene = random_scene(200, dtype=torch.float32)
    scene.means.requires_grad_(True)
    V, K = _camera(32, dtype=torch.float32)
    out = render(scene, V, K, 32, 40)
    assert out.rgb.shape == (40, 32, 3)
    info = out.info
    assert info['width'] == 32 and info['height'] == 40 and info['n_cameras'] == 1
    assert info['gaussian_ids'] is None
    assert info['means2d'].shape == (1, 200, 2) and info['radii'].shape == (1, 200, 2)
    info['means2d'].retain_grad()
    out.rgb.sum().backward()
    visible = (info['radii'] > 0).all(-1)[0]
    assert visible.sum() > 100
    assert info['means2d'].grad[0, visible].abs().sum() > 0
    assert torch.equal(info['means2d'].grad[0, ~visible], torch.zeros_like(
        info['means2d'].grad[0, ~visible]))


def test_supersampled_render_is_the_block_mean_of_the_large_render():
    scene = random_scene(300, dtype=torch.float32)
    V, K = _camera(24, dtype=torch.float32)
    small = render(scene, V, K, 24, 20, supersample=3)
    large = render(scene, V, K * torch.tensor([3.0, 3.0, 1.0])[:, None], 72, 60)
    assert small.rgb.shape == (20, 24, 3) and small.alpha.shape == (20, 24, 1)
    assert small.info['width'] == 72 and small.info['height'] == 60
    blocks = large.rgb.reshape(20, 3, 24, 3, 3).mean((1, 3))
    assert torch.allclose(small.rgb, blocks, atol=1e-6)
    assert torch.allclose(small.alpha[..., 0], large.alpha[..., 0].reshape(20, 3, 24, 3)
                          .mean((1, 3)), atol=1e-6)


def test_supersample_factor_renders_near_the_scene_size():
    assert supersample_factor(128, 64, 48) == 2
    assert supersample_factor(128, 96, 96) == 1      # 1.33: not worth a larger render
    assert supersample_factor(128, 40, 30) == 3
    assert supersample_factor(128, 256, 256) == 1
    assert supersample_factor(None, 16, 16) == 1


@pytest.mark.parametrize('kwargs, match', [
    ({'viewmat': np.eye(3)}, 'viewmat'),
    ({'width': 0}, 'width'),
    ({'height': 10 ** 6}, 'height'),
    ({'K': np.eye(4)}, 'K'),
    ({'background': (1.0, 1.0)}, 'background'),
    ({'backend': 'opengl'}, 'backend'),
    ({'supersample': 0}, 'supersample'),
    ({'supersample': 1.5}, 'supersample'),
    ({'width': 5000, 'supersample': 2}, 'width'),
])
def test_bad_arguments_are_rejected(kwargs, match):
    scene = random_scene(10, dtype=torch.float32)
    args = {'viewmat': look_at((0.0, -3.0, 0.0)), 'K': intrinsics_from_fov(FOV, 16, 16),
            'width': 16, 'height': 16}
    args.update(kwargs)
    with pytest.raises(RenderInputError, match=match):
        render(scene, **args)


@pytest.mark.parametrize('depth', [0.0, 1e-12, -0.5])
def test_gaussian_in_the_camera_plane_leaves_gradients_finite(depth):
    # A room capture puts Gaussians beside the cameras: one in a camera's own image plane
    # projects to infinity. It is culled (behind the near plane), and its infinite 2D
    # covariance once turned the whole backward pass into NaN (training step 739 of a
    # textured-room capture), which Adam then wrote into every Gaussian.
    scene = random_scene(60, seed=3, dtype=torch.float32)
    V, K = _camera(32, dtype=torch.float32)
    R, t = V[:3, :3], V[:3, 3]
    beside = R.T @ (torch.tensor([0.7, 0.2, depth]) - t)     # camera frame -> world
    scene.means = torch.cat([scene.means, beside[None]])
    scene.quats = torch.cat([scene.quats, torch.tensor([[1.0, 0.0, 0.0, 0.0]])])
    scene.log_scales = torch.cat([scene.log_scales, torch.full((1, 3), math.log(0.05))])
    scene.opacity_logits = torch.cat([scene.opacity_logits, torch.tensor([2.0])])
    scene.sh = torch.cat([scene.sh, torch.zeros(1, *scene.sh.shape[1:])])
    reference = render(random_scene(60, seed=3, dtype=torch.float32), V, K, 32, 32)
    for name in ('means', 'quats', 'log_scales', 'opacity_logits', 'sh'):
        getattr(scene, name).requires_grad_(True)
    vm = V.clone().requires_grad_(True)
    out = render(scene, vm, K, 32, 32)
    (out.rgb * _loss_weights(out.rgb.shape, out.rgb.dtype)).mean().backward()
    assert torch.allclose(out.rgb, reference.rgb, atol=1e-6)     # culled: no effect on the image
    assert int(out.info['radii'][0, -1].max()) == 0
    assert torch.isfinite(vm.grad).all() and vm.grad.abs().sum() > 0
    for name in ('means', 'quats', 'log_scales', 'opacity_logits', 'sh'):
        grad = getattr(scene, name).grad
        assert torch.isfinite(grad).all(), name
        assert float(grad[-1].abs().sum()) == 0.0, name     # nothing flows to the culled one
