"""Synthetic captures: the synthetic object as a user's own camera and SfM would record it.

The object, its training grid and its defects are ``synthetic.py``'s; what changes is the
camera and the files. The camera is a 4:3 frame whose long side is ``size`` pixels, with
fy = 0.97 fx, an off-centre principal point and a barrel lens (OpenCV radtan, k1 = -0.12).
A photo is a pinhole render on a canvas large enough to cover the lens, resampled through
``undistort.distortion_maps``; photos are JPEG (quality 95), masks PNG. Two layouts describe
exactly the same cameras and hold byte-identical images:

```
<out>/<name>/                  nerfstudio-style capture
    transforms.json            camera_model OPENCV, fl_x fl_y cx cy w h k1 k2 k3 p1 p2 (global),
                               frames[{file_path "images/frame_00000.jpg", transform_matrix}]
    images/frame_<n:05d>.jpg
<out>/<name>_colmap/           COLMAP capture, binary model written by pycolmap
    images/frame_<n:05d>.jpg
    sparse/0/{cameras,images,points3D,frames,rigs}.bin
both, beside the training images:
    test/{good,Burrs,Missing,Stains}/<n>.jpg       taken with the same camera
    ground_truth/{Burrs,Missing,Stains}/<n>_mask.png   255 where the 8-bit colour changed
    test_poses.json            {"test/<type>/<n>.jpg": Blender camera-to-world}
    photometric.json           with exposure > 0: {"images/frame_00000.jpg" or
                               "test/<type>/<n>.jpg": [gain_r, gain_g, gain_b]}
    train_poses_true.json      with pose noise: {"images/frame_00000.jpg": Blender
                               camera-to-world}, the poses the photos were taken at
```

Pixel conventions: K here has the centre of pixel (0, 0) at (0.5, 0.5), as have COLMAP and
nerfstudio, so both the COLMAP camera and transforms.json's cx, cy hold K's principal point
as it is; only OpenCV calls take ``cameras.k_to_ros(K)`` (pixel centres at integers).
Poses: ``transform_matrix`` and ``test_poses.json`` are Blender camera-to-world, COLMAP's
``cam_from_world`` the OpenCV viewmat. Both live in a capture world that is not the
object's: ``OBJECT_TO_WORLD`` moves the object off the origin and tilts its up axis, as an
arbitrary SfM frame would; units stay the object's. ``points3D`` are points on the object's
surface, coloured as shaded, each with the training views that see it (z-buffer test) as
its track, at their distorted pixels; in the room (``background='room'``) also points on
the table and the room's walls, floor and ceiling (``BACKGROUND_POINTS``), those that two
training views see. ``make_capture``'s options make a capture harder (a textured
background, exposure and white balance changing photo to photo, noisy training poses);
their defaults write the plain capture.
"""
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pycolmap

from igspad_ros.core import cameras, undistort
from igspad_ros.data import synthetic
from igspad_ros.data.mesh_render import Mesh, _zbuffer, render_mesh, shade
from igspad_ros.data.room import PARTS, room_mesh, test_samples_in_room
from igspad_ros.data.synthetic import SyntheticConfigError, _check_args
from igspad_ros.data.transforms_writer import NerfstudioCamera, transforms_meta

FORMATS = ('transforms', 'colmap')
FOLDER_SUFFIX = {'transforms': '', 'colmap': '_colmap'}
DISTORTION = undistort.Distortion('radtan', (-0.12, 0.02, 0.0015, -0.001, 0.0))
FY_OVER_FX = 0.97
PRINCIPAL_POINT = (0.53, 0.47)      # fractions of the width and height
JPEG_QUALITY = 95
N_POINTS = 4000
BACKGROUNDS = ('white', 'room')
# SfM points on the room, per part (see room.PARTS); the table's edge is too thin for any.
BACKGROUND_POINTS = {'table_top': 3000, 'table_underside': 500, 'room': 12000}
MAX_EXPOSURE = 0.5
# Spread of the per-channel white-balance gains at exposure 0.2, proportional to it.
WHITE_BALANCE_AT_02 = 0.05
MAX_POSE_NOISE = (30.0, 0.5)        # degrees, fraction of the distance to the object
# Rotation vector (radians) and offset of the object in the capture world: a yaw of about
# 35 degrees and the object's up axis tilted about 11 degrees, its centre 18 cm off origin.
_WORLD_ROTATION = (0.16, -0.11, 0.61)
_WORLD_OFFSET = (0.14, -0.09, 0.07)
# A surface point is seen when the face in front at its pixel lies in its plane (world units).
_PLANE_TOL = 1e-3


