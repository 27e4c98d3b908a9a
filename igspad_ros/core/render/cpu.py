"""Tile-binned torch rasteriser for 3D Gaussians (the CPU backend).

Same image formation as gsplat's CUDA rasteriser: front-to-back compositing in depth
order, alpha = min(0.999, opacity * exp(-sigma)), contributions with alpha < 1/255
skipped, a pixel stops before the Gaussian that would bring its transmittance to
1e-4 or below. Work is split into square tiles: each Gaussian is paired only with
the tiles its alpha >= 1/255 footprint touches (3.33 sigma at opacity 1, tighter
below, as gsplat), the pairs are sorted by (tile, depth) and each tile's list is cut
into padded chunks of CHUNK_SIZE, so every tile evaluates its pixels against its own
list only: (chunks, pixels, CHUNK_SIZE) tensors, a matmul for the Gaussian exponents,
cumulative sums for the transmittance. The compositing has a hand-written backward
(``_Composite``); autograd carries the rest (pair set-up, projection, SH) back to the
scene and the viewmats.

A step allocates a few dozen megabyte-sized tensors. glibc serves those with fresh
mmap pages by default, and faulting them in cost as much as the arithmetic (10k page
faults per 64 px step), so the first CPU render raises glibc's mmap and trim
thresholds once for the process (``keep_heap_pages``); freed blocks are then reused.
"""
import ctypes
import ctypes.util
import math

import torch

from igspad_ros.core.render.projection import project

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
TILE_SIZE = 4        # px; 4 and 24-pair chunks were fastest on trained 64-128 px scenes
CHUNK_SIZE = 24
_PAD_SIGMA = 1e4    # exponent of padding entries: alpha = exp(-1e4) = 0
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3     # glibc mallopt parameters
_heap_tuned = None     # None: not tried yet


def rasterize_tiled(scene, viewmats, Ks, width, height, background, tile_size=TILE_SIZE,
                    chunk_size=CHUNK_SIZE):
    """Render C cameras; returns (rgb (C,H,W,3), alpha (C,H,W,1), info)."""
    keep_heap_pages()
    proj = project(scene, viewmats, Ks, width, height)
    n_cams, n = proj.depths.shape
    ntx, nty = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_tiles = n_cams * nty * ntx
    cam, gid, tile = _bin_pairs(proj, width, height, tile_size, ntx, nty)
    dtype, device = scene.means.dtype, scene.device

    # Per-pair quadratic form in tile-centred pixel coordinates: sigma - log(opacity)
    # = basis(px, py) . coef, so each tile's (pixels x L) exponents are one matmul.
    ty, tx = tile // ntx, tile % ntx
    centre = torch.stack([tx, ty], dim=-1).to(dtype) * tile_size + 0.5 * tile_size
    mean = proj.means2d[cam, gid] - centre                     # (M, 2)
    a, b, c = proj.conics[cam, gid].unbind(-1)
    mx, my = mean.unbind(-1)
    log_opac = torch.nn.functional.logsigmoid(scene.opacity_logits)[gid]
    coef = torch.stack([-0.5 * a, -0.5 * c, -b, a * mx + b * my, c * my + b * mx,
                        -(0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my) + log_opac],
                       dim=-1)                                  # (M, 6), negated sigma
    feat = torch.cat([proj.colors[cam, gid], torch.ones_like(mx)[:, None]], dim=-1)  # (M, 4)

    tile_global = cam * (nty * ntx) + tile
    slot, n_chunks, chunk_tile = _chunk_slots(tile_global, n_tiles, chunk_size)
    pad_coef = torch.zeros(n_chunks * chunk_size, 6, dtype=dtype, device=device)
    pad_coef[:, 5] = -_PAD_SIGMA
    pad_coef = pad_coef.index_put((slot,), coef).view(n_chunks, chunk_size, 6)
    pad_feat = torch.zeros(n_chunks * chunk_size, 4, dtype=dtype, device=device)
    pad_feat = pad_feat.index_put((slot,), feat).view(n_chunks, chunk_size, 4)

    basis = _pixel_basis(tile_size, dtype, device)              # (P, 6)
    segments = _Segments(chunk_tile, n_tiles)
    out = _Composite.apply(pad_coef, pad_feat, basis, segments)   # (tiles, P, 4)

    out = out.view(n_cams, nty, ntx, tile_size, tile_size, 4).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(n_cams, nty * tile_size, ntx * tile_size, 4)[:, :height, :width]
    alpha_img = out[..., 3:]
    rgb = out[..., :3] + background * (1.0 - alpha_img)
    info = _info(proj, width, height, n_cams, tile_size, cam.shape[0])
    return rgb, alpha_img, info


