"""The one way a command-line program ends on bad input: one line naming the program and the fix.
Also what every program shares with it: flags parsed so that a bad one is named, library logging
kept to what the user needs."""
import importlib.util
import itertools
import logging
import os
import sys

from absl import app, flags, logging as absl_logging

from llm import files

# The flags define_number_list defines belong to the program that calls it: absl lists a program's
# own flags under --help, and it would take them for llm.cli's.
flags.disclaim_key_flags()


def guarded(main, program: str):
  """main, where bad input ends the program in one line 'program: message' instead of a
  traceback: a ValueError (its message says what is wrong; inference.RunError is one) or an
  OSError (a path that is missing, a file where a folder is wanted, a folder that cannot be
  written, a full disk, a failed download: what the program was given or runs on, not a bug in
  it). Other exceptions are bugs and keep their traceback. For scripts that parse their own arguments."""

  def main_ending_in_one_line(*args):
    try:
      return main(*args)
    except ValueError as e:
      raise SystemExit(f'{program}: {e}') from None
    except OSError as e:
      raise SystemExit(f'{program}: {_os_error(e)}') from None

  return main_ending_in_one_line


def _os_error(e: OSError) -> str:
  if e.errno in files.NO_SPACE:
    return f'{files.no_space(e, "its output")}, then rerun the same command'
  if e.filename is None:  # raised with a message of its own, which names the fix
    return str(e)
  if isinstance(e, FileNotFoundError):
    return f'{e.filename} does not exist: check the paths given in the flags'
  if isinstance(e, (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)):
    return f'{e.filename}: {e.strerror}: check the paths given in the flags'
  return f'{e.filename}: {e.strerror}'


def run(main, program: str, positional: bool = False, config: bool = False):
  """app.run(main), guarded: bad input ends the program in one line (see guarded). Words after the
  flags are refused unless the program reads them (positional): dropped, `"The king"` meant as
  --prompt would go unnoticed. config: the program has a --config file flag (see config_parser)."""

  def main_of_flags(argv):
    if len(argv) > 1 and not positional:
      raise ValueError(f'unexpected arguments {argv[1:]}: give everything as a flag, --name=value '
                       '(quoted where the value has spaces); see --help')
    return main(argv)

  quiet_libraries()
  app.run(guarded(main_of_flags, program), **({'flags_parser': config_parser(program)} if config else {}))


def quiet_libraries():
  """orbax and grain log every checkpoint saved or read at INFO (a screen of it before a sample's
  first word), jax that it found no TPU on every machine without one: keep their warnings and
  errors only, on absl's handler, where app.run sends Python's logging."""
  absl_logging.get_absl_handler().addFilter(_QuietLibraries())


def _installed_at(*packages: str) -> tuple[str, ...]:
  """The folders the packages are installed in, each ending in a separator; one not installed has none."""
  folders = []
  for package in packages:
    spec = importlib.util.find_spec(package)
    folders += [os.path.join(folder, '') for folder in (spec and spec.submodule_search_locations or ())]
  return tuple(folders)


class _QuietLibraries(logging.Filter):
  # Where the libraries are installed, not a folder named like one anywhere in the path: a checkout
  # under ~/jax/ would otherwise lose all of its own INFO lines.
  _LIBRARIES = _installed_at('orbax', 'grain', 'jax')

  def filter(self, record):
    if not record.pathname.startswith(self._LIBRARIES):
      return True
    # orbax warns that a manager opened read-only is read-only: llm.inference opens runs so on purpose.
    return record.levelno >= logging.WARNING and not record.getMessage().startswith('Given directory is read only')


def define_number_list(name: str, default: list, help: str, kind=int, lowest=0):  # pylint: disable=redefined-builtin
  """A comma-separated list flag of numbers of `kind`, each at least `lowest`: one that is not
  ends in absl's one-line flag error naming the flag, not in a bare 'invalid literal for int()'."""
  return flags.DEFINE(_NumberList(kind, lowest), name, default, help, serializer=flags.CsvListSerializer(','))


