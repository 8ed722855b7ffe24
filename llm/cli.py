"""The one way a command-line program ends on bad input: one line naming the program and the fix."""
from absl import app

from llm import files


def guarded(main, program: str):
  """main, where bad input ends the program with one line 'program: message' instead of a
  traceback: a ValueError (its message says what is wrong; inference.RunError is one), a folder
  that cannot be written, a file that is not there, or a full disk. For scripts that parse their own
  arguments."""

  def main_ending_in_one_line(*args):
    try:
      return main(*args)
    except (ValueError, PermissionError) as e:
      raise SystemExit(f'{program}: {e}') from None
    except FileNotFoundError as e:
      if e.filename is None:  # raised with a message of its own, which names the fix
        raise SystemExit(f'{program}: {e}') from None
      raise SystemExit(f'{program}: {e.filename} does not exist: check the paths given in the flags') from None
    except OSError as e:
      if e.errno not in files.NO_SPACE:
        raise
      raise SystemExit(f'{program}: {files.no_space(e, "its output")}, then rerun the same command') from None

  return main_ending_in_one_line


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
