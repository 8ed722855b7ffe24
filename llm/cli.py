"""The one way a command-line program ends on bad input: one line naming the program and the fix."""
from absl import app

from llm import files


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


def run(main, program: str, positional: bool = False):
  """app.run(main), guarded: bad input ends the program in one line (see guarded). Words after the
  flags are refused unless the program reads them (positional): dropped, `"The king"` meant as
  --prompt would go unnoticed."""

  def main_of_flags(argv):
    if len(argv) > 1 and not positional:
      raise ValueError(f'unexpected arguments {argv[1:]}: give everything as a flag, --name=value '
                       '(quoted where the value has spaces); see --help')
    return main(argv)

  app.run(guarded(main_of_flags, program))
