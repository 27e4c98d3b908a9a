"""Feature extractors: shipped-weight maps, alignment, and the weight-file error paths."""
import numpy as np
import pytest
import torch

from igspad_ros.core.features import (DEFAULT_EXTRACTOR, EXTRACTOR_NAMES, SamExtractor,
                                      WeightsError, make_extractor)


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
