"""3D Gaussian scene: parameters, the standard 3DGS PLY layout and the sidecar files.

A scene is N anisotropic Gaussians: means, rotations (unit quaternions, wxyz),
log-scales, opacity logits and spherical-harmonic colour coefficients of degree d
(K = (d + 1)^2 per channel, ``sh[:, 0]`` the DC term). The PLY layout is the one the
original 3DGS code writes (and gsplat, nerfstudio and the common web viewers read):
one ``vertex`` element with float properties ``x y z nx ny nz f_dc_0..2
f_rest_0..3(K-1)-1 opacity scale_0..2 rot_0..3``, where ``f_rest`` is channel-major
(all red coefficients, then green, then blue), opacity is the logit and scales are logs.

Sidecars beside ``scene.ply``: ``scene.meta.json`` (image size, intrinsics, category,
training report, thresholds, ...) and ``scene.index.npz`` (the retrieval index).
"""
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

MAX_GAUSSIANS = 20_000_000
MAX_SH_DEGREE = 4
_HEADER_LIMIT = 1 << 16         # a PLY header is a few hundred bytes; refuse absurd ones
_PLY_TYPES = {'char': 1, 'uchar': 1, 'int8': 1, 'uint8': 1, 'short': 2, 'ushort': 2,
              'int16': 2, 'uint16': 2, 'int': 4, 'uint': 4, 'int32': 4, 'uint32': 4,
              'float': 4, 'float32': 4, 'double': 8, 'float64': 8}
_SIDECARS = {'index': '.index.npz', 'meta': '.meta.json'}
_META_REQUIRED = ('width', 'height', 'K', 'camera_angle_x', 'category')


class PlyFormatError(ValueError):
    """A scene PLY file is unreadable, corrupt or not in the 3DGS layout."""


class SceneMetaError(ValueError):
    """A scene's ``.meta.json`` sidecar is missing or malformed."""


