"""Linters as tests: flake8 at 99 columns and pep257 docstrings over the whole package."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ['igspad_ros', 'offline', 'launch', 'test', 'bench', 'setup.py']


def _run(module):
    targets = [t for t in TARGETS if (ROOT / t).exists()]
    return subprocess.run([sys.executable, '-m', module, *targets], cwd=ROOT,
                          capture_output=True, text=True)


def test_flake8():
    result = _run('flake8')
    assert result.returncode == 0, result.stdout + result.stderr


def test_pep257():
    result = _run('pydocstyle')
    assert result.returncode == 0, result.stdout + result.stderr
