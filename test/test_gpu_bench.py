"""CPU-side checks of the prepared GPU run: shell syntax, summary parsing, the table."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which('bash') is None, reason='bash is not installed')
def test_gpu_script_is_valid_bash():
    done = subprocess.run(['bash', '-n', str(ROOT / 'bench' / 'gpu.sh')], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def test_wheel_list_pins_every_wheel():
    lines = [ln.strip() for ln in (ROOT / 'bench' / 'gpu_wheels.txt').read_text().splitlines()
             if ln.strip() and not ln.startswith('#')]
    assert len(lines) == 6
    assert all(line.count('==') == 1 for line in lines)
    assert 'gsplat==1.5.3' in lines


def test_train_summary_parsing(load_script):
    bench = load_script('bench/gpu_bench.py')
    text = ('progress...\nwrote /tmp/s.ply: 123456 Gaussians from 184 views of brick at '
            '800x800, 7000 steps on cuda in 95.0 s, held-out PSNR 31.25 dB (26 views)\n')
    assert bench.parse_train_summary(text) == (31.25, 123456)
    assert bench.parse_train_summary('PSNR=28.5 on 21 held-out views') == (28.5, None)
    assert bench.parse_train_summary('nothing here') == (None, None)


def test_table_keeps_failed_and_skipped_phases(tmp_path, load_script):
    bench = load_script('bench/gpu_bench.py')
    (tmp_path / 'status.tsv').write_text('env\tok\t3\ntrain\ttimed out after 110 s\t120\n'
                                         'sam\tskipped (no time left)\t0\n')
    (tmp_path / 'env.json').write_text('{"rows": [["device", "NVIDIA H200", ""], '
                                       '["memory", 139.8, "GiB"]]}')
    (tmp_path / 'train.json').write_text('not json')
    rows = bench.collect_rows(tmp_path)
    assert rows == [
        ('env', 'status', 'ok', ''), ('env', 'wall time', 3.0, 's'),
        ('env', 'device', 'NVIDIA H200', ''), ('env', 'memory', 139.8, 'GiB'),
        ('train', 'status', 'timed out after 110 s', ''), ('train', 'wall time', 120.0, 's'),
        ('train', 'result file', rows[6][2], ''),
        ('sam', 'status', 'skipped (no time left)', ''), ('sam', 'wall time', 0.0, 's')]
    assert rows[6][2].startswith('unreadable')
    table = bench.format_table(rows).splitlines()
    assert table[0] == '| phase | item | value | unit |'
    assert table[3] == '| env | wall time | 3 | s |'
    assert table[5] == '| env | memory | 139.8 | GiB |'
    assert len(table) == 2 + len(rows)


def test_table_command_writes_the_file(tmp_path, capsys, load_script):
    bench = load_script('bench/gpu_bench.py')
    (tmp_path / 'status.tsv').write_text('sam\tok\t7\n')
    (tmp_path / 'sam.json').write_text('{"rows": [["encoder", 0.0123456, "s/image"]]}')
    out = tmp_path / 'table.md'
    assert bench.main(['table', '--results', str(tmp_path), '--out', str(out)]) == 0
    assert '| sam | encoder | 0.01235 | s/image |' in out.read_text()
    assert '| sam | encoder | 0.01235 | s/image |' in capsys.readouterr().out
