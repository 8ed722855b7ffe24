"""Where a gold proxy errs: its accuracy on the held-out pairs of the training topics (the
task's rm_val_seen_topics set, rebuilt here from the run's config) split by the rubric
component that contributes most to each pair's gold gap, and by whether another component
favours the rejected response (the pair is then a trade-off, not a clear win).

    python -m results.reward_hacking.errors_by_component runs/rm_gold_32k [RUN ...]
"""
import collections
import json
import sys
from pathlib import Path

import numpy as np

from llm import chat_template, cli, tokenizer as tokenizer_lib
from llm.data import preferences
from llm.rl import gold, reward_model


USAGE = 'python -m results.reward_hacking.errors_by_component runs/rm_gold_32k [RUN ...]'


def breakdown(run: str) -> tuple[float, dict]:
  path = Path(run) / 'config.json'
  config = json.loads(path.read_text()) if path.is_file() else {}
  if config.get('task') != 'reward_model':
    found = f'its task is {config.get("task")!r}' if config else f'{path} is missing'
    raise ValueError(f'{run} is not a reward model run ({found}); give gold-proxy reward model runs: {USAGE}')
  rm, seed = config['reward_model'], config['seed']
  train, _ = preferences.load('gold', '', 0.0, seed, rm['gold_pairs'], rm['gold_noise'], rm['gold_val_pairs'])
  pairs = preferences.gold_seen_topic_pairs(train, rm['gold_val_pairs'], seed)
  tok = tokenizer_lib.load_any(str(Path(run) / 'tokenizer.model'))
  scorer = reward_model.load_proxy([run], 'mean', config['train']['seq_len'])
  ids = lambda conversation: chat_template.render(tok, conversation)[0]
  right_N = scorer.score([ids(p.chosen) for p in pairs]) > scorer.score([ids(p.rejected) for p in pairs])
  right, count = collections.Counter(), collections.Counter()
  for p, ok in zip(pairs, right_N):
    topic = gold.topic_of(p.chosen[:-1])
    chosen, rejected = (gold.components(topic, m[-1]['content']) for m in (p.chosen, p.rejected))
    gap = {k: chosen[k] - rejected[k] for k in chosen}
    key = (max(gap, key=lambda k: abs(gap[k])), any(v < 0 for v in gap.values()))
    count[key] += 1
    right[key] += int(ok)
  return float(right_N.mean()), {k: (count[k], right[k] / count[k]) for k in sorted(count)}


def main(runs: list[str]):
  if not runs:
    raise ValueError(f'no runs given: {USAGE}')
  print('| proxy | accuracy | largest part of the gold gap | another part favours the rejected | pairs | accuracy |')
  print('|---|---|---|---|---|---|')
  for run in runs:
    total, rows = breakdown(run)
    for (part, tradeoff), (n, accuracy) in rows.items():
      print(f'| {Path(run).name} | {total:.3f} | {part} | {"yes" if tradeoff else "no"} | {n} | {accuracy:.3f} |')


if __name__ == '__main__':
  cli.guarded(main, 'results.reward_hacking.errors_by_component')(sys.argv[1:])