def _object_to_world():
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.array(_WORLD_ROTATION))[0]
    T[:3, 3] = _WORLD_OFFSET
    return T


OBJECT_TO_WORLD = _object_to_world()


@dataclass(frozen=True)
class CaptureCamera:
    """The capture's distorted camera and the pinhole canvas its photos are resampled from.

    ``K`` (pixel-edge convention) and ``distortion`` for photos of ``size`` (w, h);
    ``pinhole_K``, ``pinhole_size`` the canvas, the same focal lengths with a margin that
    holds every ray of the photo; ``maps`` take the canvas to the photo.
    """

    K: np.ndarray
    distortion: undistort.Distortion
    size: tuple
    pinhole_K: np.ndarray
    pinhole_size: tuple
    maps: undistort.UndistortMaps

    @property
    def frame(self):
        """(h, w) bool of the canvas: the pixels a photo is interpolated from."""
        w, h = self.pinhole_size
        frame = np.zeros((h, w), bool)
        x0 = np.floor(self.maps.map_x).astype(np.int64)
        y0 = np.floor(self.maps.map_y).astype(np.int64)
        for dy in (0, 1):
            for dx in (0, 1):
                x, y = x0 + dx, y0 + dy
                inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
                frame[y[inside], x[inside]] = True
        return frame

    def photo(self, rgb, gains=None):
        """Return the distorted 8-bit (H, W, 3) image of a float RGB canvas render in [0, 1].

        ``gains`` (3,), when given, multiply the linear colours before quantisation.
        """
        out = undistort.remap(np.asarray(rgb, np.float32), self.maps, fill=1.0)
        if gains is not None:
            out = out * np.asarray(gains, np.float32)
        return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def capture_camera(size):
    """Return the camera whose 4:3 frame has a long side of ``size`` px (160: 160x120)."""
    w, h = size, int(round(size * 3 / 4))
    fx = 0.5 * w / math.tan(0.5 * synthetic.CAMERA_ANGLE_X)
    K = np.array([[fx, 0.0, PRINCIPAL_POINT[0] * w],
                  [0.0, FY_OVER_FX * fx, PRINCIPAL_POINT[1] * h],
                  [0.0, 0.0, 1.0]])
    # Where the photo's pixels fall in a pinhole image with K, then a canvas 2 px beyond.
    reach = undistort.distortion_maps(K, DISTORTION, (w, h), K, (w, h))
    x0, y0 = math.floor(reach.map_x.min()) - 2, math.floor(reach.map_y.min()) - 2
    x1, y1 = math.ceil(reach.map_x.max()) + 2, math.ceil(reach.map_y.max()) + 2
    pinhole_K = K.copy()
    pinhole_K[:2, 2] -= (x0, y0)
    pinhole_size = (x1 - x0 + 1, y1 - y0 + 1)
    maps = undistort.distortion_maps(K, DISTORTION, (w, h), pinhole_K, pinhole_size)
    return CaptureCamera(K, DISTORTION, (w, h), pinhole_K, pinhole_size, maps)


def capture_roots(out_dir, name, formats=FORMATS):
    """Return the {format: folder} that ``make_capture`` writes for ``formats``."""
    return {f: Path(out_dir) / f'{name}{FOLDER_SUFFIX[f]}' for f in formats}


