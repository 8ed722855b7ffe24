"""llm.cli.run and llm.cli.guarded: bad input ends a program in one line naming it, never a traceback."""
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ERRORS_BY_COMPONENT = 'python -m results.reward_hacking.errors_by_component runs/rm_gold_32k [RUN ...]'


def _program(tmp_path, body):
  code = f'from llm import cli\ndef main(argv):\n  {body}\ncli.run(main, "prog")\n'
  return subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize('body, last_line', [
    ("raise ValueError('--n must be positive, not -1')", 'prog: --n must be positive, not -1'),
    ("open('{missing}')", 'prog: {missing} does not exist: check the paths given in the flags'),
    ("raise FileNotFoundError('no world at x; write one first')", 'prog: no world at x; write one first'),
    ("raise OSError(28, 'No space left on device', 'out/report.md')",
     'prog: no space left on device writing out/report.md: free space on that disk, then rerun the same command'),
    ("open('{a_file}/out.json', 'w')", 'prog: {a_file}/out.json: Not a directory: check the paths given in the flags'),
    ("open('{tmp_path}', 'w')", 'prog: {tmp_path}: Is a directory: check the paths given in the flags'),
    ("import os; os.mkdir('{a_file}')", 'prog: {a_file}: File exists: check the paths given in the flags'),
])
def test_bad_input_ends_in_one_line_naming_the_program(tmp_path, body, last_line):
  paths = dict(missing=tmp_path / 'runs' / 'summary.json', a_file=tmp_path / 'a_file', tmp_path=tmp_path)
  paths['a_file'].write_text('')
  r = _program(tmp_path, body.format(**paths))
  assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
  assert r.stderr.strip().splitlines()[-1] == last_line.format(**paths)


def test_other_errors_keep_their_traceback(tmp_path):
  r = _program(tmp_path, "raise KeyError('a bug, not bad input')")
  assert r.returncode == 1 and 'Traceback' in r.stderr and 'KeyError' in r.stderr


@pytest.mark.parametrize('command', [
    'llm.sample --workdir={run}', 'llm.chat --workdir={run}', 'llm.serve --workdir={run}',
    'llm.eval --workdir={run}', 'llm.seeds', 'llm.data.show --tokenizer={run}', 'llm.data.download --dataset=tinystories --out={out}',
    'llm.honesty.world --out={out}', 'llm.honesty.interrogate --workdir={run} --world={out}',
    'llm.rl.hacking_report --out={out}', 'llm.rl.best_of_n', 'llm.security.filter_recall --config=configs/sft_small.py',
    'llm.bench'])