def keep_heap_pages():
    """Once per process on glibc: keep blocks up to 32 MB on the heap and freed memory mapped.

    Sets M_MMAP_THRESHOLD to 32 MB (glibc's maximum) and M_TRIM_THRESHOLD to 256 MB.
    Returns True when the thresholds are set (now or before), False where glibc's
    ``mallopt`` is not available.
    """
    global _heap_tuned
    if _heap_tuned is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library('c'))
            _heap_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
                               and libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20))
        except (OSError, AttributeError, TypeError):
            _heap_tuned = False
    return _heap_tuned


def _info(proj, width, height, n_cams, tile_size, n_pairs):
    """Collect what gsplat's DefaultStrategy reads (means2d keeps its autograd graph)."""
    return {'means2d': proj.means2d, 'radii': proj.radii, 'depths': proj.depths,
            'conics': proj.conics, 'opacities': proj.opacities, 'width': width,
            'height': height, 'n_cameras': n_cams, 'gaussian_ids': None,
            'tile_size': tile_size, 'n_pairs': n_pairs}


@torch.no_grad()
def _bin_pairs(proj, width, height, tile_size, ntx, nty):
    """(camera, gaussian, tile) of every Gaussian-tile overlap, sorted by tile then depth.

    The footprint is the ellipse where opacity * exp(-sigma) >= 1/255, bounded by its
    axis-aligned box: half-widths sqrt(2 ln(255 o) cov_xx), sqrt(2 ln(255 o) cov_yy).
    """
    n_cams, n = proj.depths.shape
    a, b, c = proj.conics.unbind(-1)
    det = (a * c - b * b).clamp_min(1e-20)
    level = 2.0 * torch.log(proj.opacities * 255.0).clamp_min(0.0)    # (N,)
    ext_x = torch.sqrt(level * c / det) * 1.0001 + 1e-3
    ext_y = torch.sqrt(level * a / det) * 1.0001 + 1e-3
    mx, my = proj.means2d[..., 0], proj.means2d[..., 1]
    visible = (proj.radii > 0).all(-1) & (level > 0)
    x0 = torch.floor((mx - ext_x) / tile_size).clamp(0, ntx - 1)
    x1 = torch.floor((mx + ext_x) / tile_size).clamp(0, ntx - 1)
    y0 = torch.floor((my - ext_y) / tile_size).clamp(0, nty - 1)
    y1 = torch.floor((my + ext_y) / tile_size).clamp(0, nty - 1)
    visible &= (mx + ext_x > 0) & (mx - ext_x < width) & (my + ext_y > 0) & (my - ext_y < height)
    visible &= torch.isfinite(x0 + x1 + y0 + y1)
    cam, gid = torch.nonzero(visible, as_tuple=True)
    x0, x1, y0, y1 = (v[cam, gid].long() for v in (x0, x1, y0, y1))
    w = x1 - x0 + 1
    counts = w * (y1 - y0 + 1)
    rep = torch.repeat_interleave(torch.arange(cam.shape[0]), counts)
    offset = torch.arange(rep.shape[0]) - (torch.cumsum(counts, 0) - counts)[rep]
    tile = (y0[rep] + offset // w[rep]) * ntx + x0[rep] + offset % w[rep]
    cam, gid = cam[rep], gid[rep]
    # Stable depth rank per camera, so ties keep index order like the reference.
    order = torch.argsort(proj.depths, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n).expand(n_cams, n).contiguous())
    key = (cam * (nty * ntx) + tile) * n + rank[cam, gid]
    perm = torch.argsort(key)
    return cam[perm], gid[perm], tile[perm]


@torch.no_grad()
def _chunk_slots(tile_ids, n_tiles, chunk_size):
    """Split each tile's sorted list into chunks of ``chunk_size`` pairs.

    Returns (flat slot chunk * chunk_size + offset of each pair, number of chunks,
    tile of each chunk); chunks of one tile are consecutive and in depth order.
    """
    counts = torch.bincount(tile_ids, minlength=n_tiles)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(tile_ids.shape[0]) - start[tile_ids]
    n_chunk = (counts + chunk_size - 1) // chunk_size
    chunk_start = torch.cumsum(n_chunk, 0) - n_chunk
    chunk = chunk_start[tile_ids] + pos // chunk_size
    n_chunks = int(n_chunk.sum())
    chunk_tile = torch.repeat_interleave(torch.arange(n_tiles), n_chunk)
    return chunk * chunk_size + pos % chunk_size, n_chunks, chunk_tile


