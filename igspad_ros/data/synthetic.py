"""Synthetic MAD-format categories: a procedural LEGO-like object with known defects.

The object (a base plate with coloured bricks and studs stacked on it, seeded) is a
triangle mesh rendered by a small z-buffer rasteriser of our own with flat Lambert
shading from fixed lights and a white background, supersampled 2x and area-downsampled
so edges are anti-aliased. It is deliberately not rendered with Gaussians, so a Gaussian
model has to learn it.

Layout written (MAD, see DESIGN.md): ``train/good/<n>.png`` on 14 elevation rings x 15
azimuths with ``transforms.json`` (Blender camera-to-world), ``test/<type>/<n>.png``
at random off-grid poses, ``ground_truth/<type>/<n>_mask.png`` and ``test_poses.json``.
Defects: Stains (blotches painted over the object in image space), Missing (a brick
with nothing on top removed and the view re-rendered), Burrs (small pyramids added to
a brick face, re-rendered). A mask is exactly the pixels whose 8-bit colour changed.
With ``n_train`` below 210 the training views are an evenly spread subset of the
ring-major grid (indices ``round(linspace(0, 209, n_train))``). ``family='animal'`` builds a
LEGO-like animal (``synthetic_animals.py``) instead of the brick, with the same cameras,
layout and defects.
"""
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from igspad_ros.core import cameras
from igspad_ros.data.mesh_render import Mesh, render_mesh

CAMERA_ANGLE_X = 0.6911
TRAIN_RADIUS = 3.5
ELEVATIONS_DEG = np.linspace(-30.0, 75.0, 14)
AZIMUTHS_DEG = np.arange(15) * 24.0
TEST_RADIUS = (3.2, 3.8)
DEFECT_TYPES = ('good', 'Burrs', 'Missing', 'Stains')
FAMILIES = ('brick', 'animal')
MAX_SIZE = 4096

