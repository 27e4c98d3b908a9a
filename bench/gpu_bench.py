#!/usr/bin/env python3
"""Phases of the prepared GPU run (bench/gpu.sh) and the one table they make.

Each phase writes ``<results>/<phase>.json`` = {"rows": [[item, value, unit], ...]};
``bench/gpu.sh`` appends one line per phase to ``<results>/status.tsv`` (phase, status,
seconds), and ``table`` merges both into one markdown table, so a phase that failed or ran
out of time still shows as a row. Training and per-image stages go through the offline
tools' contracts (DESIGN.md), so this file does not depend on internal APIs.
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PSNR_RE = re.compile(r'(?i)psnr[^0-9-]*(-?\d+(?:\.\d+)?)|(-?\d+(?:\.\d+)?)\s*dB')
GAUSSIANS_RE = re.compile(r'(?i)(\d[\d,]*)\s*gaussians')


def format_table(rows):
    """Markdown table of (phase, item, value, unit) rows; floats get 4 significant digits."""
    lines = ['| phase | item | value | unit |', '| --- | --- | --- | --- |']
    for phase, item, value, unit in rows:
        text = f'{value:.4g}' if isinstance(value, float) else str(value)
        lines.append(f'| {phase} | {item} | {text} | {unit} |')
    return '\n'.join(lines)


def parse_train_summary(text):
    """(held-out PSNR in dB or None, Gaussian count or None) from the train tool's summary."""
    psnr = gaussians = None
    for line in text.splitlines():
        match = PSNR_RE.search(line)
        if match:
            psnr = float(match.group(1) or match.group(2))
        match = GAUSSIANS_RE.search(line)
        if match:
            gaussians = int(match.group(1).replace(',', ''))
    return psnr, gaussians


def collect_rows(results):
    """All table rows: each phase's status line, then the rows its JSON file holds."""
    results = Path(results)
    rows = []
    status_file = results / 'status.tsv'
    lines = status_file.read_text().splitlines() if status_file.is_file() else []
    for line in lines:
        phase, status, seconds = line.split('\t')
        rows.append((phase, 'status', status, ''))
        rows.append((phase, 'wall time', float(seconds), 's'))
        path = results / f'{phase}.json'
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                rows += [(phase, item, value, unit) for item, value, unit in data['rows']]
            except (ValueError, KeyError, TypeError) as err:
                rows.append((phase, 'result file', f'unreadable ({err})', ''))
    return rows


def _write(results, phase, rows):
    path = Path(results) / f'{phase}.json'
    path.write_text(json.dumps({'rows': rows}, indent=1))
    for item, value, unit in rows:
        print(f'{phase}: {item} = {value} {unit}'.rstrip(), flush=True)


def run_env(args):
    """Torch, CUDA and gsplat versions and the card's name."""
    import torch
    rows = [('torch', torch.__version__, ''), ('cuda runtime', str(torch.version.cuda), ''),
            ('cuda available', str(torch.cuda.is_available()), '')]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rows += [('device', props.name, ''),
                 ('capability', f'{props.major}.{props.minor}', ''),
                 ('memory', round(props.total_memory / 2**30, 1), 'GiB')]
    try:
        import gsplat
        rows.append(('gsplat', gsplat.__version__, ''))
    except ImportError as err:
        rows.append(('gsplat', f'not importable ({err})', ''))
    _write(args.results, 'env', rows)


