"""Pose conventions, intrinsics and SE(3) helpers round-trip."""
import math

import numpy as np
import pytest
import torch

from igspad_ros.core import cameras


def test_intrinsics_from_fov_mad_values():
    K = cameras.intrinsics_from_fov(0.6911112070083618, 800, 800)
    assert K[0, 0] == pytest.approx(1111.111, abs=1e-2)
    assert K[1, 1] == K[0, 0]
    assert (K[0, 2], K[1, 2]) == (400.0, 400.0)


def test_scale_intrinsics_halves_focal_and_centre():
    K = cameras.intrinsics_from_fov(0.6911, 800, 600)
    K2 = cameras.scale_intrinsics(K, (800, 600), (400, 300))
    np.testing.assert_allclose(K2[:2], K[:2] / 2.0)
    assert K2[2, 2] == 1.0


@pytest.mark.parametrize('bad', [0.0, -1.0, math.pi])
def test_intrinsics_reject_bad_angle(bad):
    with pytest.raises(ValueError, match='camera_angle_x'):
        cameras.intrinsics_from_fov(bad, 64, 64)


def test_blender_viewmat_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        eye = rng.normal(size=3) * 3.0
        view = cameras.look_at(eye)
        c2w = cameras.viewmat_to_blender_c2w(view)
        np.testing.assert_allclose(cameras.blender_c2w_to_viewmat(c2w), view, atol=1e-12)
        # Blender cameras look down their -z axis: the origin lies along -z of c2w.
        forward = -c2w[:3, 2]
        np.testing.assert_allclose(forward, -eye / np.linalg.norm(eye), atol=1e-12)


def test_look_at_projects_target_to_centre_and_up_is_image_up():
    K = cameras.intrinsics_from_fov(0.6911, 64, 48)
    view = cameras.look_at([3.0, 1.0, 1.5])
    pix, depth = cameras.project_points(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.3]]), view, K)
    np.testing.assert_allclose(pix[0], [32.0, 24.0], atol=1e-9)
    assert depth[0] == pytest.approx(math.sqrt(9 + 1 + 2.25))
    assert pix[1, 1] < pix[0, 1]  # world +z (up) appears higher in the image


def test_look_at_rejects_parallel_up():
    with pytest.raises(ValueError, match='parallel'):
        cameras.look_at([0.0, 0.0, 3.0])


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_se3_exp_log_round_trip(dtype):
    gen = torch.Generator().manual_seed(0)
    xi = (torch.rand(64, 6, generator=gen, dtype=dtype) - 0.5) * 2.0
    xi[:8] *= 1e-5  # near identity: the series branches
    T = cameras.se3_exp(xi)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(cameras.se3_log(T), xi, atol=tol * 10, rtol=tol * 10)
    R = T[:, :3, :3]
    eye = torch.eye(3, dtype=dtype).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye, atol=tol, rtol=0)


def test_se3_exp_zero_is_identity_with_finite_gradient():
    xi = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    T = cameras.se3_exp(xi)
    torch.testing.assert_close(T, torch.eye(4, dtype=torch.float64))
    (T * torch.arange(16, dtype=torch.float64).reshape(4, 4)).sum().backward()
    assert torch.isfinite(xi.grad).all()
    # d/d omega of sum(W * M) at 0 is the vee of M - M^T; d/d rho the translation column.
    np.testing.assert_allclose(xi.grad[:3].numpy(), [3.0, 7.0, 11.0])


