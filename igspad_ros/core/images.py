"""RGB images as the core takes them: (H, W, 3) arrays, float32 in [0, 1], of bounded size."""
import numpy as np

MAX_IMAGE_SIDE = 8192


def check_rgb(image, who, min_side=1):
    """Return ``image`` as a C-contiguous float32 (H, W, 3) array.

    Raises ValueError starting with ``who`` for another shape, or for a side outside
    [``min_side``, MAX_IMAGE_SIDE].
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'{who}: image must be (H, W, 3) RGB, got shape {image.shape}')
    h, w = image.shape[:2]
    if not (min_side <= h <= MAX_IMAGE_SIDE and min_side <= w <= MAX_IMAGE_SIDE):
        raise ValueError(f'{who}: image size {w}x{h} out of range: each side must lie in '
                         f'[{min_side}, {MAX_IMAGE_SIDE}]')
    return np.ascontiguousarray(image, dtype=np.float32)