def run_train(args):
    """Train the 800 px scene with the offline tool on cuda; time it, read its PSNR."""
    command = [sys.executable, str(ROOT / 'offline' / 'train_scene.py'), '--data',
               str(args.data), '--out', str(args.scene), '--device', 'cuda']
    if args.iters:
        command += ['--iters', str(args.iters)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    print(done.stdout + done.stderr, flush=True)
    psnr, gaussians = parse_train_summary(done.stdout)
    rows = [('exit status', done.returncode, ''), ('training wall time', seconds, 's'),
            ('held-out PSNR', psnr if psnr is not None else 'not reported', 'dB'),
            ('Gaussians', gaussians if gaussians is not None else 'not reported', '')]
    _write(args.results, 'train', rows)
    return done.returncode


def run_render_check(args):
    """Run the CPU-vs-CUDA render and gradient agreement check; keep its verdict lines."""
    command = [sys.executable, str(ROOT / 'test' / 'gpu' / 'check_render_agreement.py')]
    done = subprocess.run(command, capture_output=True, text=True)
    print(done.stdout + done.stderr, flush=True)
    rows = [('exit status (0 = agree)', done.returncode, '')]
    rows += [('output', line.strip(), '') for line in done.stdout.splitlines() if line.strip()]
    _write(args.results, 'render_check', rows)
    return done.returncode


def run_stages(args):
    """Evaluate the 800 px test images with the offline tool; median seconds by stage."""
    command = [sys.executable, str(ROOT / 'offline' / 'evaluate.py'), '--data', str(args.data),
               '--scene', str(args.scene), '--json', str(args.json)] + list(args.extra)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    print(done.stdout + done.stderr, flush=True)
    rows = [('exit status', done.returncode, ''), ('evaluate wall time', seconds, 's')]
    if done.returncode == 0:
        result = json.loads(Path(args.json).read_text())
        n = result.get('n_images') or 1
        rows.append(('images', n, ''))
        rows.append(('wall time per image', seconds / n, 's'))
        for stage, value in (result.get('timing') or {}).items():
            rows.append((f'median {stage}', float(value), 's/image'))
        for key in ('pixel_auroc', 'image_auroc'):
            if result.get(key) is not None:
                rows.append((key, float(result[key]), ''))
        for key, value in (result.get('pose') or {}).items():
            rows.append((f'pose {key}', float(value), ''))
        rows.append(('config', json.dumps(result.get('config')), ''))
    _write(args.results, 'stages', rows)
    return done.returncode


def run_sam(args):
    """Forward time of SAM ViT-B's image encoder (random init: timing only) at 1024 px."""
    import torch
    from segment_anything import sam_model_registry
    torch.manual_seed(0)
    device = torch.device(args.device)
    encoder = sam_model_registry['vit_b'](checkpoint=None).image_encoder.to(device).eval()
    x = torch.rand(1, 3, 1024, 1024, device=device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    times = []
    with torch.inference_mode():
        for k in range(args.warmup + args.repeats):
            sync()
            start = time.perf_counter()
            feats = encoder(x)
            sync()
            if k >= args.warmup:
                times.append(time.perf_counter() - start)
    rows = [(f'SAM ViT-B encoder on {device.type}, random init, 1024 px, fp32, x2 per image '
             f'(test + render)',
             2 * statistics.median(times), 's/image'),
            ('feature map', 'x'.join(str(d) for d in feats.shape), '')]
    _write(args.results, 'sam', rows)


def run_table(args):
    """Print the merged table and write it to ``--out``."""
    table = format_table(collect_rows(args.results))
    print(table)
    if args.out:
        Path(args.out).write_text(table + '\n')


def main(argv=None):
    """Dispatch one phase."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='phase', required=True)
    for name in ('env', 'render_check', 'train', 'stages', 'sam', 'table'):
        p = sub.add_parser(name)
        p.add_argument('--results', type=Path, required=True, help='folder of phase results')
    sub.choices['train'].add_argument('--data', type=Path, required=True)
    sub.choices['train'].add_argument('--scene', type=Path, required=True)
    sub.choices['train'].add_argument('--iters', type=int, default=None)
    sub.choices['stages'].add_argument('--data', type=Path, required=True)
    sub.choices['stages'].add_argument('--scene', type=Path, required=True)
    sub.choices['stages'].add_argument('--json', type=Path, required=True)
    sub.choices['stages'].add_argument('extra', nargs='*', help='more evaluate.py flags')
    sub.choices['sam'].add_argument('--warmup', type=int, default=2)
    sub.choices['sam'].add_argument('--repeats', type=int, default=5)
    sub.choices['sam'].add_argument('--device', default='cuda')
    sub.choices['table'].add_argument('--out', type=Path, default=None)
    args = parser.parse_args(argv)
    runner = {'env': run_env, 'render_check': run_render_check, 'train': run_train,
              'stages': run_stages, 'sam': run_sam, 'table': run_table}[args.phase]
    return runner(args) or 0


if __name__ == '__main__':
    sys.exit(main())