def test_se3_exp_gradient_matches_finite_differences():
    xi = torch.tensor([0.1, -0.2, 0.3, 0.4, -0.5, 0.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cameras.se3_exp, (xi,))


def test_se3_inverse_and_compose():
    gen = torch.Generator().manual_seed(1)
    T = cameras.se3_exp(torch.rand(5, 6, generator=gen, dtype=torch.float64))
    ident = cameras.se3_compose(T, cameras.se3_inverse(T))
    torch.testing.assert_close(ident, torch.eye(4, dtype=torch.float64).expand(5, 4, 4))


def test_pose_errors_of_perturbation():
    rng = np.random.default_rng(3)
    view = cameras.look_at([3.5, 0.0, 1.0])
    moved = cameras.perturb_viewmat(view, 10.0, 0.1, rng)
    assert cameras.rotation_error_deg(moved, view) == pytest.approx(10.0, abs=1e-9)
    assert cameras.translation_error_rel(moved, view) == pytest.approx(0.1, abs=1e-9)
    assert cameras.rotation_error_deg(view, view) == pytest.approx(0.0, abs=1e-6)


def test_ros_camera_info_k_shifts_principal_point_half_a_pixel():
    K = cameras.intrinsics_from_fov(0.6911, 64, 48)
    ros = cameras.k_to_ros(K)
    np.testing.assert_allclose(ros[:2, 2], [31.5, 23.5])
    np.testing.assert_allclose(ros[[0, 1], [0, 1]], K[[0, 1], [0, 1]])
    np.testing.assert_allclose(cameras.k_from_ros(ros.reshape(-1).tolist()), K)


def test_opencv_c2w_viewmat_round_trip_and_camera_centre():
    rng = np.random.default_rng(4)
    for _ in range(10):
        view = cameras.look_at(rng.normal(size=3) * 2.0)
        c2w = cameras.viewmat_to_opencv_c2w(view)
        np.testing.assert_allclose(c2w, np.linalg.inv(view), atol=1e-12)
        np.testing.assert_allclose(c2w[:3, 3], cameras.camera_center(view), atol=1e-12)
        np.testing.assert_allclose(cameras.opencv_c2w_to_viewmat(c2w), view, atol=1e-12)
        # an OpenCV c2w is the Blender c2w with the camera's y and z axes flipped
        blender = cameras.viewmat_to_blender_c2w(view)
        np.testing.assert_allclose(blender[:3, :2], c2w[:3, :2] * [1.0, -1.0], atol=1e-12)
        np.testing.assert_allclose(blender[:3, 2], -c2w[:3, 2], atol=1e-12)


def test_rigid_quaternion_round_trip_ros_order():
    # 90 degrees about z, ROS order (x, y, z, w)
    T = cameras.rigid_from_quaternion([1.0, 2.0, 3.0], [0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5)])
    np.testing.assert_allclose(T[:3, :3] @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [1.0, 2.0, 3.0])
    rng = np.random.default_rng(5)
    for _ in range(10):
        q = rng.normal(size=4)
        t = rng.normal(size=3)
        T = cameras.rigid_from_quaternion(t, 3.0 * q)       # normalised
        t2, q2 = cameras.rigid_to_quaternion(T)
        np.testing.assert_allclose(t2, t)
        assert q2[3] >= 0.0
        np.testing.assert_allclose(q2, q / np.linalg.norm(q) * np.sign(q[3]), atol=1e-12)
        np.testing.assert_allclose(cameras.rigid_from_quaternion(t2, q2), T, atol=1e-12)
        np.testing.assert_allclose(cameras.rigid_inverse(T) @ T, np.eye(4), atol=1e-12)
    with pytest.raises(ValueError, match='not a rigid transform'):
        cameras.rigid_from_quaternion([0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])


def test_interpolate_rigid_is_exact_for_constant_rates():
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    base = cameras.rigid_from_quaternion([0.1, 0.0, 0.0], [0.2, -0.1, 0.3, 0.9])

    def pose(s):
        step = cameras.se3_exp(torch.tensor(np.r_[0.0, 0.0, 0.0, axis * 0.7 * s]))[:3, :3]
        T = base.copy()
        T[:3, :3] = base[:3, :3] @ step.numpy()
        T[:3, 3] += np.array([0.3, -0.2, 0.05]) * s
        return T
    for alpha in (0.0, 0.25, 0.6, 1.0):
        np.testing.assert_allclose(cameras.interpolate_rigid(pose(0.0), pose(1.0), alpha),
                                   pose(alpha), atol=1e-12)


def test_pivoted_rotation_orbits_the_object_and_translation_slides_it():
    centre = np.array([0.1, -0.2, 0.3])
    eye = np.array([2.5, 1.0, 1.5])
    v = cameras.look_at(eye, target=centre)
    K = cameras.intrinsics_from_fov(0.7, 128, 96)
    vms = torch.tensor(v[None])
    frames = cameras.pivot_frames(vms, torch.tensor(centre))
    dist = np.linalg.norm(eye - centre)
    assert float(frames[0, 2, 3]) == pytest.approx(-dist)     # look_at: centre on the axis
    turn = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.02, 0.0]], dtype=torch.float64)
    orbit = cameras.apply_pivoted_increment(turn, vms, frames)[0].numpy()
    # a rotation twist about the pivot: the camera turns by 0.02 rad about the centre,
    # which stays on the optical axis at the same distance
    pix, depth = cameras.project_points(centre[None], orbit, K)
    np.testing.assert_allclose(pix[0], K[:2, 2], atol=1e-9)
    assert depth[0] == pytest.approx(dist, abs=1e-9)
    assert cameras.rotation_error_deg(orbit, v) == pytest.approx(math.degrees(0.02), abs=1e-9)
    assert np.linalg.norm(cameras.camera_center(orbit) - eye) == pytest.approx(
        2 * dist * math.sin(0.01), abs=1e-9)
    # about the camera centre (identity frames) the same twist keeps the camera in place
    plain = cameras.apply_pivoted_increment(turn, vms, cameras.pivot_frames(vms, None))
    np.testing.assert_allclose(cameras.camera_center(plain[0].numpy()), eye, atol=1e-12)
    # a translation twist slides the object in the image without turning the camera
    slide = torch.tensor([[0.05, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    moved = cameras.apply_pivoted_increment(slide, vms, frames)[0].numpy()
    pix, _ = cameras.project_points(centre[None], moved, K)
    assert pix[0, 0] - K[0, 2] == pytest.approx(K[0, 0] * 0.05 / dist, abs=1e-9)
    assert cameras.rotation_error_deg(moved, v) == pytest.approx(0.0, abs=1e-9)