class _Segments:
    """Chunks grouped by tile: sums over the chunks before / after each one in its tile."""

    def __init__(self, chunk_tile, n_tiles):
        counts = torch.bincount(chunk_tile, minlength=n_tiles)
        self.n_tiles, self.chunk_tile = n_tiles, chunk_tile
        first = torch.cumsum(counts, 0) - counts
        self.within = torch.arange(chunk_tile.shape[0]) - first[chunk_tile]
        self.c_max = int(counts.max()) if chunk_tile.numel() else 0

    def before_and_after(self, values):
        """Exclusive prefix and suffix sums (chunks, P) of ``values`` within each tile."""
        grid = values.new_zeros(self.n_tiles, self.c_max, values.shape[1])
        grid[self.chunk_tile, self.within] = values
        prefix = torch.cumsum(grid, dim=1)[self.chunk_tile, self.within]
        total = grid.sum(dim=1)[self.chunk_tile]
        return prefix - values, total - prefix


class _Composite(torch.autograd.Function):
    """Front-to-back alpha compositing of padded per-tile chunks, with a fused backward.

    Inputs: coef (chunks, Lc, 6), the negated sigma - log(opacity) quadratic forms, and
    feat (chunks, Lc, 4), colour and 1. Output: (tiles, P, 4), premultiplied colour and
    alpha per pixel. The backward is the 3DGS one: for the weight w_i = alpha_i T_i,
    dL/dalpha_k = T_k g_k - sum_{i>k} w_i g_i / (1 - alpha_k), where g_i is the output
    gradient dotted with feat_i; the suffix sums run across the chunks of a tile.
    """

    @staticmethod
    def forward(ctx, coef, feat, basis, segments):
        """Composite; the transmittance cut-off mask is constant for the gradients."""
        alpha = torch.matmul(basis, coef.transpose(1, 2)).exp_()       # (chunks, P, Lc)
        alpha.clamp_(max=ALPHA_MAX).masked_fill_(alpha < ALPHA_MIN, 0.0)
        log_keep = torch.log1p(-alpha)
        log_t = torch.cumsum(log_keep, dim=2)                          # log T after each
        before, _ = segments.before_and_after(log_t[:, :, -1])
        log_t += before[:, :, None]
        live = log_t > math.log(T_MIN)
        trans = log_t.sub_(log_keep).exp_().mul_(live)                 # T before, cut off
        weight = alpha * trans
        out = coef.new_zeros(segments.n_tiles, alpha.shape[1], 4)
        out.index_add_(0, segments.chunk_tile, torch.matmul(weight, feat))
        ctx.save_for_backward(alpha, trans, feat, basis)
        ctx.segments = segments
        return out

    @staticmethod
    def backward(ctx, grad_out):
        """Gradients for coef and feat."""
        alpha, trans, feat, basis = ctx.saved_tensors
        segments = ctx.segments
        grad_chunk = grad_out[segments.chunk_tile]                      # (chunks, P, 4)
        weight = alpha * trans
        grad_feat = torch.matmul(weight.transpose(1, 2), grad_chunk)   # (chunks, Lc, 4)
        g = torch.matmul(grad_chunk, feat.transpose(1, 2))             # (chunks, P, Lc)
        q = weight.mul_(g)
        prefix = torch.cumsum(q, dim=2)
        _, after = segments.before_and_after(prefix[:, :, -1])
        # later_k = sum of q over the Gaussians behind k in its tile.
        later = prefix.neg_().add_(after[:, :, None] - prefix[:, :, -1:])
        grad_alpha = g.mul_(trans).sub_(later.div_(1.0 - alpha))
        grad_s = grad_alpha.mul_(alpha).masked_fill_(alpha >= ALPHA_MAX, 0.0)
        grad_coef = torch.matmul(grad_s.transpose(1, 2), basis)         # (chunks, Lc, 6)
        return grad_coef, grad_feat, None, None


_BASIS_CACHE = {}


def _pixel_basis(tile_size, dtype, device):
    """(P, 6) rows [x^2, y^2, xy, x, y, 1] of the pixel centres relative to the tile centre."""
    key = (tile_size, dtype, str(device))
    if key not in _BASIS_CACHE:
        r = torch.arange(tile_size, dtype=torch.float64) + 0.5 - 0.5 * tile_size
        y, x = torch.meshgrid(r, r, indexing='ij')
        x, y = x.reshape(-1), y.reshape(-1)
        basis = torch.stack([x * x, y * y, x * y, x, y, torch.ones_like(x)], dim=-1)
        _BASIS_CACHE[key] = basis.to(dtype=dtype, device=device)
    return _BASIS_CACHE[key]
