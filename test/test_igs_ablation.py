"""bench/igs_ablation.py: the defect-free twins it regenerates and its table."""
import numpy as np
import pytest


@pytest.fixture(scope='module')
def ablation(load_script):
    return load_script('bench/igs_ablation.py')


def test_twins_are_the_images_without_their_defects(ablation, synthetic_category):
    twins = ablation.clean_twins(synthetic_category, seed=0, burr_scale=1.0)
    defective = [t for t in synthetic_category.test if t.defect_type != 'good']
    assert sorted(twins) == sorted(t.rel_path for t in defective) and len(twins) == 12
    for test in defective:
        image = np.round(test.image * 255).astype(np.uint8)
        np.testing.assert_array_equal(np.any(twins[test.rel_path] != image, axis=2), test.mask)


def test_twins_refuse_a_category_made_otherwise(ablation, synthetic_category):
    with pytest.raises(ValueError, match='test/good/0.png differs from the synthetic generator '
                                         'at seed 1, burr scale 1.0 and 64 px'):
        ablation.clean_twins(synthetic_category, seed=1, burr_scale=1.0)
    with pytest.raises(ValueError, match=r'test/Burrs/0.png differs .* burr scale 2.0'):
        ablation.clean_twins(synthetic_category, seed=0, burr_scale=2.0)


def test_table_adds_pull_columns_only_with_twins(ablation):
    def result(rot, pull=None):
        out = {'rot_deg': rot, 'trans_rel': rot / 100, 'seconds': 1.0}
        if pull is not None:
            out.update(pull_deg=pull, pull_rel=pull / 100)
        return out

    rows = [{'defect_type': 'Missing', 'retrieval': result(9.0), 'igs': result(0.5, 0.3)},
            {'defect_type': 'Missing', 'retrieval': result(7.0), 'igs': result(2.5, 0.1)},
            {'defect_type': 'good', 'retrieval': result(5.0), 'igs': result(0.2)}]
    lines = ablation.markdown(rows).splitlines()
    assert lines[0].endswith('| s/img | pull rot (deg) | pull trans (%) |')
    assert lines[5] == '| igs | Missing | 2 | 1.50 | 1.50 | 50 % | 1.0 | 0.200 | 0.200 |'
    assert lines[6] == '| igs | good | 1 | 0.20 | 0.20 | 100 % | 1.0 | - | - |'
    assert lines[7] == '| igs | all | 3 | 0.50 | 0.50 | 67 % | 1.0 | 0.200 | 0.200 |'
    for row in rows:
        for key in ('pull_deg', 'pull_rel'):
            row['igs'].pop(key, None)
    assert ablation.markdown(rows).splitlines()[0].endswith('| s/img |')
