"""bench/pose_gap.py: metrics at the true pose vs at each method's IGS pose, on the fixture."""
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from igspad_ros.core.evaluation import spread_subset
from igspad_ros.core.features import DEFAULT_EXTRACTOR
from igspad_ros.core.inspector import Inspector, InspectorConfig, cpu_igs_config, \
    prepare_scene_artifacts
from igspad_ros.core.scene import read_scene_meta, sidecar_path

STEPS = 5
ROW_KEYS = {'pixel_auroc', 'image_auroc', 'pixel_ap', 'aupro', 'pose', 'timing', 'by_type',
            'verdict'}
POSE_KEYS = {'rot_deg_median', 'rot_deg_p90', 'trans_rel_median', 'trans_rel_p90',
             'n_over_2deg', 'success_rate_2deg'}
GAP_KEYS = ('pixel_auroc', 'image_auroc', 'pixel_ap')


@pytest.fixture(scope='module')
def scene(trained_scene_path, synthetic_category, tmp_path_factory):
    """A copy of the shared scene with its index and threshold built with few IGS steps."""
    path = tmp_path_factory.mktemp('pose_gap') / 'brick.ply'
    shutil.copy(trained_scene_path, path)
    shutil.copy(sidecar_path(trained_scene_path, 'meta'), sidecar_path(path, 'meta'))
    config = InspectorConfig(igs=replace(cpu_igs_config(), steps=STEPS, lr_decay_step=3),
                             calibration_views=4)
    prepare_scene_artifacts(path, synthetic_category, config)
    return path


@pytest.fixture(scope='module')
def bench(load_script):
    """The bench script as a module."""
    return load_script('bench/pose_gap.py')


def test_pose_gap_end_to_end(bench, synthetic_category_dir, scene, tmp_path, capsys):
    out = tmp_path / 'gap.json'
    argv = ['--data', str(synthetic_category_dir), '--scene', str(scene), '--device', 'cpu',
            '--steps', str(STEPS), '--limit', '4', '--json', str(out)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result) == {'category', 'n_images', 'extractor', 'device', 'true_pose',
                           'methods', 'images'}
    assert (result['category'], result['n_images'], result['extractor'], result['device']) == (
        'brick', 4, DEFAULT_EXTRACTOR, 'cpu')
    assert list(result['methods']) == ['igs_mps', 'igs']
    true = result['true_pose']
    assert set(true) == ROW_KEYS and set(true['pose']) == POSE_KEYS
    # the true pose row renders at the true pose: no pose error (arccos of a trace that
    # rounds to just below 3 leaves at most a few 1e-6 degrees)
    assert true['pose']['trans_rel_median'] == true['pose']['trans_rel_p90'] == 0.0
    assert 0.0 <= true['pose']['rot_deg_p90'] < 1e-5
    assert (true['pose']['n_over_2deg'], true['pose']['success_rate_2deg']) == (0, 1.0)
    assert set(true['timing']) == {'render', 'features', 'scoring', 'total'}
    for name, mps in (('igs_mps', True), ('igs', False)):
        row = result['methods'][name]
        assert set(row) == ROW_KEYS | {'gap', 'igs'} and set(row['pose']) == POSE_KEYS
        assert (row['igs']['mps'], row['igs']['steps'], row['igs']['lr_decay_step']) == (
            mps, STEPS, 3)
        assert set(row['timing']) == {'retrieval', 'igs', 'render', 'features', 'scoring',
                                      'total'}
        for key in GAP_KEYS:
            assert row['gap'][key] == true[key] - row[key]
            assert 0.0 <= row[key] <= 1.0
        assert set(row['by_type']) == {'good', 'Burrs', 'Missing', 'Stains'}
        assert sum(e['n'] for e in row['by_type'].values()) == 4
        assert set(row['gap']['by_type']) == {'Burrs', 'Missing', 'Stains'}
        rot = [im[name]['rot_deg'] for im in result['images']]
        assert row['pose']['rot_deg_median'] == pytest.approx(np.median(rot), abs=1e-12)
        assert row['pose']['n_over_2deg'] == sum(r >= 2.0 for r in rot)
        assert f'| {name} | {row["pixel_auroc"]:.3f} | {row["image_auroc"]:.3f} |' in printed
    threshold = read_scene_meta(scene)['thresholds'][DEFAULT_EXTRACTOR]
    for name in ('true_pose', 'igs_mps', 'igs'):
        # the verdict at the scene's calibrated threshold, counted from the images' scores
        verdict = (true if name == 'true_pose' else result['methods'][name])['verdict']
        assert verdict['threshold'] == threshold
        assert verdict['counts'] == {
            im['defect_type']: [int(im[name]['image_score'] > threshold), 1]
            for im in result['images']}
    assert [im['path'] for im in result['images']] == [
        'test/Burrs/0.png', 'test/Missing/1.png', 'test/Stains/2.png', 'test/good/3.png']
    assert all(im['true_pose']['trans_rel'] == 0.0 for im in result['images'])
    assert printed.strip().splitlines()[-1].startswith('pose_gap: 4 images of brick: igs_mps '
                                                       'image AUROC gap ')


def test_score_at_pose_is_the_inspectors_own_scoring(bench, synthetic_category, scene):
    """At the IGS pose, score_at_pose reproduces Inspector.inspect's map and score exactly."""
    config = InspectorConfig(igs=replace(cpu_igs_config(), steps=STEPS, lr_decay_step=3))
    inspector = Inspector(scene, config, device='cpu')
    test = synthetic_category.test[1]
    result = inspector.inspect(test.image, test.K)
    amap, score, seconds = bench.score_at_pose(inspector, test.image, result.viewmat, test.K)
    np.testing.assert_array_equal(amap, result.anomaly_map)
    assert score == result.image_score
    assert set(seconds) == {'render', 'features', 'scoring'}


def test_pose_summary_numbers(bench):
    summary = bench.pose_summary([0.5, 1.0, 2.0, 3.0, 10.0], [0.01, 0.0, 0.02, 0.04, 0.03])
    assert summary == {'rot_deg_median': 2.0, 'rot_deg_p90': pytest.approx(7.2),
                       'trans_rel_median': 0.02, 'trans_rel_p90': pytest.approx(0.036),
                       'n_over_2deg': 3, 'success_rate_2deg': 0.4}


def test_spread_subset_keeps_every_type():
    items = list(range(16))
    assert spread_subset(items, 4) == [0, 5, 10, 15]
    assert spread_subset(items, None) == items and spread_subset(items, 20) == items


def test_unknown_method_is_a_user_error(bench, synthetic_category_dir, scene, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(['--data', str(synthetic_category_dir), '--scene', str(scene),
                    '--methods', 'igs_mps,nope'])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        '--methods: unknown nope; choose from igs_mps, igs, igs_mps_pnp, igs_mps_soft')
