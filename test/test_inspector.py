"""Inspector on the shared trained scene: results, verdicts, sidecar building, errors."""
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from igspad_ros.core import cameras
from igspad_ros.core.inspector import (STAGES, Inspector, InspectorConfig, cpu_igs_config,
                                       prepare_scene_artifacts)
from igspad_ros.core.retrieval import RetrievalIndexError
from igspad_ros.core.scene import read_scene_meta, sidecar_path


def _fast_config(**overrides):
    igs = replace(cpu_igs_config(), steps=10, lr_decay_step=7)
    return InspectorConfig(igs=igs, **overrides)


def _copy_scene(scene_path, folder, keep_index=False):
    """Copy the scene PLY and its meta (no thresholds; the index if asked) to a new folder.

    Tests calibrate with few IGS steps: on a copy, the shared scene's sidecars stay as built.
    """
    target = folder / 'scene.ply'
    shutil.copy(scene_path, target)
    meta = json.loads(sidecar_path(scene_path, 'meta').read_text())
    meta.pop('thresholds', None)
    sidecar_path(target, 'meta').write_text(json.dumps(meta))
    if keep_index and sidecar_path(scene_path, 'index').is_file():
        shutil.copy(sidecar_path(scene_path, 'index'), sidecar_path(target, 'index'))
    return target


@pytest.fixture(scope='module')
def inspector(trained_scene_path, synthetic_category, tmp_path_factory):
    scene = _copy_scene(trained_scene_path, tmp_path_factory.mktemp('inspector'), True)
    return Inspector(scene, _fast_config(), device='cpu', train_views=synthetic_category.train)


def test_inspect_returns_aligned_maps_pose_and_timings(inspector, synthetic_category):
    test = next(t for t in synthetic_category.test if t.defect_type == 'Stains')
    result = inspector.inspect(test.image)
    h, w = test.image.shape[:2]
    assert result.anomaly_map.shape == (h, w) and result.anomaly_map.dtype == np.float32
    assert result.rendered.shape == (h, w, 3)
    assert 0.0 <= result.rendered.min() and result.rendered.max() <= 1.0
    assert set(result.seconds) == set(STAGES) and all(s >= 0 for s in result.seconds.values())
    assert result.anomalous == (result.image_score > result.threshold)
    assert result.threshold == pytest.approx(inspector.threshold)
    # the retrieved view plus a few IGS steps land near the true pose of the 64 px image
    assert cameras.rotation_error_deg(result.viewmat, test.true_viewmat) < 10.0
    # the stain scores higher inside its mask than outside
    amap = result.anomaly_map
    assert amap[test.mask].mean() > 1.5 * amap[~test.mask].mean()


def test_compare_identical_images_scores_zero(inspector, synthetic_category):
    image = synthetic_category.test[0].image
    amap, score, _, _ = inspector.compare(image, image)
    assert score == pytest.approx(0.0, abs=1e-4) and float(amap.max()) < 1e-4
    with pytest.raises(ValueError, match='differ in size'):
        inspector.compare(image, image[:-8])
    with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
        inspector.inspect(image[..., 0])


def test_threshold_override_sets_the_verdict(inspector, synthetic_category):
    low = Inspector(inspector.scene_path, _fast_config(threshold=-1.0), device='cpu')
    result = low.inspect(synthetic_category.test[0].image)
    assert result.threshold == -1.0 and result.anomalous is True


def test_missing_sidecars_are_built_and_saved(trained_scene_path, synthetic_category, tmp_path):
    scene = _copy_scene(trained_scene_path, tmp_path)
    views = synthetic_category.train[:24]
    config = _fast_config(calibration_views=2, shortlist=4)
    inspector = prepare_scene_artifacts(scene, type('Cat', (), {'train': views}), config)
    assert sidecar_path(scene, 'index').is_file() and len(inspector.index) == 24
    assert inspector.threshold_key == 'pixel calibration_views=2'
    stored = read_scene_meta(scene)['thresholds']['pixel calibration_views=2']
    assert stored == pytest.approx(inspector.threshold) and stored > 0.0
    # a second load reads both sidecars instead of rebuilding them
    again = Inspector(scene, config, device='cpu')
    assert again.threshold == pytest.approx(stored) and len(again.index) == 24
    # other scoring settings give other scores: calibrated afresh, each under its own key
    rougher = Inspector(scene, replace(config, sigma=0.0), device='cpu')
    assert rougher.threshold_key == 'pixel sigma=0.0 calibration_views=2'
    thresholds = read_scene_meta(scene)['thresholds']
    assert set(thresholds) == {'pixel calibration_views=2', 'pixel sigma=0.0 calibration_views=2'}
    assert thresholds['pixel calibration_views=2'] == stored
    assert thresholds['pixel sigma=0.0 calibration_views=2'] == pytest.approx(rougher.threshold)
    assert rougher.threshold != pytest.approx(stored)


def test_missing_index_without_training_views_is_a_clear_error(trained_scene_path, tmp_path):
    scene = _copy_scene(trained_scene_path, tmp_path)
    with pytest.raises(RetrievalIndexError, match='retrieval index not found'):
        Inspector(scene, _fast_config(threshold=0.5), device='cpu')


def test_config_ranges():
    with pytest.raises(ValueError, match='shift_radius'):
        InspectorConfig(shift_radius=-1)
    with pytest.raises(ValueError, match='calibration_views'):
        InspectorConfig(calibration_views=1)