PITCH = 0.22            # stud pitch (world units); the plate is 6 x 5 studs, 1.3 x 1.1
BRICK_H = 1.2 * PITCH   # LEGO brick height / pitch
PLATE_H = 0.4 * PITCH
STUD_R, STUD_H, STUD_SIDES = 0.3 * PITCH, 0.22 * PITCH, 8
GRID = (6, 5)
SHAPES = ((1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (2, 4))
PALETTE = np.array([
    [0.80, 0.08, 0.08], [0.05, 0.28, 0.75], [0.96, 0.78, 0.08], [0.10, 0.55, 0.20],
    [0.95, 0.48, 0.05], [0.55, 0.56, 0.58], [0.22, 0.22, 0.25], [0.62, 0.40, 0.80],
    [0.10, 0.65, 0.75], [0.80, 0.68, 0.48]])
DECAL_COLOR = np.array([0.08, 0.08, 0.10])


class SyntheticConfigError(ValueError):
    """A make_category argument is out of range or the output folder is unusable."""


@dataclass
class Brick:
    """One brick: grid cell origin, footprint in cells, layer (0 = the plate) and colour."""

    x: int
    y: int
    w: int
    d: int
    layer: int
    color: np.ndarray
    decal: bool = False


@dataclass
class TestSample:
    """One generated test image with its pose and the mesh it was rendered from."""

    __test__ = False   # not a pytest test class

    rel_path: str
    defect_type: str
    viewmat: np.ndarray
    image: np.ndarray       # (H, W, 3) uint8 RGB
    mask: np.ndarray        # (H, W) bool, the pixels whose colour changed
    mesh: Mesh              # perfect mesh, or the defective one for Missing/Burrs
    clean: np.ndarray       # (H, W, 3) uint8 RGB, the same view without the defect


def build_object(seed=0):
    """Return the bricks (plate first) of the seeded object; the same seed, the same object."""
    rng = np.random.default_rng([seed, 1])
    nx, ny = GRID
    bricks = [Brick(0, 0, nx, ny, 0, PALETTE[rng.integers(len(PALETTE))])]
    below = np.ones(GRID, bool)
    for layer, cover in ((1, 0.55), (2, 0.35), (3, 0.12)):
        occupied = np.zeros(GRID, bool)
        for _ in range(300):
            if occupied.mean() >= cover:
                break
            w, d = SHAPES[rng.integers(len(SHAPES))]
            if rng.random() < 0.5:
                w, d = d, w
            x, y = rng.integers(0, nx - w + 1), rng.integers(0, ny - d + 1)
            cells = np.s_[x:x + w, y:y + d]
            if occupied[cells].any() or not below[cells].any():
                continue
            occupied[cells] = True
            color = PALETTE[rng.integers(len(PALETTE))]
            while np.allclose(color, bricks[-1].color):
                color = PALETTE[rng.integers(len(PALETTE))]
            bricks.append(Brick(int(x), int(y), w, d, layer, color, decal=rng.random() < 0.3))
        below = occupied
    return bricks


def object_mesh(bricks, burrs=(), centre=None):
    """Mesh of ``bricks`` with studs on every exposed top cell, plus optional burr meshes.

    ``centre`` (3,) is the point moved to the origin; None: the brick's fixed centre.
    """
    tris, normals, colors = [], [], []
    top_cells = {}
    for b in bricks:
        for i in range(b.x, b.x + b.w):
            for j in range(b.y, b.y + b.d):
                top_cells[(i, j, _top(b))] = b
    covered = {(i, j, _bottom(b)) for b in bricks
               for i in range(b.x, b.x + b.w) for j in range(b.y, b.y + b.d)}
    for b in bricks:
        x0, y0, z0 = b.x * PITCH, b.y * PITCH, _bottom(b)
        x1, y1, z1 = x0 + b.w * PITCH, y0 + b.d * PITCH, _top(b)
        faces = (((x1, y0, z0), (0, b.d * PITCH, 0), (0, 0, z1 - z0), (1, 0, 0)),
                 ((x0, y1, z0), (0, -b.d * PITCH, 0), (0, 0, z1 - z0), (-1, 0, 0)),
                 ((x1, y1, z0), (-b.w * PITCH, 0, 0), (0, 0, z1 - z0), (0, 1, 0)),
                 ((x0, y0, z0), (b.w * PITCH, 0, 0), (0, 0, z1 - z0), (0, -1, 0)),
                 ((x0, y0, z1), (b.w * PITCH, 0, 0), (0, b.d * PITCH, 0), (0, 0, 1)),
                 ((x0, y1, z0), (b.w * PITCH, 0, 0), (0, -b.d * PITCH, 0), (0, 0, -1)))
        for k, (o, u, v, n) in enumerate(faces):
            # A printed decal: dark stripes across the brick's first side face.
            strips = 5 if b.decal and k == 0 else 1
            for s in range(strips):
                col = DECAL_COLOR if s % 2 == 1 else b.color
                _quad(tris, normals, colors, np.add(o, np.multiply(u, s / strips)),
                      np.multiply(u, 1 / strips), v, n, col)
        for i in range(b.x, b.x + b.w):
            for j in range(b.y, b.y + b.d):
                if (i, j, z1) not in covered:
                    _stud(tris, normals, colors, ((i + 0.5) * PITCH, (j + 0.5) * PITCH, z1),
                          b.color)
    mesh = Mesh(np.array(tris), np.array(normals), np.array(colors))
    # A fixed centre (the full-height build's box), so removing a brick moves nothing.
    if centre is None:
        centre = np.array([GRID[0] * PITCH / 2, GRID[1] * PITCH / 2,
                           (PLATE_H + 3 * BRICK_H) / 2])
    mesh.tris = mesh.tris - centre
    for burr in burrs:
        mesh = Mesh(np.concatenate([mesh.tris, burr.tris]),
                    np.concatenate([mesh.normals, burr.normals]),
                    np.concatenate([mesh.colors, burr.colors]))
    return mesh


def train_viewmats(n_train=210):
    """Training viewmats: ring-major grid (elevation outer), or an evenly spread subset."""
    views = []
    for elev in ELEVATIONS_DEG:
        for azim in AZIMUTHS_DEG:
            views.append(cameras.look_at(_sphere(TRAIN_RADIUS, azim, elev)))
    keep = np.round(np.linspace(0, len(views) - 1, n_train)).astype(int)
    return [views[k] for k in keep]


def make_test_samples(bricks, K, width, height, n_test, seed=0, burr_scale=1.0,
                      family='brick', frame=None):
    """Generate the test set: even split over good/Burrs/Missing/Stains, off-grid poses.

    A defective view is re-drawn (new pose and defect) until its mask holds at least
    0.5% of the pixels (at least 6), so every defect is visible. ``burr_scale`` multiplies
    the burrs' size and spread. ``family`` names the kind of object ``bricks`` build.
    ``frame`` (height, width) bool, when given, is the part of the render a photo shows
    (a capture's lens crops the canvas): only mask pixels inside it count.
    """
    _, mesh_of, without_part = _family(family)
    rng = np.random.default_rng([seed, 2])
    perfect = mesh_of(bricks)
    min_pixels = min_defect_pixels(width, height)
    counts = dict.fromkeys(DEFECT_TYPES, 0)
    samples = []
    for k in range(n_test):
        kind = DEFECT_TYPES[k % len(DEFECT_TYPES)]
        for _ in range(200):
            viewmat = _random_test_viewmat(rng)
            rgb, cover = render_mesh(perfect, viewmat, K, width, height)
            clean = _to_u8(rgb)
            mesh = perfect
            if kind == 'good':
                image = clean
            elif kind == 'Stains':
                image = _paint_stains(rgb, cover, rng)
            else:
                mesh = (without_part(bricks, rng) if kind == 'Missing'
                        else _with_burrs(bricks, viewmat, rng, burr_scale, mesh_of))
                image = _to_u8(render_mesh(mesh, viewmat, K, width, height)[0])
            mask = np.any(image != clean, axis=2)
            if kind == 'good' or visible_pixels(mask, frame) >= min_pixels:
                break
        else:
            raise SyntheticConfigError(f'could not make a visible {kind} defect at '
                                       f'{width}x{height} pixels; use a larger size')
        rel = f'test/{kind}/{counts[kind]}.png'
        counts[kind] += 1
        samples.append(TestSample(rel, kind, viewmat, image, mask, mesh, clean))
    return samples


def min_defect_pixels(width, height):
    """Fewest mask pixels a defective view must show: 0.5 % of the image, at least 6."""
    return max(6, math.ceil(0.005 * width * height))


def visible_pixels(mask, frame=None):
    """Count the pixels of ``mask`` inside ``frame`` (all of them for None)."""
    return int(mask.sum() if frame is None else (mask & frame).sum())


def make_category(out_dir, category='brick', size=800, n_train=210, n_test=40, seed=0,
                  progress=None, burr_scale=1.0, family='brick'):
    """Write a synthetic MAD-format category to ``out_dir/category`` and return its path.

    ``progress``, when given, is called with 1 after each image written. Refuses to
    write into an existing non-empty category folder. ``family`` is one of FAMILIES.
    """
    out_dir = Path(out_dir)
    _check_args(out_dir, category, size, n_train, n_test, burr_scale)
    build, mesh_of, _ = _family(family)
    root = out_dir / category
    K = cameras.intrinsics_from_fov(CAMERA_ANGLE_X, size, size)
    bricks = build(seed)
    mesh = mesh_of(bricks)
    (root / 'train' / 'good').mkdir(parents=True, exist_ok=True)
    frames = []
    for n, viewmat in enumerate(train_viewmats(n_train)):
        rel = f'train/good/{n}.png'
        _write_png(root / rel, _to_u8(render_mesh(mesh, viewmat, K, size, size)[0]))
        frames.append({'file_path': f'./train/good/{n}',
                       'transform_matrix': cameras.viewmat_to_blender_c2w(viewmat).tolist()})
        if progress:
            progress(1)
    (root / 'transforms.json').write_text(
        json.dumps({'camera_angle_x': CAMERA_ANGLE_X, 'frames': frames}, indent=1))
    poses = {}
    for sample in make_test_samples(bricks, K, size, size, n_test, seed, burr_scale, family):
        _write_png(root / sample.rel_path, sample.image)
        if sample.defect_type != 'good':
            stem = Path(sample.rel_path).stem
            _write_png(root / 'ground_truth' / sample.defect_type / f'{stem}_mask.png',
                       sample.mask.astype(np.uint8) * 255)
        poses[sample.rel_path] = cameras.viewmat_to_blender_c2w(sample.viewmat).tolist()
        if progress:
            progress(1)
    (root / 'test_poses.json').write_text(json.dumps(poses, indent=1))
    return root


def _family(name):
    """Return the (build, mesh, without_part) functions of the object family ``name``."""
    if name == 'brick':
        return build_object, object_mesh, _without_brick
    if name == 'animal':
        # imported here: the animals are built from this module's bricks
        from igspad_ros.data import synthetic_animals
        return (synthetic_animals.build_animal, synthetic_animals.animal_mesh,
                synthetic_animals.without_part)
    raise SyntheticConfigError(f'family must be one of {", ".join(FAMILIES)}, got {name!r}')


def _check_args(out_dir, category, size, n_train, n_test, burr_scale):
    if not 0.25 <= burr_scale <= 4.0:
        raise SyntheticConfigError(f'burr_scale must lie in [0.25, 4], got {burr_scale}')
    if not isinstance(size, int) or not 16 <= size <= MAX_SIZE:
        raise SyntheticConfigError(f'size must be an integer in [16, {MAX_SIZE}], got {size}')
    if not isinstance(n_train, int) or not 1 <= n_train <= 210:
        raise SyntheticConfigError(f'n_train must be an integer in [1, 210], got {n_train}')
    if not isinstance(n_test, int) or not 0 <= n_test <= 10000:
        raise SyntheticConfigError(f'n_test must be an integer in [0, 10000], got {n_test}')
    if not category or Path(category).name != category or category in ('.', '..'):
        raise SyntheticConfigError(f'category must be a plain folder name, got {category!r}')
    if out_dir.exists() and not out_dir.is_dir():
        raise SyntheticConfigError(f'output folder {out_dir} exists and is not a folder')
    root = out_dir / category
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise SyntheticConfigError(f'category folder {root} already exists and is not empty')


def _top(b):
    return PLATE_H + b.layer * BRICK_H


def _bottom(b):
    return 0.0 if b.layer == 0 else _top(b) - BRICK_H


def _quad(tris, normals, colors, o, u, v, n, color):
    o, u, v = np.asarray(o, float), np.asarray(u, float), np.asarray(v, float)
    a, b, c, d = o, o + u, o + u + v, o + v
    tris += [(a, b, c), (a, c, d)]
    normals += [n, n]
    colors += [color, color]


def _stud(tris, normals, colors, centre, color):
    cx, cy, z = centre
    ang = 2 * np.pi * (np.arange(STUD_SIDES) + 0.5) / STUD_SIDES
    ring = np.stack([cx + STUD_R * np.cos(ang), cy + STUD_R * np.sin(ang)], 1)
    for k in range(STUD_SIDES):
        p, q = ring[k], ring[(k + 1) % STUD_SIDES]
        mid = ang[k] + np.pi / STUD_SIDES
        _quad(tris, normals, colors, (p[0], p[1], z), (q[0] - p[0], q[1] - p[1], 0),
              (0, 0, STUD_H), (math.cos(mid), math.sin(mid), 0.0), color)
    top = [np.array([x, y, z + STUD_H]) for x, y in ring]
    for k in range(1, STUD_SIDES - 1):
        tris.append((top[0], top[k], top[k + 1]))
        normals.append((0.0, 0.0, 1.0))
        colors.append(color)


def _without_brick(bricks, rng):
    """Mesh with one brick removed that has no brick resting on it (never the plate)."""
    free = [b for b in bricks[1:]
            if not any(o.layer == b.layer + 1 and o.x < b.x + b.w and b.x < o.x + o.w
                       and o.y < b.y + b.d and b.y < o.y + o.d for o in bricks)]
    gone = free[rng.integers(len(free))]
    return object_mesh([b for b in bricks if b is not gone])


def _with_burrs(bricks, viewmat, rng, scale=1.0, mesh_of=object_mesh):
    """Mesh with 2-4 small pyramids sticking out of one camera-facing brick side.

    ``scale`` multiplies their base, height and spread around the anchor point;
    ``mesh_of`` meshes the bricks (the family's mesh function).
    """
    perfect = mesh_of(bricks)
    eye = cameras.camera_center(viewmat)
    sides = np.nonzero((np.abs(perfect.normals[:, 2]) < 0.5)
                       & (np.einsum('fi,fi->f', perfect.normals,
                                    eye - perfect.tris.mean(1)) > 0)
                       & (np.linalg.norm(np.cross(perfect.tris[:, 1] - perfect.tris[:, 0],
                                                  perfect.tris[:, 2] - perfect.tris[:, 0]),
                                         axis=1) > 0.01))[0]
    face = sides[rng.integers(len(sides))]
    n = perfect.normals[face]
    w = rng.dirichlet(np.ones(3))
    anchor = w @ perfect.tris[face]
    t1 = np.cross(n, (0.0, 0.0, 1.0))
    t1 /= np.linalg.norm(t1)
    t2 = np.cross(n, t1)
    tris, normals, colors = [], [], []
    for _ in range(rng.integers(2, 5)):
        c = anchor + scale * (t1 * rng.uniform(-0.06, 0.06) + t2 * rng.uniform(-0.04, 0.04)) \
            - n * 0.005
        r, h = scale * rng.uniform(0.04, 0.07), scale * rng.uniform(0.1, 0.2)
        # term by term as before the scale existed, so scale 1 gives the same bits
        apex = (c + n * h + scale * (t1 * rng.uniform(-0.03, 0.03))
                + scale * (t2 * rng.uniform(-0.03, 0.03)))
        corners = [c + r * (sx * t1 + sy * t2) for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1))]
        for k in range(4):
            tri = (corners[k], corners[(k + 1) % 4], apex)
            nn = np.cross(tri[1] - tri[0], tri[2] - tri[0])
            nn /= np.linalg.norm(nn)
            if nn @ (np.mean(tri, 0) - c) < 0:
                nn = -nn
            tris.append(tri)
            normals.append(nn)
            colors.append(perfect.colors[face])
    return Mesh(np.concatenate([perfect.tris, np.array(tris)]),
                np.concatenate([perfect.normals, np.array(normals)]),
                np.concatenate([perfect.colors, np.array(colors)]))


