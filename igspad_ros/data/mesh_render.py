"""A small triangle-mesh rasteriser: z-buffer, flat Lambert shading, white background.

It renders the synthetic objects (``synthetic.py``) independently of the Gaussian
renderer, so a Gaussian scene has to learn the object from images. Pixel (i, j) has its
centre at (j + 0.5, i + 0.5), as everywhere in the package.
"""
from dataclasses import dataclass

import cv2
import numpy as np

from igspad_ros.core import cameras

# Two fixed directional lights plus ambient, so every face orientation shades differently.
_LIGHTS = (np.array([0.602, -0.2, 0.773]), np.array([-0.314, 0.943, 0.105]))
_LIGHT_GAIN = (0.6, 0.3)
_AMBIENT = 0.28


@dataclass
class Mesh:
    """Triangle soup: corners (F, 3, 3), outward normals (F, 3), base colours (F, 3)."""

    tris: np.ndarray
    normals: np.ndarray
    colors: np.ndarray


def shade(normals):
    """Lambert shading factor per face from the fixed lights (numpy (F,))."""
    s = np.full(len(normals), _AMBIENT)
    for light, gain in zip(_LIGHTS, _LIGHT_GAIN):
        s += gain * np.clip(normals @ light, 0.0, None)
    return np.clip(s, 0.0, 1.0)


def render_mesh(mesh, viewmat, K, width, height, supersample=2):
    """Render ``mesh`` with a z-buffer; return RGB float32 (H, W, 3) and coverage (H, W).

    Background is white. Rendered at ``supersample`` times the size and area-downsampled,
    which anti-aliases the edges. Pixel (i, j) has its centre at (j + 0.5, i + 0.5).
    """
    W, H = width * supersample, height * supersample
    K2 = cameras.scale_intrinsics(K, (width, height), (W, H))
    eye = cameras.camera_center(viewmat)
    front = np.nonzero(np.einsum('fi,fi->f', mesh.normals, eye - mesh.tris.mean(1)) > 0)[0]
    pix, depth = cameras.project_points(mesh.tris[front].reshape(-1, 3), viewmat, K2)
    pix, depth = pix.reshape(-1, 3, 2), depth.reshape(-1, 3)
    ids = _zbuffer(pix, depth, front, H, W)
    shaded = mesh.colors * shade(mesh.normals)[:, None]
    hit = ids >= 0
    img = np.ones((H, W, 3))
    img[hit] = shaded[ids[hit]]
    rgb = cv2.resize(img.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    cover = cv2.resize(hit.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return np.clip(rgb, 0.0, 1.0), cover


def _zbuffer(pix, depth, face_ids, H, W):
    """Face id per pixel (-1 = background) of projected triangles, nearest depth wins.

    Triangles are batched by bounding-box size (powers of two) and evaluated on their
    box grids at once; the fragments are then resolved by sorting on (pixel, depth).
    """
    ok = depth.min(1) > 1e-6
    pix, depth, face_ids = pix[ok], depth[ok], face_ids[ok]
    lo = np.maximum(np.ceil(pix.min(1) - 0.5), 0).astype(np.int64)       # (F, 2) x, y
    hi = np.minimum(np.floor(pix.max(1) - 0.5), [W - 1, H - 1]).astype(np.int64)
    ext = hi - lo + 1
    ok = np.all(ext > 0, axis=1)
    pix, depth, face_ids, lo, hi, ext = (a[ok] for a in (pix, depth, face_ids, lo, hi, ext))
    bucket = 2 ** np.ceil(np.log2(ext)).astype(np.int64)
    frag_pixel, frag_z, frag_face = [], [], []
    for bw, bh in np.unique(bucket, axis=0):
        sel = np.nonzero((bucket[:, 0] == bw) & (bucket[:, 1] == bh))[0]
        for chunk in np.array_split(sel, max(1, len(sel) * bw * bh // 1_000_000)):
            p, d = pix[chunk], depth[chunk]
            cols = lo[chunk, 0, None, None] + np.arange(bw)[None, None, :]    # (n, 1, bw)
            rows = lo[chunk, 1, None, None] + np.arange(bh)[None, :, None]    # (n, bh, 1)
            X, Y = cols + 0.5, rows + 0.5
            ax, ay, bx, by, cx, cy = (p[:, k // 2, k % 2, None, None] for k in range(6))
            area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
            area = np.where(area == 0, np.inf, area)
            w0 = ((bx - X) * (cy - Y) - (by - Y) * (cx - X)) / area
            w1 = ((cx - X) * (ay - Y) - (cy - Y) * (ax - X)) / area
            w2 = 1.0 - w0 - w1
            inside = ((w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (cols <= hi[chunk, 0, None, None])
                      & (rows <= hi[chunk, 1, None, None]) & np.isfinite(area))
            # Perspective-correct depth: 1/z is linear in screen space.
            z = 1.0 / (w0 / d[:, 0, None, None] + w1 / d[:, 1, None, None]
                       + w2 / d[:, 2, None, None])
            n, r, c = np.nonzero(inside)
            frag_pixel.append(rows[n, r, 0] * W + cols[n, 0, c])
            frag_z.append(z[n, r, c])
            frag_face.append(face_ids[chunk][n])
    ids = np.full(H * W, -1, np.int64)
    if frag_pixel:
        pixel, z, face = (np.concatenate(a) for a in (frag_pixel, frag_z, frag_face))
        order = np.lexsort((face, z, pixel))
        first = np.r_[True, pixel[order][1:] != pixel[order][:-1]]
        ids[pixel[order][first]] = face[order][first]
    return ids.reshape(H, W)
