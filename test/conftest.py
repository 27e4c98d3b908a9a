"""Shared session fixtures: a small synthetic MAD category and its loaded form."""
import pytest

from igspad_ros.data.mad import load_category
from igspad_ros.data.synthetic import make_category


@pytest.fixture(scope='session')
def synthetic_category_dir(tmp_path_factory):
    """Path of a 64 px synthetic "brick" category: 210 train views, 16 test images, seed 0."""
    out = tmp_path_factory.mktemp('synthetic')
    return make_category(out, category='brick', size=64, n_train=210, n_test=16, seed=0)


@pytest.fixture(scope='session')
def synthetic_category(synthetic_category_dir):
    """Return the synthetic category loaded with ``load_category``."""
    return load_category(synthetic_category_dir)