@dataclass
class GaussianScene:
    """N 3D Gaussians as torch tensors (float32 unless built otherwise).

    means (N, 3); quats (N, 4) wxyz, not necessarily normalised; log_scales (N, 3);
    opacity_logits (N,); sh (N, K, 3) with K = (sh_degree + 1)^2, sh[:, 0] the DC term.
    """

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh: torch.Tensor

    def __post_init__(self):
        n = self.means.shape[0]
        shapes = {'means': (n, 3), 'quats': (n, 4), 'log_scales': (n, 3),
                  'opacity_logits': (n,)}
        for name, shape in shapes.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f'GaussianScene.{name}: expected shape {shape}, '
                                 f'got {tuple(getattr(self, name).shape)}')
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f'GaussianScene.sh: expected shape ({n}, K, 3), '
                             f'got {tuple(self.sh.shape)}')
        _sh_degree_of(self.sh.shape[1], 'GaussianScene.sh')

    @property
    def n(self):
        """Number of Gaussians."""
        return self.means.shape[0]

    @property
    def sh_degree(self):
        """Spherical-harmonics degree d of the colours, K = (d + 1)^2."""
        return _sh_degree_of(self.sh.shape[1], 'GaussianScene.sh')

    @property
    def device(self):
        """Torch device of the tensors."""
        return self.means.device

    def tensors(self):
        """Return the five parameter tensors as a dict keyed by field name."""
        return {'means': self.means, 'quats': self.quats, 'log_scales': self.log_scales,
                'opacity_logits': self.opacity_logits, 'sh': self.sh}

    def to(self, device=None, dtype=None):
        """Return a copy on ``device`` (and ``dtype`` when given)."""
        return GaussianScene(**{k: v.to(device=device, dtype=dtype)
                                for k, v in self.tensors().items()})

    def detach(self):
        """Return a copy whose tensors are detached from any autograd graph."""
        return GaussianScene(**{k: v.detach().clone() for k, v in self.tensors().items()})

    @classmethod
    def from_points(cls, points, colors, sh_degree=3, scale=None, opacity=0.1):
        """Build a scene of isotropic Gaussians at ``points`` (N, 3) with RGB ``colors``.

        ``scale`` is the standard deviation of every Gaussian; by default the mean
        distance to the 3 nearest neighbours (as the 3DGS initialisation). Colours set
        the DC term so that the rendered colour equals them; higher SH terms start at 0.
        """
        points = torch.as_tensor(np.asarray(points), dtype=torch.float32)
        colors = torch.as_tensor(np.asarray(colors), dtype=torch.float32)
        n = points.shape[0]
        if points.ndim != 2 or points.shape[1] != 3 or n == 0:
            raise ValueError(f'from_points: points must be (N, 3) with N > 0, '
                             f'got {tuple(points.shape)}')
        if tuple(colors.shape) != (n, 3):
            raise ValueError(f'from_points: colors must be ({n}, 3), got {tuple(colors.shape)}')
        if not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f'from_points: sh_degree must lie in [0, {MAX_SH_DEGREE}]')
        if scale is None:
            k = min(3, n - 1)
            if k > 0:
                dist = torch.cdist(points, points)
                dist.fill_diagonal_(float('inf'))
                knn = dist.topk(k, largest=False).values.mean(dim=1)
            else:
                knn = torch.ones(n)
            log_scales = torch.log(knn.clamp_min(1e-7))[:, None].repeat(1, 3)
        else:
            log_scales = torch.full((n, 3), math.log(scale))
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        sh = torch.zeros(n, (sh_degree + 1) ** 2, 3)
        sh[:, 0] = rgb_to_sh_dc(colors)
        logit = math.log(opacity / (1.0 - opacity))
        return cls(points.clone(), quats, log_scales, torch.full((n,), logit), sh)

    def save_ply(self, path):
        """Write the scene as a binary little-endian PLY in the standard 3DGS layout."""
        path = Path(path)
        n, k = self.n, self.sh.shape[1]
        names = _ply_property_names(k)
        sh = self.sh.detach().to('cpu', torch.float32)
        columns = [self.means.detach().cpu().float(), torch.zeros(n, 3), sh[:, 0],
                   sh[:, 1:].permute(0, 2, 1).reshape(n, 3 * (k - 1)),
                   self.opacity_logits.detach().cpu().float()[:, None],
                   self.log_scales.detach().cpu().float(), self.quats.detach().cpu().float()]
        data = torch.cat(columns, dim=1).numpy()
        vertex = np.empty(n, dtype=[(name, '<f4') for name in names])
        for i, name in enumerate(names):
            vertex[name] = data[:, i]
        path.parent.mkdir(parents=True, exist_ok=True)
        PlyData([PlyElement.describe(vertex, 'vertex')], text=False,
                byte_order='<').write(str(path))

    @classmethod
    def load_ply(cls, path):
        """Read a 3DGS PLY (ours, the original code's, gsplat's or nerfstudio's).

        Raises PlyFormatError naming the file when it is unreadable, truncated, claims
        more data than it holds, lacks 3DGS properties or holds non-finite values.
        """
        path = Path(path)
        vertex_count = _check_header(path)
        try:
            ply = PlyData.read(str(path))
            vertex = ply['vertex'].data
        except PlyFormatError:
            raise
        except Exception as exc:   # plyfile raises several types for corrupt files
            raise PlyFormatError(f'{path}: corrupt PLY ({exc})') from None
        if len(vertex) != vertex_count:
            raise PlyFormatError(f'{path}: vertex count {len(vertex)} != header {vertex_count}')
        names = set(vertex.dtype.names or ())
        n_rest = sum(1 for name in names if name.startswith('f_rest_'))
        if n_rest % 3:
            raise PlyFormatError(f'{path}: {n_rest} f_rest properties, not a multiple of 3')
        k = n_rest // 3 + 1
        try:
            _sh_degree_of(k, str(path))
        except ValueError:
            raise PlyFormatError(f'{path}: {n_rest} f_rest properties do not form an SH '
                                 f'basis of degree <= {MAX_SH_DEGREE}') from None
        wanted = [name for name in _ply_property_names(k) if not name.startswith('n')]
        missing = [name for name in wanted if name not in names]
        if missing:
            raise PlyFormatError(f'{path}: not a 3DGS scene, missing properties '
                                 f'{", ".join(missing[:6])}')
        n = len(vertex)
        if n == 0:
            raise PlyFormatError(f'{path}: the scene holds no Gaussians')
        data = np.stack([np.asarray(vertex[name], dtype=np.float32) for name in wanted], 1)
        if not np.all(np.isfinite(data)):
            raise PlyFormatError(f'{path}: non-finite values in the Gaussian properties')
        t = torch.from_numpy(data)
        rest = t[:, 6:6 + n_rest].reshape(n, 3, k - 1).permute(0, 2, 1)
        sh = torch.cat([t[:, 3:6][:, None, :], rest], dim=1).contiguous()
        o = 6 + n_rest
        return cls(means=t[:, 0:3].contiguous(), quats=t[:, o + 4:o + 8].contiguous(),
                   log_scales=t[:, o + 1:o + 4].contiguous(),
                   opacity_logits=t[:, o].contiguous(), sh=sh)


def rgb_to_sh_dc(rgb):
    """DC SH coefficient giving colour ``rgb`` (gsplat adds 0.5 after the SH sum)."""
    return (rgb - 0.5) / 0.28209479177387814


def sidecar_path(scene_path, kind):
    """Path of a scene's sidecar: ``scene.ply`` -> ``scene.index.npz`` / ``scene.meta.json``."""
    if kind not in _SIDECARS:
        raise ValueError(f'sidecar kind must be one of {sorted(_SIDECARS)}, got {kind!r}')
    scene_path = Path(scene_path)
    return scene_path.with_name(scene_path.stem + _SIDECARS[kind])


