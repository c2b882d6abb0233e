"""Runs every benchmark script with its defaults and writes their tables to one file.

    python -m benchmarks [--out benchmarks/results_<platform>.md] [--only bench_pairs ...]

The scripts run unchanged on whatever JAX's default backend is (a GPU or TPU when one is
installed), each in its own process, one after another. The file holds, per script, the
command and everything it printed, under a header naming the device and JAX version.
"""

import argparse
import datetime
import os
import subprocess
import sys

import jax

SCRIPTS = ('bytes_accessed', 'bench_pairs', 'bench_polyak', 'bench_explore', 'bench_sam',
           'bench_train_step', 'bench_input_pipeline', 'bench_fsdp')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script: str) -> str:
  """The script's output, or its error, as a Markdown section."""
  command = [sys.executable, '-m', f'benchmarks.{script}']
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
  body = result.stdout if result.returncode == 0 else (
      f'FAILED (exit {result.returncode}):\n{result.stderr[-4000:]}')
  return f'## {script}\n\n`python -m benchmarks.{script}`\n\n```\n{body.strip()}\n```\n'


def main():
  device = jax.devices()[0]
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=os.path.join(
      ROOT, 'benchmarks', f'results_{device.platform}.md'))
  parser.add_argument('--only', nargs='*', choices=SCRIPTS, default=SCRIPTS)
  args = parser.parse_args()
  scripts = [s for s in args.only if os.path.exists(os.path.join(ROOT, 'benchmarks',
                                                                 f'{s}.py'))]
  header = (f'# Benchmarks on {device.platform} ({device.device_kind}), jax '
            f'{jax.__version__}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}\n')
  with open(args.out, 'w', encoding='utf-8') as out:
    out.write(header)
    for script in scripts:
      print(f'running benchmarks.{script} ...', flush=True)
      out.write('\n' + run(script))
      out.flush()
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
