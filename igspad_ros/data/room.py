"""A room around the synthetic object: a wooden table top under it inside a textured box.

``mesh_render`` colours each face flat, so a texture here is geometry: every surface is a
grid of small square cells, two flat-coloured triangles each. The colours mix several
scales, as a real room has them (planks, grain and pores on the table; tiles and dirt on
the floor; wallpaper stripes and framed pictures on the walls), so feature matchers find
corners at every image scale. Everything is drawn from ``seed``: the same seed, the same
room.

Geometry, in the object's frame (z up, the object centred on the origin):

- the table top is a slab ``TABLE_THICKNESS`` thick whose top face is the plane of the
  object's base, a square of side ``2 * TABLE_HALF_OVER_EXTENT`` times the object's
  largest horizontal extent (3.2x), centred under it. Its corners stay inside 3.0 units of
  the vertical axis, so no camera of the synthetic grid or test set (radius 3.2-3.8) can be
  inside the slab or above it by a few cells only. Cameras below the table (elevations
  under about -7 degrees) see its textured underside, which hides the object, as a real
  table would; there are no legs, which those cameras would otherwise stand in.
- the room is a box whose floor, ceiling and four walls lie ``ROOM_HALF`` (8) units from
  the object's centre, more than twice the largest camera radius, with inward faces, so
  every camera ray ends on a textured surface and no white background is left.
"""
from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np

from igspad_ros.core import cameras
from igspad_ros.data import synthetic
from igspad_ros.data.mesh_render import Mesh, render_mesh

ROOM_HALF = 8.0
TABLE_HALF_OVER_EXTENT = 1.6
TABLE_THICKNESS = 0.08
# Cell sides (object units): about 3 px at 160 px on the table, 5 px on a far wall.
TABLE_CELL = 0.06
UNDERSIDE_CELL = 0.15
ROOM_CELL = 0.25
PATCH = 8
PARTS = ('table_top', 'table_underside', 'table_edge', 'room')
_WOOD = np.array([[0.55, 0.36, 0.20], [0.66, 0.46, 0.27], [0.47, 0.29, 0.16],
                  [0.72, 0.53, 0.33], [0.60, 0.40, 0.25]])
_FLOOR_TILES = np.array([[0.62, 0.30, 0.20], [0.80, 0.74, 0.60], [0.35, 0.37, 0.40],
                         [0.52, 0.55, 0.50], [0.22, 0.25, 0.32]])
_WALL_PAPER = np.array([[0.70, 0.64, 0.50], [0.42, 0.55, 0.62], [0.60, 0.48, 0.55],
                        [0.50, 0.60, 0.42]])
_PICTURE = np.array([[0.85, 0.20, 0.15], [0.15, 0.30, 0.70], [0.90, 0.80, 0.20],
                     [0.10, 0.45, 0.25], [0.12, 0.10, 0.10], [0.85, 0.85, 0.80]])
# Keep every colour off pure white (and black), whatever the shading.
_COLOR_RANGE = (0.04, 0.86)


@dataclass
class Room:
    """The room's mesh (object frame), its table top's height, each face's part and patches.

    A face's part is an index into ``PARTS``; a patch is a block of at most ``PATCH`` x
    ``PATCH`` cells of one surface: its faces (ascending indices), the centre and radius
    of a sphere holding them.
    """

    mesh: Mesh
    table_top: float            # height of the table's top face (object frame)
    part: np.ndarray            # (F,) int
    patch_faces: list           # P arrays of face indices
    patch_centre: np.ndarray    # (P, 3)
    patch_radius: np.ndarray    # (P,)

    def faces_in_view(self, viewmat, K, size):
        """Return the ascending indices of faces that may cover a pixel of a (w, h) image.

        Patches wholly behind the camera or outside one side of the view frustum (tested
        on their spheres, with a 2 px margin) are left out; their faces would draw nothing,
        so rendering only the rest gives the same image, faster.
        """
        cam = self.patch_centre @ viewmat[:3, :3].T + viewmat[:3, 3]
        x, y, z = cam.T
        r = self.patch_radius
        keep = z + r > 0
        (fx, _, cx), (_, fy, cy) = K[0], K[1]
        for coord, f, c, extent in ((x, fx, cx, size[0]), (y, fy, cy, size[1])):
            lo, hi = (-2 - c) / f, (extent + 2 - c) / f
            keep &= coord - lo * z >= -r * np.hypot(1, lo)
            keep &= hi * z - coord >= -r * np.hypot(1, hi)
        picked = [self.patch_faces[k] for k in np.nonzero(keep)[0]]
        return np.sort(np.concatenate(picked)) if picked else np.zeros(0, int)

    def around(self, object_mesh, faces=None):
        """Return ``object_mesh``'s faces followed by the room's (all, or those in ``faces``)."""
        faces = slice(None) if faces is None else faces
        return Mesh(*(np.concatenate([getattr(object_mesh, k), getattr(self.mesh, k)[faces]])
                      for k in ('tris', 'normals', 'colors')))

    def render(self, object_mesh, viewmat, K, width, height):
        """Render ``object_mesh`` in the room as ``render_mesh`` does: RGB, coverage (H, W)."""
        faces = self.faces_in_view(viewmat, K, (width, height))
        return render_mesh(self.around(object_mesh, faces), viewmat, K, width, height)


