"""Camera intrinsics, pose conventions and SE(3) helpers.

This is the only module that converts between pose conventions. Internally a camera
pose is an OpenCV world-to-camera 4x4 ``viewmat`` (x right, y down, z forward), the
matrix gsplat takes. MAD's ``transforms.json`` stores Blender/OpenGL camera-to-world
matrices (x right, y up, z backward); they are converted here and nowhere else. ROS
transforms and poses (translation + quaternion x, y, z, w) of an optical frame (REP 103:
z forward, x right, y down) in its parent are OpenCV camera-to-world matrices.

Functions accept numpy arrays or torch tensors where noted; the SE(3) exp/log work
on torch tensors of any float dtype and are differentiable.
"""
import math

import numpy as np
import torch
from scipy.spatial.transform import Rotation

# Flips the y and z camera axes: OpenGL camera frame <-> OpenCV camera frame.
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def intrinsics_from_fov(camera_angle_x, width, height):
    """Return the 3x3 pinhole K (float64) for a horizontal field of view in radians.

    fx = fy = 0.5 * width / tan(0.5 * camera_angle_x); the principal point is the
    image centre (width / 2, height / 2), as in MAD and the Blender exports.
    """
    if not (0.0 < camera_angle_x < math.pi):
        raise ValueError(f'camera_angle_x must lie in (0, pi), got {camera_angle_x}')
    if width <= 0 or height <= 0:
        raise ValueError(f'image size must be positive, got {width}x{height}')
    focal = 0.5 * width / math.tan(0.5 * camera_angle_x)
    return np.array([[focal, 0.0, 0.5 * width],
                     [0.0, focal, 0.5 * height],
                     [0.0, 0.0, 1.0]])


def scale_intrinsics(K, from_size, to_size):
    """Rescale K from an image of ``from_size`` (w, h) to one of ``to_size`` (w, h).

    Pixel centres stay aligned: a resize scales the pixel grid edges, so the principal
    point (in the pixel-edge convention used throughout) scales like the focal length.
    """
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    S = np.diag([sx, sy, 1.0])
    return S @ np.asarray(K, dtype=np.float64)


def k_to_ros(K):
    """K in our pixel-edge convention -> K of a ROS CameraInfo (pixel centres at integers).

    ROS (and OpenCV calibration) place the centre of pixel (0, 0) at (0, 0); gsplat and
    this package at (0.5, 0.5). The principal point moves by half a pixel.
    """
    K = np.array(K, dtype=np.float64).reshape(3, 3)
    K[:2, 2] -= 0.5
    return K


def k_from_ros(K):
    """K of a ROS CameraInfo (pixel centres at integers) -> our pixel-edge convention."""
    K = np.array(K, dtype=np.float64).reshape(3, 3)
    K[:2, 2] += 0.5
    return K


def blender_c2w_to_viewmat(c2w):
    """Blender/OpenGL camera-to-world (4x4) -> OpenCV world-to-camera viewmat (4x4)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    _check_4x4(c2w, 'camera-to-world matrix')
    return np.linalg.inv(c2w @ _GL_TO_CV)


def viewmat_to_blender_c2w(viewmat):
    """OpenCV world-to-camera viewmat (4x4) -> Blender/OpenGL camera-to-world (4x4)."""
    viewmat = np.asarray(viewmat, dtype=np.float64)
    _check_4x4(viewmat, 'viewmat')
    return np.linalg.inv(viewmat) @ _GL_TO_CV


def opencv_c2w_to_viewmat(c2w):
    """OpenCV camera-to-world (an optical frame's pose in the world) -> viewmat (4x4)."""
    return rigid_inverse(c2w)


def viewmat_to_opencv_c2w(viewmat):
    """Viewmat (4x4) -> OpenCV camera-to-world: the optical frame's pose in the world."""
    return rigid_inverse(viewmat)


def rigid_inverse(T):
    """Inverse of a rigid 4x4 transform (numpy), exact: (R^T, -R^T t)."""
    T = np.asarray(T, dtype=np.float64)
    _check_4x4(T, 'rigid transform')
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def rigid_from_quaternion(translation, quaternion):
    """4x4 transform of a translation (3,) and a quaternion (x, y, z, w), ROS order.

    The quaternion is normalised; a zero or non-finite one raises ValueError. A ROS
    transform from ``parent`` to ``child`` maps child coordinates to parent coordinates.
    """
    q = np.asarray(quaternion, dtype=np.float64).reshape(-1)
    t = np.asarray(translation, dtype=np.float64).reshape(-1)
    norm = np.linalg.norm(q) if q.shape == (4,) and np.all(np.isfinite(q)) else 0.0
    if norm < 1e-9 or t.shape != (3,) or not np.all(np.isfinite(t)):
        raise ValueError(f'not a rigid transform: translation {t.tolist()}, quaternion '
                         f'(x, y, z, w) {q.tolist()}')
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q / norm).as_matrix()
    T[:3, 3] = t
    return T


