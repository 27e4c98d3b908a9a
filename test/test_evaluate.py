"""Evaluation: the OUT.json report (pure), the table, the gallery and offline/evaluate.py."""
import json
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from igspad_ros.core import cameras
from igspad_ros.core.evaluation import (ImageOutcome, category_report, heatmap_overlay,
                                        markdown_table, median_timing, save_gallery_image)
from igspad_ros.core.features import DEFAULT_EXTRACTOR
from igspad_ros.core.inspector import InspectorConfig, cpu_igs_config, prepare_scene_artifacts
from igspad_ros.core.matching import DEFAULT_MATCHER
from igspad_ros.core.scene import sidecar_path

CONFIG = {'extractor': 'xfeat', 'matcher': 'sift', 'mps': True, 'steps': 7, 'device': 'cpu'}
DESIGN_KEYS = {'category', 'pixel_auroc', 'image_auroc', 'pixel_ap', 'aupro', 'n_images',
               'pose', 'timing', 'config', 'images', 'verdict'}
STEPS = 5
IMAGE_KEYS = {'path', 'defect_type', 'image_score', 'anomalous', 'rot_deg', 'trans_rel'}


def _outcomes(with_poses):
    truth = cameras.look_at((0.0, -3.5, 1.0))
    # rotation errors 1, 3 and 0.5 degrees about the optical axis
    turned = [cameras.se3_exp(torch.tensor([0, 0, 0, 0, 0, np.radians(d)])).numpy() @ truth
              for d in (1.0, 3.0, 0.5)]
    masks = [np.zeros((16, 16), bool) for _ in range(3)]
    masks[1][4:8, 4:8] = True
    maps = [np.zeros((16, 16), np.float32) for _ in range(3)]
    maps[1][4:8, 4:8] = 1.0
    return [ImageOutcome(path=f'test/{kind}/{i}.png', defect_type=kind, mask=masks[i],
                         anomaly_map=maps[i], image_score=score, anomalous=score > 0.5,
                         viewmat=turned[i] if with_poses else None,
                         true_viewmat=truth if with_poses else None,
                         seconds={'igs': 2.0 * i + 1.0, 'features': 0.5})
            for i, (kind, score) in enumerate([('good', 0.2), ('Burrs', 0.9), ('good', 0.4)])]


def test_category_report_has_the_design_keys_and_exact_numbers():
    report = category_report('brick', _outcomes(True), CONFIG)
    assert set(report) == DESIGN_KEYS
    assert report['n_images'] == 3 and report['config'] == CONFIG
    assert report['image_auroc'] == pytest.approx(1.0)
    # bilinear resizing to 224 blurs the square's corners a little
    assert report['pixel_auroc'] == pytest.approx(1.0, abs=1e-4)
    assert report['aupro'] == pytest.approx(1.0, abs=1e-3)
    assert report['pose']['rot_deg_median'] == pytest.approx(1.0, abs=1e-4)
    assert report['pose']['success_rate_2deg'] == pytest.approx(2.0 / 3.0)
    assert report['pose']['trans_rel_median'] >= 0.0
    assert report['timing'] == pytest.approx({'igs': 3.0, 'features': 0.5, 'total': 3.5})
    assert [set(im) for im in report['images']] == [IMAGE_KEYS] * 3
    assert report['images'][1]['anomalous'] is True
    assert report['images'][2]['rot_deg'] == pytest.approx(0.5, abs=1e-4)
    json.dumps(report, allow_nan=False)


def test_verdict_at_the_threshold_exact_values():
    outcomes = _outcomes(True) + [ImageOutcome(
        path='test/Stains/0.png', defect_type='Stains', mask=np.ones((16, 16), bool),
        anomaly_map=np.zeros((16, 16), np.float32), image_score=0.3, anomalous=False)]
    outcomes[2].anomalous = True      # a normal image over the threshold: a false alarm
    verdict = category_report('brick', outcomes, CONFIG, threshold=0.35)['verdict']
    assert verdict == {'threshold': 0.35,
                       'flagged': {'Burrs': 1.0, 'Stains': 0.0, 'good': 0.5},
                       'detection_rate': 0.5, 'false_alarm_rate': 0.5,
                       'counts': {'Burrs': [1, 1], 'Stains': [0, 1], 'good': [1, 2]}}
    only_good = category_report('brick', outcomes[:1], CONFIG)['verdict']
    assert only_good['detection_rate'] is None and only_good['false_alarm_rate'] == 0.0
    assert only_good['threshold'] is None