def room_mesh(object_mesh, seed=0):
    """Return the table and room around ``object_mesh`` (whose frame they share)."""
    rng = np.random.default_rng([seed, 5])
    corners = object_mesh.tris.reshape(-1, 3)
    lo, hi = corners.min(0), corners.max(0)
    cx, cy = (lo[:2] + hi[:2]) / 2
    half = TABLE_HALF_OVER_EXTENT * float(np.max(hi[:2] - lo[:2]))
    top, bottom = lo[2], lo[2] - TABLE_THICKNESS
    side = 2 * half
    n_top, n_under = round(side / TABLE_CELL), round(side / UNDERSIDE_CELL)
    surfaces = [
        ('table_top', (cx - half, cy - half, top), (side, 0, 0), (0, side, 0), (0, 0, 1),
         _wood(rng, n_top)),
        ('table_underside', (cx - half, cy + half, bottom), (side, 0, 0), (0, -side, 0),
         (0, 0, -1), _plywood(rng, n_under)),
    ]
    edge = _WOOD[0] * 0.8
    for o, u, n in (((cx + half, cy - half), (0, side), (1, 0)),
                    ((cx - half, cy + half), (0, -side), (-1, 0)),
                    ((cx + half, cy + half), (-side, 0), (0, 1)),
                    ((cx - half, cy - half), (side, 0), (0, -1))):
        strip = edge * (1 + 0.1 * rng.uniform(-1, 1, (n_under, 1, 1)))
        surfaces.append(('table_edge', (*o, bottom), (*u, 0), (0, 0, TABLE_THICKNESS),
                         (*n, 0), strip))
    H, n_room = ROOM_HALF, round(2 * ROOM_HALF / ROOM_CELL)
    surfaces += [
        ('room', (-H, -H, -H), (2 * H, 0, 0), (0, 2 * H, 0), (0, 0, 1), _floor(rng, n_room)),
        ('room', (-H, H, H), (2 * H, 0, 0), (0, -2 * H, 0), (0, 0, -1),
         _ceiling(rng, n_room)),
    ]
    for o, u, n in (((H, -H), (0, 2 * H), (-1, 0)), ((-H, H), (0, -2 * H), (1, 0)),
                    ((H, H), (-2 * H, 0), (0, -1)), ((-H, -H), (2 * H, 0), (0, 1))):
        surfaces.append(('room', (*o, -H), (*u, 0), (0, 0, 2 * H), (*n, 0),
                         _wall(rng, n_room)))
    meshes, blocks = zip(*(_grid(o, u, v, n, colors) for _, o, u, v, n, colors in surfaces))
    part = np.concatenate([np.full(len(m.tris), PARTS.index(name))
                           for (name, *_), m in zip(surfaces, meshes)])
    mesh = Mesh(*(np.concatenate([getattr(m, k) for m in meshes])
                  for k in ('tris', 'normals', 'colors')))
    # Number the blocks of all surfaces apart, then gather each one's faces.
    offsets = np.cumsum([0] + [b.max() + 1 for b in blocks])
    block = np.concatenate([b + o for b, o in zip(blocks, offsets)])
    order = np.argsort(block, kind='stable')
    faces = np.split(order, np.cumsum(np.bincount(block))[:-1])
    corners = [mesh.tris[f].reshape(-1, 3) for f in faces]
    centre = np.array([(c.min(0) + c.max(0)) / 2 for c in corners])
    radius = np.array([np.linalg.norm(c - m, axis=1).max() for c, m in zip(corners, centre)])
    return Room(mesh, float(top), part, faces, centre, radius)


