"""The README's Python examples run as written, in order, each building on the ones before."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'
BLOCKS = re.findall(r'```python\n(.*?)```', README.read_text(), flags=re.S)


def test_readme_examples_run_and_print(capsys):
  assert len(BLOCKS) >= 4
  namespace = {}
  for index, block in enumerate(BLOCKS):
    exec(compile(block, f'README.md example {index}', 'exec'), namespace)
    assert capsys.readouterr().out, f'example {index} printed nothing'


def test_readme_opens_with_the_two_commands():
  first_block = README.read_text().split('```bash\n', 1)[1].split('```', 1)[0].splitlines()
  assert len(first_block) == 2
  assert 'pytest' in first_block[1]
