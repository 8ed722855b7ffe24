"""Tables of the same kind from several bases (collect.py's table.md, search_frontier.py's
search_frontier.md) as one: each figure the mean over the bases, then each base's in parentheses.
A table whose rows are the bases themselves (search_frontier.md: one row per base) gets the bases'
rows one under the other and a mean row. For bases whose runs are gone and only their committed
tables are left, which is what the first copying base is.

    python -m results.factuality.mean_tables --out=DIR/table.md BASE0/table.md BASE1/table.md
"""
import argparse
import re
from pathlib import Path

import numpy as np

NUMBER = re.compile(r'-?\d+(?:\.\d+)?')


def rows(path: Path) -> tuple[str, list[list[str]]]:
  """The first markdown table in a file: its header line and its body rows as cells."""
  lines = path.read_text().splitlines()
  first = next((i for i, l in enumerate(lines) if l.startswith('|')), None)
  if first is None or len(lines) < first + 3:
    raise ValueError(f'{path} holds no markdown table')
  block = lines[first:]
  block = block[:next((i for i, l in enumerate(block) if not l.startswith('|')), len(block))]
  cells = lambda l: [c.strip() for c in l.strip().strip('|').split('|')]
  return block[0], [cells(l) for l in block[2:]]


def mean_text(values: list[str]) -> str | None:
  """'8.1%; 55.0%' over bases -> the same text with each number the mean over the bases; None
  when the numbers do not line up (a '-' in one base)."""
  numbers = [NUMBER.findall(v) for v in values]
  if not numbers[0] or any(len(n) != len(numbers[0]) for n in numbers):
    return None
  means = iter(np.mean([[float(x) for x in n] for n in numbers], axis=0))
  places = iter([len(x.split('.')[1]) if '.' in x else 0 for x in numbers[0]])
  return NUMBER.sub(lambda m: f'{next(means):.{next(places)}f}', values[0])


def mean_cell(values: list[str]) -> str:
  """The mean text, then each base's figures: '45.6% (50.6 / 40.6)'; a cell the same in every base
  as it is; cells whose numbers do not line up side by side, separated by ' / '."""
  if len(set(values)) == 1:
    return values[0]
  text = mean_text(values)
  if text is None:
    return ' / '.join(values)
  numbers = [NUMBER.findall(v) for v in values]
  per_base = ' / '.join(n[0] for n in numbers) if len(numbers[0]) == 1 else ' / '.join(values)
  return f'{text} ({per_base})'


def combine(tables: list[tuple[str, list[list[str]]]]) -> str:
  header, first = tables[0]
  if any(h != header for h, _ in tables):
    raise ValueError('the tables have different headers; combine tables of one kind')
  labels = [[r[0] for r in body] for _, body in tables]
  out = [header, '|' + '---|' * len(first[0])]
  if all(l == labels[0] for l in labels):  # the same rows in every base: figure by figure
    for i, row in enumerate(first):
      out.append('| ' + ' | '.join([row[0]] + [mean_cell([body[i][j] for _, body in tables])
                                               for j in range(1, len(row))]) + ' |')
  elif header.strip('| ').startswith('base '):  # one row per base: stacked, then their mean
    stacked = [r for _, body in tables for r in body]
    out += ['| ' + ' | '.join(r) + ' |' for r in stacked]
    out.append('| mean | ' + ' | '.join(mean_text([r[j] for r in stacked]) or '-'
                                          for j in range(1, len(stacked[0]))) + ' |')
  else:
    raise ValueError('the tables have different rows; combine tables of one kind (collect.py with the same arms)')
  return '\n'.join(out) + '\n'


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--out', required=True, type=Path, help='the combined table (markdown)')
  p.add_argument('tables', nargs='+', type=Path, help="each base's table, in base order")
  a = p.parse_args()
  text = combine([rows(t) for t in a.tables])
  text = f"Mean over {len(a.tables)} bases, then each: {', '.join(str(t) for t in a.tables)}\n\n" + text
  print(text)
  a.out.parent.mkdir(parents=True, exist_ok=True)
  a.out.write_text(text)


if __name__ == '__main__':
  main()