class _NumberList(flags.ListParser):

  def __init__(self, kind, lowest):
    super().__init__()
    self._kind, self._lowest = kind, lowest

  def parse(self, argument):
    numbers, what = [], 'whole number' if self._kind is int else 'number'
    for item in super().parse(argument):
      try:
        numbers.append(self._kind(item))
      except ValueError:
        raise ValueError(f'{item!r} is not a {what}; write comma-separated {what}s >= {self._lowest}') from None
      if numbers[-1] < self._lowest:
        raise ValueError(f'{item} is below {self._lowest}; write comma-separated {what}s >= {self._lowest}')
    return numbers


def config_parser(program: str):
  """absl's flag parser for a program with a --config file flag (ml_collections.config_flags), where
  a config file that does not load, a misspelt --config.key and one given twice end in one line
  naming them, not a traceback."""

  def parse(argv):
    repeated = repeated_key(argv)
    if repeated:
      sys.exit(f'{program}: {repeated}')
    try:
      rest = flags.FLAGS(argv)
    except SyntaxError as e:  # in the config file itself
      sys.exit(f'{program}: could not load --config: {e.filename}:{e.lineno}: SyntaxError: {e.msg}')
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      message = ' '.join(str(e).replace('\\n', ' ').replace('\\', '').replace("'", '').split())
      if message.endswith('has no attribute get_config'):
        sys.exit(f'{program}: the --config file defines no get_config(); it must return the config (see configs/*.py)')
      sys.exit(f'{program}: {_unknown_key(argv) or f"unknown or invalid config key: {message}"}')
    except flags.Error as e:
      # A config file that raises arrives with its traceback inside the message: keep the head
      # (which flag) and the exception's own line.
      lines = [l for l in str(e).splitlines() if l.strip()]
      sys.exit(f'{program}: {lines[0]} {lines[-1]}' if 'Traceback' in str(e) else f'{program}: {e}')
    try:
      config = flags.FLAGS.config  # config_flags defers a missing file's error to the first read
      if config is not None:  # an optional --config left out
        config.keys()
    except OSError as e:
      sys.exit(f'{program}: could not load --config: {" ".join(l.strip() for l in str(e).splitlines()[-2:])}')
    return rest

  return parse


def config_keys(args: list[str]) -> list[str]:
  """The config fields that the --config.a.b flags in args set, in order, as 'config.a.b'
  (--noconfig.a.b, absl's False for a boolean, sets one too); nothing after '--'."""
  keys = []
  for arg in itertools.takewhile(lambda a: a != '--', args):
    if not arg.startswith('-'):  # a program's name, or the value of a --config.a.b given apart from it
      continue
    name = arg.lstrip('-').split('=', 1)[0]
    key = name[2:] if name.startswith('noconfig.') else name
    if key.startswith('config.'):
      keys.append(key)
  return keys


def repeated_key(argv: list[str]) -> str | None:
  """What is wrong with the first --config.a.b that argv sets twice; None if none is. absl keeps
  the last value of a flag given twice without a word, so a command edited by appending an override
  would run with a setting its reader may not see."""
  keys = config_keys(argv)
  repeated = next((key for i, key in enumerate(keys) if key in keys[:i]), None)
  return repeated and f'--{repeated} is given twice; give it once'


def _unknown_key(argv: list[str]) -> str | None:
  """What is wrong with the first --config.a.b=... in argv that names no field of the --config
  file's config, with the fields there are (config_flags says only 'b'); None if each names one."""
  path = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  if path is None:
    return None
  config = flags.FLAGS['config'].parser.parse(path)
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    keys, node = arg.split('=', 1)[0].split('.')[1:], config
    for depth, key in enumerate(keys):
      where = '.'.join(['config', *keys[:depth]])
      if not hasattr(node, 'keys'):
        return (f'--config.{".".join(keys)}: {where} is a setting ({node!r}), not a group of fields; '
                f'drop .{".".join(keys[depth:])}')
      if key not in node.keys():
        return (f'--config.{".".join(keys)}: {where} has no field {key!r} (its fields: {", ".join(sorted(node.keys()))}); '
                'fix the spelling')
      node = node[key]
  return None
