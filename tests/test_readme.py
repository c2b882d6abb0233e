"""The README's Python examples run as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'
BLOCKS = re.findall(r'```python\n(.*?)```', README.read_text(), flags=re.S)


def test_readme_has_examples():
  assert BLOCKS


@pytest.mark.parametrize('index', range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
  exec(compile(BLOCKS[index], f'README.md example {index}', 'exec'), {})
  assert capsys.readouterr().out  # every example prints what it shows


def test_readme_opens_with_the_two_commands():
  first_block = README.read_text().split('```bash\n', 1)[1].split('```', 1)[0].splitlines()
  assert len(first_block) == 2
  assert 'pytest' in first_block[1]