def test_samples_in_room(room, bricks, K, width, height, n_test, seed=0, burr_scale=1.0,
                         frame=None):
    """Yield ``synthetic.make_test_samples``' test set seen from above the table, in the room.

    The table top hides the object from below, so views from under its plane are
    skipped: each kind takes, in order, the first of its samples whose camera is above
    and whose defect shows in the room render. They are rendered in the room: Missing and
    Burrs from their meshes, Stains painted afresh (``synthetic._paint_stains``, seeded
    apart, again until one shows) over the object. Masks, as there, are the pixels whose
    8-bit colour changed; ``frame`` (height, width) bool is the part of the render the photo
    shows, where a defect must change ``synthetic.min_defect_pixels`` pixels.
    """
    kinds = synthetic.DEFECT_TYPES
    quota = Counter(kinds[k % len(kinds)] for k in range(n_test))
    perfect = synthetic.object_mesh(bricks)
    min_pixels = synthetic.min_defect_pixels(width, height)
    # About a fifth of the views lie under the table: draw more, twice as many each retry.
    n_draw = n_test + n_test // 2 + 8
    while True:
        rng = np.random.default_rng([seed, 6])
        drawn = synthetic.make_test_samples(bricks, K, width, height, n_draw, seed, burr_scale,
                                            frame=frame)
        shown = {kind: _shown_in_room(room, perfect, [
            s for s in drawn if s.defect_type == kind
            and cameras.camera_center(s.viewmat)[2] > room.table_top], K, width, height,
            frame, min_pixels, rng, quota[kind]) for kind in quota}
        if all(len(shown[kind]) >= quota[kind] for kind in quota):
            break
        n_draw *= 2
    counts = Counter()
    for k in range(n_test):
        kind = kinds[k % len(kinds)]
        sample, image, clean = shown[kind][counts[kind]]
        yield synthetic.TestSample(f'test/{kind}/{counts[kind]}.png', kind, sample.viewmat,
                                   image, np.any(image != clean, axis=2), sample.mesh, clean)
        counts[kind] += 1


def _shown_in_room(room, perfect, samples, K, width, height, frame, min_pixels, rng, need):
    """Render up to ``need`` of ``samples`` in the room: [(sample, image, clean)].

    A defect that changes fewer than ``min_pixels`` pixels of the frame in the room (Stains
    after 20 paintings) skips its sample.
    """
    shown = []
    for sample in samples:
        if len(shown) == need:
            break
        rgb = room.render(perfect, sample.viewmat, K, width, height)[0]
        clean = synthetic._to_u8(rgb)
        if sample.defect_type == 'good':
            shown.append((sample, clean, clean))
            continue
        if sample.defect_type == 'Stains':
            cover = render_mesh(perfect, sample.viewmat, K, width, height)[1]
            tries = (synthetic._paint_stains(rgb, cover, rng) for _ in range(20))
        else:
            tries = iter([synthetic._to_u8(room.render(sample.mesh, sample.viewmat, K, width,
                                                       height)[0])])
        for image in tries:
            if synthetic.visible_pixels(np.any(image != clean, axis=2), frame) >= min_pixels:
                shown.append((sample, image, clean))
                break
    return shown


