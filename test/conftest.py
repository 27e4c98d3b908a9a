"""Shared session fixtures: a small synthetic MAD category, its loaded form, a trained scene.

Also ``load_script``, which imports a repository script (offline tool, bench, launch file)
as a module.
"""
import importlib.util
from pathlib import Path

import pytest

from igspad_ros.data.mad import load_category
from igspad_ros.data.synthetic import make_category

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def load_script():
    """Return a function importing the script at a repository-relative path as a module."""
    def load(rel_path):
        path = ROOT / rel_path
        spec = importlib.util.spec_from_file_location(path.stem.replace('.', '_'), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope='session')
def synthetic_category_dir(tmp_path_factory):
    """Path of a 64 px synthetic "brick" category: 210 train views, 16 test images, seed 0."""
    out = tmp_path_factory.mktemp('synthetic')
    return make_category(out, category='brick', size=64, n_train=210, n_test=16, seed=0)


@pytest.fixture(scope='session')
def synthetic_category(synthetic_category_dir):
    """Return the synthetic category loaded with ``load_category``."""
    return load_category(synthetic_category_dir)


@pytest.fixture(scope='session')
def trained_scene_path(synthetic_category, tmp_path_factory):
    """Path of scene.ply (+ scene.meta.json) trained on CPU on ``synthetic_category``.

    1000 steps from 2000 carved initial points, densified until step 500 (about 2300
    Gaussians): about 22 s on one core, held-out PSNR about 29.6 dB. 300 steps (27 dB)
    left IGS's loss minimum about 1 % away from the true pose. Training runs on one torch
    thread (restored afterwards): on a shared 2-core machine more threads only wait for
    each other.
    """
    from igspad_ros.core.scene import write_scene_meta

    cat = synthetic_category
    scene, report = train_small_scene(cat)
    path = tmp_path_factory.mktemp('scene') / 'scene.ply'
    scene.save_ply(path)
    write_scene_meta(path, {'width': cat.width, 'height': cat.height, 'K': cat.K,
                            'camera_angle_x': cat.camera_angle_x, 'category': cat.name,
                            'train': report.as_dict()})
    return path


def train_small_scene(cat):
    """Train the small scene of a loaded 64 or 96 px category: (GaussianScene, TrainReport).

    1000 steps from 2000 carved initial points, densified until step 500, on one torch
    thread (restored afterwards).
    """
    import torch

    from igspad_ros.core.train import TrainConfig, train_scene

    config = TrainConfig.for_device('cpu', iters=1000, size=None, n_init=2000,
                                    refine_start_iter=100, refine_stop_iter=500,
                                    grow_grad2d=4e-4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_scene([v.image for v in cat.train], [v.viewmat for v in cat.train], cat.K,
                           config)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def synthetic_capture_dirs(tmp_path_factory):
    """Write the realistic synthetic capture, 64 px long side; return {format: folder}.

    The brick seen through a phone-like camera (fx != fy, off-centre principal point, barrel
    distortion, 4:3, JPEG) as a transforms.json capture and as a COLMAP model: 60 training
    views, 8 test images (2 per defect type) with masks and true poses; about 1 s.
    """
    from igspad_ros.data.synthetic_capture import make_capture

    return make_capture(tmp_path_factory.mktemp('capture'), 'brick', size=64, n_train=60,
                        n_test=8, seed=0)