def test_category_report_without_poses_and_with_baseline():
    base = _outcomes(False)
    base[1].image_score = 0.1      # the baseline misses the defect at image level
    report = category_report('brick', _outcomes(False), CONFIG, baseline_outcomes=base)
    assert report['pose'] is None
    assert all(im['rot_deg'] is None and im['trans_rel'] is None for im in report['images'])
    assert set(report) == DESIGN_KEYS | {'baseline_2d'}
    assert report['baseline_2d']['image_auroc'] == pytest.approx(0.0)
    with pytest.raises(ValueError, match='config lacks device'):
        category_report('brick', base, {k: v for k, v in CONFIG.items() if k != 'device'})


def test_median_timing_and_markdown_table():
    assert median_timing([{'a': 1.0}, {'a': 3.0, 'b': 1.0}, {'a': 2.0}]) == pytest.approx(
        {'a': 2.0, 'b': 1.0, 'total': 2.0})
    reports = [{'category': 'Gorilla', 'pixel_auroc': 0.998, 'image_auroc': 0.961,
                'pixel_ap': 0.5, 'aupro': 0.9,
                'verdict': {'detection_rate': 0.925, 'false_alarm_rate': 0.05},
                'baseline_2d': {'pixel_auroc': 0.9, 'image_auroc': 0.6, 'pixel_ap': 0.1,
                                'aupro': 0.2}},
               {'category': 'Unicorn', 'pixel_auroc': 0.996, 'image_auroc': None,
                'pixel_ap': 0.7, 'aupro': 0.8}]
    lines = markdown_table(reports).splitlines()
    assert lines[2] == '| Gorilla | 99.8/96.1 | 50.0 | 90.0 | 90.0/60.0 | 92.5/5.0 |'
    assert lines[3] == '| Unicorn | 99.6/- | 70.0 | 80.0 | - | - |'
    assert lines[4] == '| Mean | 99.7/96.1 | 60.0 | 85.0 | 90.0/60.0 | 92.5/5.0 |'


def test_gallery_image_has_four_panels(tmp_path):
    image = np.full((10, 12, 3), 0.5, np.float32)
    amap = np.zeros((10, 12), np.float32)
    amap[2, 3] = 1.0
    overlay = heatmap_overlay(image, amap, vmax=1.0)
    # JET at 1.0 is dark red (127, 0, 0) in RGB, blended half with grey 0.5
    assert tuple(overlay[2, 3]) == (127, 63, 63)
    save_gallery_image(tmp_path / 'g' / 'x.png', image, image, amap, amap > 0, vmax=1.0)
    strip = cv2.imread(str(tmp_path / 'g' / 'x.png'))
    assert strip.shape == (10, 48, 3)
    assert tuple(strip[2, 36 + 3]) == (255, 255, 255) and tuple(strip[0, 36]) == (0, 0, 0)


@pytest.fixture(scope='module')
def scenes(trained_scene_path, synthetic_category, tmp_path_factory):
    """A folder with the shared scene as brick.ply and brick2.ply, index and threshold built.

    Prepared on copies with few IGS steps, so the shared scene's sidecars stay as built.
    """
    folder = tmp_path_factory.mktemp('scenes')
    scene = folder / 'brick.ply'
    shutil.copy(trained_scene_path, scene)
    shutil.copy(sidecar_path(trained_scene_path, 'meta'), sidecar_path(scene, 'meta'))
    config = InspectorConfig(igs=replace(cpu_igs_config(), steps=STEPS, lr_decay_step=3),
                             calibration_views=4)
    prepare_scene_artifacts(scene, synthetic_category, config)
    for suffix in ('.ply', '.index.npz', '.meta.json'):
        shutil.copy(folder / f'brick{suffix}', folder / f'brick2{suffix}')
    return folder