def _grid(origin, u, v, normal, colors):
    """Return the rectangle origin + [0, 1] u + [0, 1] v as a mesh of cells (nu, nv, 3 colours).

    Also returns each face's block of ``PATCH`` x ``PATCH`` cells, numbered from 0.
    """
    nu, nv = colors.shape[:2]
    o, u, v = (np.asarray(a, float) for a in (origin, u, v))
    i, j = np.meshgrid(np.arange(nu), np.arange(nv), indexing='ij')
    i, j = i.ravel()[:, None], j.ravel()[:, None]
    a = o + u * (i / nu) + v * (j / nv)
    b, c, d = a + u / nu, a + u / nu + v / nv, a + v / nv
    tris = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    cells = np.clip(colors.reshape(-1, 3), *_COLOR_RANGE)
    block = (i // PATCH * (-(-nv // PATCH)) + j // PATCH).ravel()
    return Mesh(tris, np.tile(np.asarray(normal, float), (len(tris), 1)),
                np.concatenate([cells, cells])), np.concatenate([block, block])


def _noise(rng, shape, scale):
    """Return smooth value noise in [-1, 1] on ``shape`` cells, ``scale`` cells per feature."""
    coarse = rng.uniform(-1, 1, (shape[0] // scale + 2, shape[1] // scale + 2))
    big = cv2.resize(coarse, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:shape[0], :shape[1]], -1, 1)


def _wood(rng, n):
    """Colour planks along v with butt joints, warped grain, dark seams, knots and pores."""
    plank = 9
    colors = np.empty((n, n, 3))
    warp = _noise(rng, (n, n), 12)
    for start in range(0, n, plank):
        rows = np.arange(start, min(start + plank, n))
        joints = np.sort(rng.integers(0, n, 2))
        for a, b in zip(np.r_[0, joints], np.r_[joints, n]):
            base = _WOOD[rng.integers(len(_WOOD))] * rng.uniform(0.9, 1.1)
            # grain lines run along the plank, wavy where the warp noise bends them
            grain = np.sin(2 * np.pi * ((rows[:, None] - start) / 3.1
                                        + 1.5 * warp[rows, a:b] + rng.uniform()))
            colors[rows, a:b] = base * (1 + 0.12 * grain[..., None])
            colors[rows, a] *= 0.6
        colors[start] *= 0.55
    di, dj = np.ogrid[:n, :n]
    for _ in range(rng.integers(4, 8)):
        ki, kj = rng.integers(0, n, 2)
        knot = ((di - ki) / rng.uniform(1, 2.5)) ** 2 + ((dj - kj) / rng.uniform(2, 5)) ** 2 < 1
        colors[knot] *= 0.5
    return colors * (1 + 0.06 * rng.uniform(-1, 1, (n, n, 1)))


def _plywood(rng, n):
    """Colour the underside: pale blotchy plywood between dark battens, with stamped labels.

    Faces looking down get only the ambient light, so this texture is drawn in strong
    contrast to stay visible there.
    """
    colors = np.array([0.85, 0.72, 0.52]) * (1 + 0.35 * _noise(rng, (n, n), 4))[..., None]
    colors[::7] = colors[:, ::7] = 0.08
    _rectangles(rng, colors, rng.integers(8, 14), (2, 6), _PICTURE)
    return colors * (1 + 0.15 * rng.uniform(-1, 1, (n, n, 1)))


def _floor(rng, n):
    """Colour square tiles of mixed colours with darker grout lines and smooth dirt."""
    tile = 4
    pick = rng.integers(len(_FLOOR_TILES), size=(n // tile + 1, n // tile + 1))
    colors = _FLOOR_TILES[np.kron(pick, np.ones((tile, tile), int))[:n, :n]]
    colors[::tile] *= 0.5
    colors[:, ::tile] *= 0.5
    colors *= (1 + 0.2 * _noise(rng, (n, n), 16))[..., None]
    return colors * (1 + 0.08 * rng.uniform(-1, 1, (n, n, 1)))


def _ceiling(rng, n):
    """Colour large pale panels on a dark grid, their brightness varying panel to panel."""
    panel = 8
    level = rng.uniform(0.6, 0.85, (n // panel + 1, n // panel + 1))
    colors = np.kron(level, np.ones((panel, panel)))[:n, :n, None] * np.array([1.0, 0.97, 0.9])
    colors[::panel] *= 0.4
    colors[:, ::panel] *= 0.4
    _rectangles(rng, colors, 6, (2, 5), _PICTURE[4:])
    return colors * (1 + 0.1 * rng.uniform(-1, 1, (n, n, 1)))


def _wall(rng, n):
    """Colour striped wallpaper with smooth stains and framed pictures of blocky content."""
    paper = _WALL_PAPER[rng.choice(len(_WALL_PAPER), 2, replace=False)]
    width = rng.integers(2, 5)
    stripe = (np.arange(n) // width) % 2
    colors = np.broadcast_to(paper[stripe][:, None], (n, n, 3)).copy()
    colors *= (1 + 0.15 * _noise(rng, (n, n), 10))[..., None]
    for _ in range(rng.integers(4, 8)):
        w, h = rng.integers(6, 20, 2)
        i, j = rng.integers(0, n - w), rng.integers(n // 5, n - h)
        colors[i:i + w, j:j + h] = _PICTURE[4] * 1.5
        content = _PICTURE[rng.integers(len(_PICTURE), size=((w - 2 + 1) // 2, (h - 2 + 1) // 2))]
        colors[i + 1:i + w - 1, j + 1:j + h - 1] = np.repeat(
            np.repeat(content, 2, 0), 2, 1)[:w - 2, :h - 2]
    return colors * (1 + 0.08 * rng.uniform(-1, 1, (n, n, 1)))


def _rectangles(rng, colors, count, sizes, palette):
    """Paint ``count`` axis-aligned rectangles of ``sizes`` cells in place."""
    n = colors.shape[0]
    for _ in range(count):
        w, h = rng.integers(*sizes, 2)
        i, j = rng.integers(0, n - w), rng.integers(0, n - h)
        colors[i:i + w, j:j + h] = palette[rng.integers(len(palette))]
