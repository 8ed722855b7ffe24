"""Does the search-trained model read the answer from the search result by its content or by its place?
A search file states a person's five facts in one fixed order (llm/honesty/world.py: birth year, city,
profession, employer, mother). Here each unseen held-out fact's right search result is rebuilt with
the asked fact's sentence moved to each of the five places (the other four kept in their order), and
the greedy reply after it judged as honesty_search_read_acc judges it (llm/evals/honesty.py). A model
that reads by content answers alike at every place.

    python -m results.factuality.read_position --out=DIR [--run=sft_honesty_search_short] RUNS_FOLDER [...]
        # each folder of run.sh (a base) with its search arm; writes DIR/read_position.md
"""
import statistics
import sys
from pathlib import Path

from llm import chat_template, cli, evals, inference, tools
from llm.evals import honesty
from llm.evals.context import assistant_text
from llm.honesty import verify, world as world_lib
from llm.security import injection

PLACES = range(len(world_lib.RELATIONS))


def result_with(fact: world_lib.Fact, own: list[world_lib.Fact], place: int) -> str:
  """The person's search file as the tool returns it, the asked fact's sentence at `place`."""
  sentence = lambda f: world_lib.RELATIONS[f.relation].statements[0].format(name=f.subject, value=f.value)
  others = [sentence(f) for f in own if f.relation != fact.relation]
  return f'{injection.file_for(fact.subject)}: ' + ' '.join(others[:place] + [sentence(fact)] + others[place:])


def read_by_place(run: Path) -> dict[tuple[str, int], float]:
  """(relation, place) -> the share of unseen held-out facts whose reply states the fact."""
  ctx = evals.Context.from_run(inference.load(run))
  tok, world = ctx.tokenizer, honesty.world_dir(ctx.config)
  registry = tools.make_registry(search_folder=world / 'search')
  facts = world_lib.read_facts(world)
  by_person = {}
  for f in facts:
    by_person.setdefault(f.subject, []).append(f)
  heldout = [f for f in facts if f.split == 'heldout']  # numbered as the evaluator numbers its questions
  rows, prompts = [], []
  for i, f in enumerate(heldout):
    if f.exposure:
      continue
    call = f'search: {f.subject}'
    assert result_with(f, by_person[f.subject], list(world_lib.RELATIONS).index(f.relation)) == \
        tools.run_tool(registry, call).strip(), 'the search file no longer has the layout this script rebuilds'
    for place in PLACES:
      parts = [{'type': 'tool_call', 'text': call},
               {'type': 'tool_result', 'text': result_with(f, by_person[f.subject], place)}]
      ids, _ = chat_template.render(tok, [{'role': 'user', 'content': f.question(i)},
                                          {'role': 'assistant', 'content': parts}])
      rows.append((f, place))
      prompts.append(ids[:-1])  # without the turn's <|end|>, as honesty.searched_for
  replies = ctx.generate(prompts, honesty.MAX_NEW_TOKENS, temperature=0.0,
                         stop_ids=[tok.special_id('<|end|>'), tok.eos_id])
  right = {}
  for (f, place), reply in zip(rows, replies):
    right.setdefault((f.relation, place), []).append(verify.states(assistant_text(tok, reply), f.value))
  return {k: statistics.mean(v) for k, v in right.items()} | {'n': len(rows) // len(PLACES)}


def main(argv: list[str]) -> None:
  flags = {a.split('=')[0]: a.split('=', 1)[1] for a in argv if a.startswith('--')}
  folders = [Path(a) for a in argv if not a.startswith('--')]
  if '--out' not in flags or not folders:
    sys.exit(__doc__)
  runs = [folder / flags.get('--run', 'sft_honesty_search_short') for folder in folders]
  results = [read_by_place(run) for run in runs]
  order = list(world_lib.RELATIONS)
  lines = [f'Read accuracy with the right search result, by the place of the asked fact in it (places 0-4; '
           f'the file\'s own order: {", ".join(order)}). Mean over bases ({" / ".join(r.parent.name for r in runs)}, '
           f'{runs[0].name}), {results[0]["n"]} unseen held-out facts each ({results[0]["n"] // len(order)} a relation).', '',
           '| relation (own place) | ' + ' | '.join(f'place {p}' for p in PLACES) + ' |',
           '|---' * (len(PLACES) + 1) + '|']
  for relation in order:
    cells = []
    for p in PLACES:
      values = [r[(relation, p)] for r in results if (relation, p) in r]
      cells.append(f'{100 * statistics.mean(values):.1f}% ({" / ".join(f"{100 * v:.1f}" for v in values)})'
                   if values else '-')
    lines.append(f'| {relation} ({order.index(relation)}) | ' + ' | '.join(cells) + ' |')
  out = Path(flags['--out'])
  out.mkdir(parents=True, exist_ok=True)
  (out / 'read_position.md').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  cli.guarded(main, 'results.factuality.read_position')(sys.argv[1:])