def test_evaluate_end_to_end_and_resume(synthetic_category_dir, scenes, tmp_path, capsys,
                                        load_script):
    tool = load_script('offline/evaluate.py')
    out = tmp_path / 'brick.json'
    argv = ['--data', str(synthetic_category_dir), '--scene', str(scenes / 'brick.ply'),
            '--json', str(out), '--steps', str(STEPS), '--limit', '8', '--device', 'cpu']
    assert tool.main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith('evaluated 1 category, 8 images: pixel AUROC ')
    report = json.loads(out.read_text())
    assert set(report) == DESIGN_KEYS | {'baseline_2d'}
    assert report['n_images'] == 8 and len(report['images']) == 8
    assert {im['defect_type'] for im in report['images']} == {'good', 'Burrs', 'Missing',
                                                              'Stains'}
    assert report['config'] == {'extractor': DEFAULT_EXTRACTOR, 'matcher': DEFAULT_MATCHER,
                                'mps': True, 'steps': STEPS, 'device': 'cpu'}
    for key in ('pixel_auroc', 'image_auroc', 'pixel_ap', 'aupro'):
        assert 0.0 <= report[key] <= 1.0 and 0.0 <= report['baseline_2d'][key] <= 1.0
    assert report['pose']['rot_deg_median'] >= 0.0
    assert 0.0 <= report['pose']['success_rate_2deg'] <= 1.0
    assert set(report['timing']) == {'retrieval', 'igs', 'render', 'features', 'scoring',
                                     'total'}
    assert len(list((tmp_path / 'brick_gallery').glob('*.png'))) == 8
    assert (tmp_path / 'brick.md').read_text().count('| brick |') == 1
    # resumable: the same config is not evaluated again
    stamp = out.stat().st_mtime_ns
    assert tool.main(argv) == 0
    assert out.stat().st_mtime_ns == stamp


def test_evaluate_folder_of_categories_in_parallel(synthetic_category_dir, scenes, tmp_path,
                                                   capsys, load_script):
    tool = load_script('offline/evaluate.py')
    root = tmp_path / 'mad'
    root.mkdir()
    for name in ('brick', 'brick2'):
        (root / name).symlink_to(synthetic_category_dir, target_is_directory=True)
    out = tmp_path / 'results'
    argv = ['--data', str(root), '--scene', str(scenes), '--json', str(out), '--steps',
            str(STEPS), '--limit', '2', '--jobs', '2', '--device', 'cpu', '--no-gallery']
    assert tool.main(argv) == 0
    assert capsys.readouterr().out.startswith('evaluated 2 categories, 4 images:')
    reports = [json.loads((out / f'{name}.json').read_text()) for name in ('brick', 'brick2')]
    assert [r['category'] for r in reports] == ['brick', 'brick2']
    # the same images through the same scene: the same scores in both processes
    assert [im['path'] for im in reports[0]['images']] == \
        [im['path'] for im in reports[1]['images']]
    table = (out / 'results.md').read_text().splitlines()
    assert [row.split(' | ')[0] for row in table[2:]] == ['| brick', '| brick2', '| Mean']
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['pixel_auroc'] == pytest.approx(
        (reports[0]['pixel_auroc'] + reports[1]['pixel_auroc']) / 2)


def test_evaluate_user_errors_exit_2(tmp_path, capsys, load_script):
    tool = load_script('offline/evaluate.py')
    code = tool.main(['--data', str(tmp_path / 'absent'), '--scene', 'x.ply',
                      '--json', str(tmp_path / 'o.json'), '--device', 'cpu'])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and 'error' in err
    with pytest.raises(SystemExit) as info:
        tool.main(['--data', 'x', '--scene', 'y', '--json', 'z', '--steps', '0'])
    assert info.value.code == 2