def rigid_to_quaternion(T):
    """Return (translation (3,), quaternion (x, y, z, w), w >= 0) of a rigid 4x4 transform."""
    T = np.asarray(T, dtype=np.float64)
    _check_4x4(T, 'rigid transform')
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    return T[:3, 3].copy(), (-q if q[3] < 0 else q)


def interpolate_rigid(T0, T1, alpha):
    """Rigid transform ``alpha`` of the way from T0 to T1 (alpha in [0, 1]).

    Translation is linear, rotation the slerp along the shorter arc: exact for a constant
    velocity and a constant angular velocity about a fixed axis between the two samples.
    """
    T0 = np.asarray(T0, dtype=np.float64)
    T1 = np.asarray(T1, dtype=np.float64)
    step = Rotation.from_matrix(T0[:3, :3].T @ T1[:3, :3]).as_rotvec()
    out = np.eye(4)
    out[:3, :3] = T0[:3, :3] @ Rotation.from_rotvec(alpha * step).as_matrix()
    out[:3, 3] = (1.0 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]
    return out


def camera_center(viewmat):
    """World position of the camera centre of a viewmat (numpy, shape (3,))."""
    viewmat = np.asarray(viewmat, dtype=np.float64)
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    return -R.T @ t


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)):
    """OpenCV viewmat of a camera at ``eye`` looking at ``target`` with world ``up``.

    The camera's y axis (image down) points along -up projected on the image plane.
    Raises ValueError when the viewing direction is parallel to ``up``.
    """
    eye = np.asarray(eye, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    up = np.asarray(up, dtype=np.float64)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    norm_x = np.linalg.norm(x)
    if norm_x < 1e-9:
        raise ValueError('look_at: viewing direction is parallel to the up vector')
    x /= norm_x
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    viewmat = np.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ eye
    return viewmat


def project_points(points, viewmat, K):
    """Project world points (N, 3) to pixels (N, 2) and return (pixels, depth (N,)).

    Pixel coordinates use the pixel-edge convention: the centre of pixel (i, j) is at
    (j + 0.5, i + 0.5), matching gsplat and ``intrinsics_from_fov``.
    """
    points = np.asarray(points, dtype=np.float64)
    viewmat = np.asarray(viewmat, dtype=np.float64)
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    depth = cam[:, 2]
    uvw = cam @ np.asarray(K, dtype=np.float64).T
    with np.errstate(divide='ignore', invalid='ignore'):
        pix = uvw[:, :2] / uvw[:, 2:3]
    return pix, depth


def rotation_error_deg(viewmat_est, viewmat_true):
    """Geodesic angle in degrees between the rotations of two viewmats."""
    Ra = np.asarray(viewmat_est, dtype=np.float64)[:3, :3]
    Rb = np.asarray(viewmat_true, dtype=np.float64)[:3, :3]
    cos = (np.trace(Ra @ Rb.T) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def translation_error_rel(viewmat_est, viewmat_true):
    """Camera-centre distance divided by the true camera's distance to the world origin."""
    ca = camera_center(viewmat_est)
    cb = camera_center(viewmat_true)
    return float(np.linalg.norm(ca - cb) / max(np.linalg.norm(cb), 1e-12))


def _skew(v):
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return torch.stack([
        torch.stack([zero, -z, y], dim=-1),
        torch.stack([z, zero, -x], dim=-1),
        torch.stack([-y, x, zero], dim=-1),
    ], dim=-2)


def _so3_coefficients(theta):
    """Return (A, B, C) of Rodrigues' and the SE(3) V matrix, stable near theta = 0.

    A = sin(t)/t, B = (1 - cos(t))/t^2, C = (t - sin(t))/t^3; Taylor series below 1e-2
    keep them and their gradients finite at zero.
    """
    small = theta < 1e-2
    t = torch.where(small, torch.ones_like(theta), theta)
    t2 = theta * theta
    A = torch.where(small, 1.0 - t2 / 6.0 + t2 * t2 / 120.0, torch.sin(t) / t)
    B = torch.where(small, 0.5 - t2 / 24.0 + t2 * t2 / 720.0, (1.0 - torch.cos(t)) / (t * t))
    C = torch.where(small, 1.0 / 6.0 - t2 / 120.0 + t2 * t2 / 5040.0,
                    (t - torch.sin(t)) / (t * t * t))
    return A, B, C


def se3_exp(xi):
    """Exponential map of twists (..., 6) = (rho, omega) to 4x4 transforms (..., 4, 4).

    rho is the translational part, omega the rotation vector. Differentiable, any
    float dtype, exact at xi = 0.
    """
    rho, omega = xi[..., :3], xi[..., 3:]
    theta = torch.sqrt((omega * omega).sum(-1) + torch.finfo(xi.dtype).tiny)
    A, B, C = (c[..., None, None] for c in _so3_coefficients(theta))
    W = _skew(omega)
    W2 = W @ W
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device).expand(W.shape)
    R = eye + A * W + B * W2
    V = eye + B * W + C * W2
    t = (V @ rho[..., None])[..., 0]
    bottom = torch.zeros(xi.shape[:-1] + (1, 4), dtype=xi.dtype, device=xi.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([torch.cat([R, t[..., None]], dim=-1), bottom], dim=-2)


def se3_log(T):
    """Logarithm of 4x4 transforms (..., 4, 4) to twists (..., 6) = (rho, omega).

    Valid for rotation angles in [0, pi); inverse of ``se3_exp`` there.
    """
    R, t = T[..., :3, :3], T[..., :3, 3]
    cos = ((R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]) - 1.0) / 2.0
    theta = torch.arccos(torch.clamp(cos, -1.0 + 1e-7, 1.0 - 1e-7))
    vee = torch.stack([R[..., 2, 1] - R[..., 1, 2],
                       R[..., 0, 2] - R[..., 2, 0],
                       R[..., 1, 0] - R[..., 0, 1]], dim=-1)
    A, B, _ = _so3_coefficients(theta)
    omega = vee / (2.0 * A[..., None])
    W = _skew(omega)
    small = theta < 1e-2
    t_safe = torch.where(small, torch.ones_like(theta), theta)
    # V^-1 = I - W/2 + (1/t^2) (1 - A / (2B)) W^2, with its series limit 1/12 at t -> 0.
    d = torch.where(small, 1.0 / 12.0 + theta * theta / 720.0,
                    (1.0 - A / (2.0 * B)) / (t_safe * t_safe))
    eye = torch.eye(3, dtype=T.dtype, device=T.device).expand(W.shape)
    V_inv = eye - 0.5 * W + d[..., None, None] * (W @ W)
    rho = (V_inv @ t[..., None])[..., 0]
    return torch.cat([rho, omega], dim=-1)


def se3_compose(T_a, T_b):
    """Composition T_a @ T_b of 4x4 transforms (torch, broadcasting)."""
    return T_a @ T_b


def se3_inverse(T):
    """Inverse of rigid 4x4 transforms (torch, (..., 4, 4)) without a general inverse."""
    R, t = T[..., :3, :3], T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    top = torch.cat([Rt, -Rt @ t], dim=-1)
    return torch.cat([top, T[..., 3:, :]], dim=-2)


def apply_pose_increment(xi, viewmat):
    """Left-perturb a viewmat by a camera-frame twist: exp(xi) @ viewmat (torch)."""
    return se3_exp(xi) @ viewmat


def pivot_frames(viewmats, centre):
    """Return transforms P (torch (V, 4, 4)) moving each camera frame's origin to a pivot.

    The pivot lies on the camera's optical axis at the depth of the world point ``centre``
    (torch (3,)), so that P^-1 exp(xi) P V (``apply_pivoted_increment``) with a rotation
    twist orbits the camera about that depth: the object stays in place in the image while
    the view direction turns, and a translation twist slides it. One coordinate per motion
    the image shows suits Adam's per-coordinate step (IGS and the training-pose refinement).
    ``centre`` None puts the pivot at the camera centre (P = I): the plain left increment.
    """
    frames = torch.eye(4, dtype=viewmats.dtype, device=viewmats.device).repeat(
        len(viewmats), 1, 1)
    if centre is not None:
        centre = centre.to(viewmats.dtype)
        frames[:, 2, 3] = -(viewmats[:, :3, :3] @ centre + viewmats[:, :3, 3])[:, 2]
    return frames


def apply_pivoted_increment(xi, viewmats, frames):
    """P^-1 exp(xi) P V: the twist ``xi`` applied in the pivoted frames of ``pivot_frames``."""
    return se3_inverse(frames) @ apply_pose_increment(xi, frames @ viewmats)


def perturb_viewmat(viewmat, rot_deg, trans_frac, rng):
    """Rotate a camera by ``rot_deg`` and move it by ``trans_frac`` of its distance.

    The rotation is about a random axis through the camera centre; the centre moves in a
    random direction by ``trans_frac`` times its distance to the world origin.
    Returns a new numpy viewmat; tests and benchmarks use it for perturbed starts.
    """
    viewmat = np.asarray(viewmat, dtype=np.float64)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    omega = torch.tensor(axis * math.radians(rot_deg))
    R_delta = se3_exp(torch.cat([torch.zeros(3, dtype=omega.dtype), omega]))[:3, :3].numpy()
    center = camera_center(viewmat)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    new_center = center + direction * trans_frac * np.linalg.norm(center)
    R_new = R_delta @ viewmat[:3, :3]
    out = np.eye(4)
    out[:3, :3] = R_new
    out[:3, 3] = -R_new @ new_center
    return out


def _check_4x4(M, name):
    if M.shape != (4, 4) or not np.all(np.isfinite(M)):
        raise ValueError(f'{name} must be a finite 4x4 matrix, got shape {M.shape}')