def make_capture(out_dir, name='brick', size=160, n_train=60, n_test=20, seed=0,
                 formats=FORMATS, progress=None, burr_scale=1.0, background='white',
                 exposure=0.0, pose_noise=(0.0, 0.0)):
    """Write the synthetic object as captures in ``formats``; return {format: folder}.

    ``formats`` is a non-empty subset of ``FORMATS``; the folders are ``capture_roots``.
    The object, training grid (``n_train`` of the 14 x 15 ring views) and test split are
    ``synthetic.make_category``'s for the same seed, seen through ``capture_camera(size)``.
    ``progress``, when given, is called with 1 after each image. Refuses to write into an
    existing non-empty folder. What makes a capture harder, as a real one is (the defaults
    leave it as it was, byte for byte):

    - ``background`` 'room' sets the object on a textured table in a textured room
      (``room.py``). Training views from below the table top see its underside, not the
      object; the test views are those of the set that look from above the table
      (``room.test_samples_in_room``); points3D hold points of the room too.
    - ``exposure`` e in [0, 0.5]: each photo's linear colours are multiplied by an
      exposure gain in [1 - e, 1 + e] times white-balance gains within
      +-5 % e / 0.2 per channel; ``photometric.json`` records each photo's three gains.
    - ``pose_noise`` (degrees in [0, 30], fraction in [0, 0.5]): the written training
      poses are the true ones rotated by exactly that angle about a random axis through
      the camera centre and moved by that fraction of the camera's distance to the
      object centre in a random direction (``cameras.perturb_viewmat`` in the object
      frame); the photos stay taken at the true poses, which ``train_poses_true.json``
      records. The points3D tracks keep the true pixels, so their reprojection errors
      grow with the noise.
    """
    formats = tuple(formats)
    if not formats or any(f not in FORMATS for f in formats) or len(set(formats)) < len(formats):
        raise SyntheticConfigError(f'formats must be distinct names among {", ".join(FORMATS)},'
                                   f' got {list(formats)}')
    pose_noise = _check_options(background, exposure, pose_noise)
    roots = capture_roots(out_dir, name, formats)
    for root in roots.values():
        _check_args(Path(out_dir), root.name, size, n_train, n_test, burr_scale)
    camera = capture_camera(size)
    bricks = synthetic.build_object(seed)
    mesh = synthetic.object_mesh(bricks)
    room = room_mesh(mesh, seed) if background == 'room' else None
    world_from_object = np.linalg.inv(OBJECT_TO_WORLD)
    files = _Files(roots.values())
    gain_rng, photometric = np.random.default_rng([seed, 7]), {}
    names, viewmats = [], []
    for n, viewmat in enumerate(synthetic.train_viewmats(n_train)):
        names.append(f'frame_{n:05d}.jpg')
        viewmats.append(viewmat)
        gains = photometric[f'images/{names[-1]}'] = _draw_gains(gain_rng, exposure)
        rgb = _render(mesh, room, viewmat, camera)
        files.write(f'images/{names[-1]}', _encode('.jpg', camera.photo(rgb, gains)))
        if progress:
            progress(1)
    poses = {}
    if room is None:
        samples = synthetic.make_test_samples(bricks, camera.pinhole_K, *camera.pinhole_size,
                                              n_test, seed, burr_scale, frame=camera.frame)
    else:
        samples = test_samples_in_room(room, bricks, camera.pinhole_K, *camera.pinhole_size,
                                       n_test, seed, burr_scale, frame=camera.frame)
    for sample in samples:
        rel = str(Path(sample.rel_path).with_suffix('.jpg'))
        gains = photometric[rel] = _draw_gains(gain_rng, exposure)
        image = camera.photo(sample.image / 255.0, gains)
        files.write(rel, _encode('.jpg', image))
        if sample.defect_type != 'good':
            # the clean view through the same gains: only the defect's pixels differ
            mask = np.any(image != camera.photo(sample.clean / 255.0, gains), axis=2)
            if not mask.any():
                raise SyntheticConfigError(f'the {sample.defect_type} defect of {rel} fell '
                                           f'outside the {size} px frame; use another seed')
            files.write(f'ground_truth/{sample.defect_type}/{Path(rel).stem}_mask.png',
                        _encode('.png', mask.astype(np.uint8) * 255))
        poses[rel] = cameras.viewmat_to_blender_c2w(sample.viewmat @ world_from_object).tolist()
        if progress:
            progress(1)
    files.write('test_poses.json', json.dumps(poses, indent=1).encode())
    if exposure > 0:
        files.write('photometric.json', json.dumps(
            {rel: [float(g) for g in gains] for rel, gains in photometric.items()},
            indent=1).encode())
    written = [v @ world_from_object for v in viewmats]
    if any(pose_noise):
        files.write('train_poses_true.json', json.dumps(
            {f'images/{n}': cameras.viewmat_to_blender_c2w(v).tolist()
             for n, v in zip(names, written)}, indent=1).encode())
        noise_rng = np.random.default_rng([seed, 8])
        written = [cameras.perturb_viewmat(v, *pose_noise, noise_rng) @ world_from_object
                   for v in viewmats]
    if 'transforms' in roots:
        _write_transforms(roots['transforms'], camera, names, written)
    if 'colmap' in roots:
        points, colors, faces = _surface_points(mesh, np.random.default_rng([seed, 3]))
        scene = mesh
        if room is not None:
            scene = room.around(mesh)
            more = _background_points(room, len(mesh.tris), np.random.default_rng([seed, 4]))
            points, colors, faces = (np.concatenate(a) for a in zip((points, colors, faces),
                                                                    more))
        tracks = [_observations(scene, camera, v, points, faces, _faces_in_view(
            mesh, room, v, camera)) for v in viewmats]
        world_points = points @ OBJECT_TO_WORLD[:3, :3].T + OBJECT_TO_WORLD[:3, 3]
        _write_colmap(roots['colmap'], camera, names, written, world_points, colors, tracks)
    return roots