def write_scene_meta(scene_path, meta, merge=True):
    """Write ``meta`` to the scene's ``.meta.json`` sidecar and return its path.

    With ``merge`` the keys update an existing sidecar (later stages add theirs, e.g.
    ``thresholds``); numpy arrays and scalars become JSON lists and numbers. The file
    is replaced atomically.
    """
    path = sidecar_path(scene_path, 'meta')
    data = {}
    if merge and path.exists():
        data = _read_json(path)
    data.update(_jsonable(meta))
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + '\n')
    os.replace(tmp, path)
    return path


def read_scene_meta(scene_path):
    """Read and check a scene's ``.meta.json`` sidecar (raises SceneMetaError).

    Returns the dict with ``K`` as a (3, 3) float64 numpy array.
    """
    path = sidecar_path(scene_path, 'meta')
    if not path.is_file():
        raise SceneMetaError(f'{path}: scene metadata file not found')
    data = _read_json(path)
    missing = [key for key in _META_REQUIRED if key not in data]
    if missing:
        raise SceneMetaError(f'{path}: missing keys {", ".join(missing)}')
    for key in ('width', 'height'):
        value = data[key]
        if not isinstance(value, int) or not 0 < value <= 16384:
            raise SceneMetaError(f'{path}: {key} must be an integer in [1, 16384], got {value!r}')
    try:
        K = np.asarray(data['K'], dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneMetaError(f'{path}: K is not a numeric 3x3 matrix') from None
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise SceneMetaError(f'{path}: K must be a finite 3x3 matrix with positive focal '
                             'lengths')
    data['K'] = K
    return data


def _read_json(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SceneMetaError(f'{path}: unreadable JSON ({exc})') from None
    if not isinstance(data, dict):
        raise SceneMetaError(f'{path}: expected a JSON object')
    return data


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _sh_degree_of(k, name):
    d = int(round(math.sqrt(k))) - 1
    if (d + 1) ** 2 != k or not 0 <= d <= MAX_SH_DEGREE:
        raise ValueError(f'{name}: {k} SH coefficients is not (d + 1)^2 for a degree '
                         f'd <= {MAX_SH_DEGREE}')
    return d


def _ply_property_names(k):
    return (['x', 'y', 'z', 'nx', 'ny', 'nz', 'f_dc_0', 'f_dc_1', 'f_dc_2']
            + [f'f_rest_{i}' for i in range(3 * (k - 1))]
            + ['opacity', 'scale_0', 'scale_1', 'scale_2', 'rot_0', 'rot_1', 'rot_2', 'rot_3'])


def _check_header(path):
    """Parse the PLY header and check the claimed sizes against the file size.

    Returns the vertex count; raises PlyFormatError before anything is allocated for
    a file that claims more elements than it can hold.
    """
    try:
        size = path.stat().st_size
        with open(path, 'rb') as f:
            head = f.read(_HEADER_LIMIT)
    except OSError as exc:
        raise PlyFormatError(f'{path}: cannot read ({exc.strerror})') from None
    if not head.startswith(b'ply\n') and not head.startswith(b'ply\r\n'):
        raise PlyFormatError(f'{path}: not a PLY file')
    end = head.find(b'end_header')
    if end < 0:
        raise PlyFormatError(f'{path}: PLY header has no end_header within {_HEADER_LIMIT} bytes')
    try:
        lines = head[:end].decode('ascii').split('\n')
    except UnicodeDecodeError:
        raise PlyFormatError(f'{path}: PLY header is not ASCII') from None
    body = size - (end + len(b'end_header\n'))
    fmt, elements = None, []
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ('comment', 'obj_info'):
            continue
        if words[0] == 'format' and len(words) == 3:
            fmt = words[1]
        elif words[0] == 'element' and len(words) == 3 and words[2].isdigit():
            elements.append([words[1], int(words[2]), 0, False])
        elif words[0] == 'property' and elements and len(words) >= 3:
            if words[1] == 'list':
                elements[-1][3] = True
            elif words[1] in _PLY_TYPES:
                elements[-1][2] += _PLY_TYPES[words[1]]
            else:
                raise PlyFormatError(f'{path}: unknown PLY property type {words[1]!r}')
        else:
            raise PlyFormatError(f'{path}: malformed PLY header line {line.strip()!r}')
    if fmt not in ('binary_little_endian', 'binary_big_endian', 'ascii'):
        raise PlyFormatError(f'{path}: unsupported PLY format {fmt!r}')
    vertex = [e for e in elements if e[0] == 'vertex']
    if not vertex:
        raise PlyFormatError(f'{path}: no vertex element')
    count = vertex[0][1]
    if count > MAX_GAUSSIANS:
        raise PlyFormatError(f'{path}: claims {count} Gaussians, more than {MAX_GAUSSIANS}')
    # Each element row takes at least its fixed-size bytes (binary) or 2 bytes per value.
    needed = sum(c * (row if fmt != 'ascii' else 1) for _, c, row, _ in elements)
    if needed > body:
        raise PlyFormatError(f'{path}: header claims {needed} bytes of data, file holds {body}')
    return count