def _paint_stains(rgb, cover, rng):
    """Paint 1-3 soft-edged colour blotches over object pixels, as an image editor would."""
    H, W = cover.shape
    ss = 4
    ys, xs = np.nonzero(cover > 0.99)
    k = rng.integers(len(ys))
    blot = np.zeros((H * ss, W * ss), np.uint8)
    for _ in range(rng.integers(1, 4)):
        cx = (xs[k] + 0.5 + rng.normal(0, 0.03 * W)) * ss
        cy = (ys[k] + 0.5 + rng.normal(0, 0.03 * H)) * ss
        axes = (int(rng.uniform(0.03, 0.07) * W * ss), int(rng.uniform(0.02, 0.05) * H * ss))
        cv2.ellipse(blot, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    alpha = cv2.resize(blot.astype(np.float32) / 255.0, (W, H), interpolation=cv2.INTER_AREA)
    alpha = alpha * cover * rng.uniform(0.75, 0.95)
    # A stain colour far from the local object colour, so the blotch is visible.
    local = rgb[ys[k], xs[k]]
    color = np.where(local > 0.5, rng.uniform(0.0, 0.2, 3), rng.uniform(0.6, 0.9, 3))
    painted = _to_u8(rgb * (1 - alpha[..., None]) + color * alpha[..., None])
    # Only the blotch's pixels change: blending in float64 moves a float32 colour that lies
    # on a half step (0.3 * 255 = 76.5) to the next 8-bit value, which put whole faces far
    # from the stain into its mask (the pixels whose 8-bit colour changed).
    return np.where(alpha[..., None] > 0, painted, _to_u8(rgb))


def _random_test_viewmat(rng):
    """Random pose off the training grid: azimuth, elevation in range, radius, small roll."""
    while True:
        azim = rng.uniform(0.0, 360.0)
        elev = rng.uniform(ELEVATIONS_DEG[0], ELEVATIONS_DEG[-1])
        if (np.min(np.abs((AZIMUTHS_DEG - azim + 180.0) % 360.0 - 180.0)) > 1.0
                or np.min(np.abs(ELEVATIONS_DEG - elev)) > 1.0):
            break
    viewmat = cameras.look_at(_sphere(rng.uniform(*TEST_RADIUS), azim, elev))
    roll = math.radians(rng.uniform(-8.0, 8.0))
    R = np.eye(4)
    R[:2, :2] = [[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]]
    return R @ viewmat


def _sphere(radius, azim_deg, elev_deg):
    a, e = math.radians(azim_deg), math.radians(elev_deg)
    return radius * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


def _to_u8(rgb):
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def _write_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise OSError(f'could not write {path}')