def _check_options(background, exposure, pose_noise):
    """Refuse out-of-range hardening options; return ``pose_noise`` as two floats."""
    if background not in BACKGROUNDS:
        raise SyntheticConfigError(f'background must be one of {", ".join(BACKGROUNDS)}, '
                                   f'got {background!r}')
    if not 0.0 <= exposure <= MAX_EXPOSURE:
        raise SyntheticConfigError(f'exposure must lie in [0, {MAX_EXPOSURE}], got {exposure}')
    try:
        deg, frac = (float(x) for x in pose_noise)
    except (TypeError, ValueError):
        raise SyntheticConfigError(f'pose_noise must be two numbers (degrees, fraction), '
                                   f'got {pose_noise!r}') from None
    if not (0.0 <= deg <= MAX_POSE_NOISE[0] and 0.0 <= frac <= MAX_POSE_NOISE[1]):
        raise SyntheticConfigError(f'pose_noise must lie in [0, {MAX_POSE_NOISE[0]:g}] degrees '
                                   f'and [0, {MAX_POSE_NOISE[1]:g}] of the distance, '
                                   f'got ({deg:g}, {frac:g})')
    return deg, frac


def _draw_gains(rng, exposure):
    """Draw one photo's (r, g, b) gains, exposure times white balance; None at exposure 0."""
    if exposure == 0:
        return None
    spread = WHITE_BALANCE_AT_02 * exposure / 0.2
    return rng.uniform(1 - exposure, 1 + exposure) * (1 + rng.uniform(-spread, spread, 3))


def _faces_in_view(mesh, room, viewmat, camera):
    """Return the indices into ``room.around(mesh)`` (or ``mesh``) of faces in view."""
    if room is None:
        return np.arange(len(mesh.tris))
    return np.r_[np.arange(len(mesh.tris)), len(mesh.tris) + room.faces_in_view(
        viewmat, camera.pinhole_K, camera.pinhole_size)]


def _render(mesh, room, viewmat, camera):
    """Float RGB canvas of ``mesh`` on white, or in ``room``."""
    if room is None:
        return render_mesh(mesh, viewmat, camera.pinhole_K, *camera.pinhole_size)[0]
    return room.render(mesh, viewmat, camera.pinhole_K, *camera.pinhole_size)[0]


class _Files:
    """Writes each file into every capture folder, so their images are byte-identical."""

    def __init__(self, roots):
        self.roots = list(roots)

    def write(self, rel, data):
        for root in self.roots:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def _encode(ext, image):
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == '.jpg' else []
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise OSError(f'could not encode a {image.shape} image as {ext}')
    return buf.tobytes()


def _write_transforms(root, camera, names, viewmats):
    K = camera.K
    lens = NerfstudioCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], *camera.size, camera.distortion)
    meta, _ = transforms_meta([{'file_path': f'images/{name}', 'viewmat': v, 'camera': lens}
                               for name, v in zip(names, viewmats)])
    (root / 'transforms.json').write_text(json.dumps(meta, indent=1))


def _surface_points(mesh, rng, n=N_POINTS):
    """``n`` points uniform on the surface, their shaded 8-bit colours, their faces."""
    edges = mesh.tris[:, 1:] - mesh.tris[:, :1]
    area = 0.5 * np.linalg.norm(np.cross(edges[:, 0], edges[:, 1]), axis=1)
    faces = rng.choice(len(area), size=n, p=area / area.sum())
    # Folding the unit square onto the triangle keeps the density uniform.
    u, v = rng.random((2, n))
    fold = u + v > 1.0
    u, v = np.where(fold, 1.0 - u, u), np.where(fold, 1.0 - v, v)
    points = mesh.tris[faces, 0] + u[:, None] * edges[faces, 0] + v[:, None] * edges[faces, 1]
    shaded = mesh.colors[faces] * shade(mesh.normals[faces])[:, None]
    return points, np.round(np.clip(shaded, 0.0, 1.0) * 255.0).astype(np.uint8), faces


