"""Distorted camera images in and out of the inspector's pinhole geometry (no rclpy here).

The inspector works on pinhole images. A camera whose CameraInfo carries lens distortion
(plumb_bob, rational_polynomial, equidistant: ``core.undistort``) has each image undistorted
first (bicubic), to the pinhole of the camera's own K and size (the ``undistortion_maps``
defaults), so the pose estimated is that camera's; the anomaly map is then warped back into
the input's pixel geometry (``distortion_maps`` to that same pinhole, bilinear), pixels of
the input that show no ray of the pinhole getting 0.

The maps depend only on the camera, so ``Rectifier`` caches them keyed on the values of
K, the distortion and the image size (not on a message object: a driver sends a new
CameraInfo with every image); it keeps the few most recently used cameras. An identity
distortion (no CameraInfo, an empty or all-zero ``d``) has no maps: the image is served
untouched, exactly as a pinhole camera's.

ROS-free so it is testable without DDS; the node's worker thread is its only user (a
``Rectifier`` is not thread-safe).
"""
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from igspad_ros.core import undistort

CACHE_SIZE = 4     # cameras whose maps are kept (a node usually sees one)


@dataclass(frozen=True)
class CameraMaps:
    """The two warps of one distorted camera.

    ``undistort``: input (distorted) image -> pinhole (same K and size); ``distort``:
    pinhole -> input geometry, for the anomaly map.
    """

    undistort: undistort.UndistortMaps
    distort: undistort.UndistortMaps

    def to_pinhole(self, image):
        """Return the pinhole (undistorted) version of an input image in [0, 1], bicubic.

        Bicubic rather than bilinear: at 64 px the blur of a bilinear resampling moved
        the IGS pose three times as far from the pinhole twin's (translation 0.1-0.3 %
        against 0.02-0.13 %, see test_inspector_node). Clipped, as bicubic overshoots.
        """
        out = undistort.remap(image, self.undistort, cv2.INTER_CUBIC)
        return np.clip(out, 0.0, 1.0, out=out)

    def to_input(self, amap):
        """Return a (H, W) map of the pinhole in the input's geometry; 0 where no source."""
        out = undistort.remap(np.asarray(amap, dtype=np.float32), self.distort,
                              cv2.INTER_LINEAR, fill=0.0)
        out[~self.distort.valid] = 0.0
        return out


class Rectifier:
    """Undistortion maps cached per camera (K, distortion, size) values, LRU-bounded."""

    def __init__(self, capacity=CACHE_SIZE):
        """Keep the maps of at most ``capacity`` cameras."""
        if capacity < 1:
            raise ValueError(f'capacity must be at least 1, got {capacity}')
        self.capacity = int(capacity)
        self._cache = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self):
        """Return the number of cameras whose maps are cached."""
        return len(self._cache)

    def maps(self, K, distortion, size):
        """CameraMaps of a camera, or None when ``distortion`` leaves every pixel in place.

        ``K`` is the (pixel-edge) intrinsics of images of ``size`` (w, h). Built on the
        first image of a camera, reused while K, the distortion and the size stay equal.
        """
        if distortion.is_identity:
            return None
        K = np.asarray(K, dtype=np.float64)
        size = (int(size[0]), int(size[1]))
        key = (K.tobytes(), distortion, size)
        if key in self._cache:
            self.hits += 1
            self._cache.move_to_end(key)
            return self._cache[key]
        self.misses += 1
        maps = CameraMaps(undistort.undistortion_maps(K, distortion, size),
                          undistort.distortion_maps(K, distortion, size, K, size))
        self._cache[key] = maps
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return maps