def test_words_after_the_flags_are_refused_not_dropped(tmp_path, python_env, command):
  """`llm.sample --workdir=R "The king"` (the --prompt= left out) sampled from an empty prompt."""
  args = command.format(run=tmp_path / 'run', out=tmp_path / 'out').split()
  r = subprocess.run([sys.executable, '-m', *args, 'The king'], cwd=ROOT, env=python_env, capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
  assert r.stderr.strip().splitlines()[-1] == (
      f"{args[0]}: unexpected arguments ['The king']: give everything as a flag, --name=value (quoted where the "
      'value has spaces); see --help')
  assert not (tmp_path / 'out').exists()  # refused before any work


@pytest.mark.parametrize('command', [
    'llm.seeds --group=base={run} --keys=val_loss', 'llm.data.download --dataset=tinystories',
    'llm.honesty.world --people=10'])
def test_an_out_that_is_a_file_is_refused_in_one_line_before_the_work(tmp_path, python_env, command):
  """llm.seeds printed its table, then ended in a FileExistsError traceback; llm.data.download and
  llm.honesty.world ended in one too."""
  args = command.format(run=tmp_path / 'run').split()
  (tmp_path / 'out').write_text('notes\n')
  r = subprocess.run([sys.executable, '-m', *args, f'--out={tmp_path / "out"}'], cwd=ROOT, env=python_env,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 1 and 'Traceback' not in r.stderr and r.stdout == '', r.stderr
  assert r.stderr.strip().splitlines()[-1] == (
      f'{args[0]}: {tmp_path / "out"} cannot be written (File exists): it, or a folder above it, is a file: give a folder')
  assert (tmp_path / 'out').read_text() == 'notes\n'


@pytest.mark.parametrize('program', ['llm.main --workdir={run}', 'llm.security.filter_recall'])
@pytest.mark.parametrize('override, line', [
    ('--config.model.nonexistent=1', "--config.model.nonexistent: config.model has no field 'nonexistent' (its fields: "
     '{model_fields}); fix the spelling'),
    ('--config.modle.dim=64', "--config.modle.dim: config has no field 'modle' (its fields: {fields}); fix the spelling"),
    ('--config.train.steps.warmup=1', '--config.train.steps.warmup: config.train.steps is a setting ({steps}), not a '
     'group of fields; drop .warmup')])
def test_a_misspelt_config_key_is_named_in_full_with_the_fields_there_are(tmp_path, python_env, program, override,
                                                                          line):
  """config_flags names only the last part ("nonexistent"), not the key nor what it could have been."""
  from configs import pretrain_small
  config = pretrain_small.get_config()
  args = program.format(run=tmp_path / 'run').split()
  r = subprocess.run([sys.executable, '-m', *args, '--config=configs/pretrain_small.py', override], cwd=ROOT,
                     env=python_env, capture_output=True, text=True, timeout=120)
  assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
  name = 'llm' if args[0] == 'llm.main' else args[0]
  assert r.stderr.strip().splitlines()[-1] == f'{name}: ' + line.format(
      fields=', '.join(sorted(config)), model_fields=', '.join(sorted(config.model)), steps=config.train.steps)


@pytest.mark.parametrize('overrides, key', [
    (['--config.train.steps=3', '--config.model.dim=32', '--config.train.steps=5'], 'config.train.steps'),
    (['--config.train.progress_bar', '--noconfig.train.progress_bar'], 'config.train.progress_bar'),
    (['--config.train.lr', '0.1', '--config.train.lr=0.2'], 'config.train.lr')])
def test_a_config_key_given_twice_is_refused_naming_it(python_env, overrides, key):
  """absl kept the last value without a word: an override appended to a command could be missed by
  whoever reads the command from its start. A program as llm.main's flags parse (cli.config_parser)."""
  code = ('from ml_collections import config_flags\nfrom llm import cli\n'
          "config = config_flags.DEFINE_config_file('config', None, 'c', lock_config=True)\n"
          "cli.run(lambda argv: print(config.value.train), 'prog', config=True)\n")
  r = subprocess.run([sys.executable, '-c', code, '--config=configs/pretrain_small.py', *overrides], cwd=ROOT,
                     env=python_env, capture_output=True, text=True, timeout=120)
  assert r.returncode == 1 and 'Traceback' not in r.stderr and r.stdout == '', r.stderr
  assert r.stderr.strip().splitlines()[-1] == f'prog: --{key} is given twice; give it once'


@pytest.mark.parametrize('command, says', [
    ('llm.bench --decode --decode_batches=1,a', "flag --decode_batches=1,a: 'a' is not a whole number; write "
     'comma-separated whole numbers >= 1'),
    ('llm.bench --serve --clients=0,8', 'flag --clients=0,8: 0 is below 1; write comma-separated whole numbers >= 1'),
    ('llm.security.filter_recall --config=configs/sft_small.py --fractions=0,a',
     "flag --fractions=0,a: 'a' is not a number; write comma-separated numbers >= 0")])
def test_a_list_of_numbers_that_is_not_one_names_its_flag(python_env, command, says):
  """These were int() and float() of each item in main: 'invalid literal for int() with base 10: 'a''."""
  r = subprocess.run([sys.executable, '-m', *command.split()], cwd=ROOT, env=python_env, capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 1 and 'Traceback' not in r.stderr and says in r.stderr, r.stderr


def test_a_config_argument_is_typed_by_its_default_and_a_bad_one_names_key_and_usage():
  from llm.config import parse_arg
  defaults = {'pairs': 4000, 'beta': 0.02, 'proxy': 'rm', 'greedy': False}
  usage = 'pairs=N[,beta=F]'
  assert parse_arg('beta=0.5,pairs=16,greedy=True', defaults, usage) == {
      'pairs': 16, 'beta': 0.5, 'proxy': 'rm', 'greedy': True}
  assert parse_arg('greedy=False', defaults, usage)['greedy'] is False
  assert parse_arg(None, defaults, usage) == defaults
  for arg, wrong in [('pairs=4k', "pairs='4k' is not a valid int"), ('beta=high', "beta='high' is not a valid float"),
                     ('greedy=no', "greedy='no' is not True or False"), ('pair=4', ''), ('pairs', '')]:
    with pytest.raises(ValueError) as e:
      parse_arg(arg, defaults, usage)
    assert str(e.value) == f'config argument {arg!r}: ' + (f'{wrong}; ' if wrong else '') + f'write {usage}'
  with pytest.raises(ValueError) as e:  # the last would win unseen
    parse_arg('pairs=16,beta=0.5,pairs=32', defaults, usage)
  assert str(e.value) == "config argument 'pairs=16,beta=0.5,pairs=32': pairs is given twice; give it once"


@pytest.mark.parametrize('script, args', [
    ('search_frontier', ['--out={out}', '{runs}']),
    ('against_baseline', ['{runs}/baseline', '{runs}/sft_honesty_search_short']),
    ('read_position', ['--out={out}', '{runs}'])])
def test_a_factuality_script_given_no_run_ends_in_one_line(tmp_path, python_env, script, args):
  """A runs folder without the run the script reads (a typo, a run not copied here)."""
  runs = tmp_path / 'runs'
  r = subprocess.run([sys.executable, '-m', f'results.factuality.{script}',
                      *(a.format(out=tmp_path / 'out', runs=runs) for a in args)],
                     cwd=ROOT, env=python_env, capture_output=True, text=True)
  assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
  run = runs / ('baseline' if script == 'against_baseline' else 'sft_honesty_search_short')
  assert r.stderr.strip().splitlines()[-1] == (
      f'results.factuality.{script}: {run}/config.json is missing: is {run} a training run '
      f'(python -m llm.main --workdir=...)?')


@pytest.mark.parametrize('script, make_run, want', [
    ('security.letters', None, '{run}/config.json is missing: is {run} a training run (python -m llm.main --workdir=...)?'),
    ('security.letters', 'empty', 'no runs given: python -m results.security.letters RUN [RUN ...] > '
                                  'results/security/letters.md'),
    ('reward_hacking.errors_by_component', None, '{run} is not a reward model run ({run}/config.json is missing); give '
                                                 'gold-proxy reward model runs: ' + ERRORS_BY_COMPONENT),
    ('reward_hacking.errors_by_component', 'sft', "{run} is not a reward model run (its task is 'sft'); give "
                                                  'gold-proxy reward model runs: ' + ERRORS_BY_COMPONENT),
    ('reward_hacking.errors_by_component', 'empty', 'no runs given: ' + ERRORS_BY_COMPONENT)])
def test_a_results_script_given_no_run_or_the_wrong_one_ends_in_one_line(tmp_path, monkeypatch, script, make_run, want):
  """Run as `python -m results.SCRIPT RUN` (runpy, in this process): a traceback ended both before."""
  run = tmp_path / 'run'
  if make_run == 'sft':
    run.mkdir()
    (run / 'config.json').write_text(json.dumps({'task': 'sft'}))
  monkeypatch.setattr(sys, 'argv', [script] + ([] if make_run == 'empty' else [str(run)]))
  with pytest.raises(SystemExit) as e:
    runpy.run_module(f'results.{script}', run_name='__main__')
  assert str(e.value) == f'results.{script}: ' + want.format(run=run)


@pytest.mark.parametrize('command, flag', [
    ('llm.bench', '--clients'), ('llm.bench', '--decode_batches'),
    ('llm.security.filter_recall --config=configs/sft_small.py', '--fractions')])
def test_help_lists_a_list_of_numbers_flag_with_the_programs_own(python_env, command, flag):
  """cli.define_number_list's flags were absl's flags of llm.cli, left out of the program's --help."""
  r = subprocess.run([sys.executable, '-m', *command.split(), '--help'], cwd=ROOT, env=python_env,
                     capture_output=True, text=True, timeout=120)
  assert 'Traceback' not in r.stderr and f'  {flag}: ' in r.stdout, r.stdout + r.stderr  # absl's --help ends in 1
