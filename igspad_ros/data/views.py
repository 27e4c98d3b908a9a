"""What every capture reader returns: posed pinhole views, test images, one ``Capture``.

Readers (``mad``, ``transforms``, ``colmap``) undistort at load, so a view is a general
pinhole: its own K (pixel-edge convention, fx != fy and any principal point allowed) for its
own image size, and an OpenCV world-to-camera viewmat. ``mask`` marks the pixels that show
the scene (a capture's ``mask_path``, and where undistortion found source pixels); None means
all of them. Core sees only these fields (image, K, viewmat, mask).
"""
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class TrainView:
    """One posed training image."""

    index: int
    path: Path
    image: np.ndarray       # (H, W, 3) float32 RGB in [0, 1]
    viewmat: np.ndarray     # (4, 4) float64 OpenCV world-to-camera
    K: np.ndarray | None = None     # (3, 3) float64 pinhole of this image (None: the capture's)
    mask: np.ndarray | None = None  # (H, W) bool pixels to fit, None: all


@dataclass
class TestImage:
    """One test image with its defect type and ground-truth mask."""

    __test__ = False   # not a pytest test class

    rel_path: str           # e.g. "test/Burrs/3.png"
    path: Path
    defect_type: str        # "good" | "Burrs" | "Missing" | "Stains" | ...
    image: np.ndarray       # (H, W, 3) float32 RGB in [0, 1]
    mask: np.ndarray        # (H, W) bool, all False for good
    true_viewmat: np.ndarray | None = None
    K: np.ndarray | None = None     # (3, 3) pinhole of this image (None: the capture's)


@dataclass
class Capture:
    """A loaded capture: its nominal camera, training views, test images, SfM points.

    ``width``, ``height`` and ``K`` are the capture's camera (the first training view's, or
    the test split's camera); every view carries its own K. ``format`` names the reader
    (``mad``, ``transforms``, ``colmap``); ``skipped`` counts views the reader left out
    (unregistered COLMAP images); ``points`` (N, 3) and ``point_colors`` (N, 3) in [0, 1]
    are the SfM points when the capture has them.
    """

    root: Path
    name: str
    width: int
    height: int
    K: np.ndarray
    train: list
    test: list
    format: str = 'mad'
    skipped: int = 0
    points: np.ndarray | None = None
    point_colors: np.ndarray | None = None
    undistorted: dict = field(default_factory=dict)   # what undistortion did, for the meta

    def __post_init__(self):
        """Give every view without its own K the capture's camera."""
        for view in list(self.train) + list(self.test):
            if view.K is None:
                view.K = np.asarray(self.K, dtype=np.float64)

    @property
    def camera_angle_x(self):
        """Horizontal field of view (radians) of the capture's camera."""
        return 2.0 * math.atan(0.5 * self.width / float(self.K[0, 0]))