def _background_points(room, first_face, rng):
    """Sample ``BACKGROUND_POINTS`` on the room's parts; faces count from ``first_face``."""
    points, colors, faces = [], [], []
    for part, n in BACKGROUND_POINTS.items():
        sel = np.nonzero(room.part == PARTS.index(part))[0]
        p, c, f = _surface_points(Mesh(*(getattr(room.mesh, k)[sel]
                                         for k in ('tris', 'normals', 'colors'))), rng, n)
        points.append(p)
        colors.append(c)
        faces.append(first_face + sel[f])
    return (np.concatenate(a) for a in (points, colors, faces))


def _observations(mesh, camera, viewmat, points, faces, in_view):
    """Return which points one view sees and their pixels in its photo (COLMAP convention).

    ``in_view`` are the indices of ``mesh``'s faces that can cover the view's canvas.
    """
    pw, ph = camera.pinhole_size
    # All faces, not only those facing the camera: the nearest surface is in front anyway.
    pix, depth = cameras.project_points(mesh.tris[in_view].reshape(-1, 3), viewmat,
                                        camera.pinhole_K)
    ids = _zbuffer(pix.reshape(-1, 3, 2), depth.reshape(-1, 3), in_view, ph, pw)
    uv, z = cameras.project_points(points, viewmat, camera.pinhole_K)
    col, row = np.floor(uv[:, 0]), np.floor(uv[:, 1])
    seen = (z > 0) & (col >= 0) & (col < pw) & (row >= 0) & (row < ph)
    front = ids[row[seen].astype(int), col[seen].astype(int)]
    idx = np.nonzero(seen)[0][front >= 0]
    front = front[front >= 0]
    normal = mesh.normals[front]
    in_plane = np.abs(np.einsum('ni,ni->n', normal, points[idx] - mesh.tris[front, 0]))
    facing = np.einsum('ni,ni->n', mesh.normals[faces[idx]], normal) > 0.99
    idx = idx[(in_plane < _PLANE_TOL) & facing]
    cam = points[idx] @ viewmat[:3, :3].T + viewmat[:3, 3]
    xy = cv2.projectPoints(cam.reshape(-1, 1, 3), np.zeros(3), np.zeros(3),
                           cameras.k_to_ros(camera.K),
                           np.asarray(camera.distortion.coeffs))[0].reshape(-1, 2) + 0.5
    inside = np.all((xy >= 0) & (xy < camera.size), axis=1)
    return idx[inside], xy[inside]


def _write_colmap(root, camera, names, viewmats, points, colors, tracks):
    """One OPENCV camera, the registered training images, points seen by two views or more."""
    fx, fy, cx, cy = camera.K[0, 0], camera.K[1, 1], camera.K[0, 2], camera.K[1, 2]
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(
        model='OPENCV', width=camera.size[0], height=camera.size[1], camera_id=1,
        params=[fx, fy, cx, cy, *camera.distortion.coeffs[:4]]))
    elements = [[] for _ in points]
    for image_id, (name, viewmat, (idx, xy)) in enumerate(zip(names, viewmats, tracks), 1):
        rec.add_image_with_trivial_frame(
            pycolmap.Image(name=name, keypoints=xy, camera_id=1, image_id=image_id),
            pycolmap.Rigid3d(viewmat[:3]))
        for k, point in enumerate(idx):
            elements[point].append(pycolmap.TrackElement(image_id, k))
    # A point SfM triangulates has two views at least; with one training view, keep all seen.
    min_views = min(2, len(names))
    for point, color, track in zip(points, colors, elements):
        if len(track) >= min_views:
            rec.add_point3D(point, pycolmap.Track(track), color)
    # Stores each point's reprojection error, as a COLMAP model has it (exactly 0 here).
    rec.update_point_3d_errors()
    sparse = root / 'sparse' / '0'
    sparse.mkdir(parents=True, exist_ok=True)
    rec.write(sparse)
