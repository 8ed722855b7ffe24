"""python -m llm.sandbox [--repeat=N] CODE: runs CODE in the sandbox, prints what the model would
read and the wall time per call (process start and setup included)."""
import statistics

from absl import app, flags

from llm import sandbox

_REPEAT = flags.DEFINE_integer('repeat', 10, 'Calls to time (the reply is printed once).', lower_bound=1)


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: python -m llm.sandbox [--repeat=N] 'CODE'")
  results = [sandbox.run(argv[1]) for _ in range(_REPEAT.value)]
  print(results[0].text(2000))
  times_ms = sorted(1000 * r.wall_s for r in results)
  print(f'--- {len(results)} calls: median {statistics.median(times_ms):.0f} ms, '
        f'min {times_ms[0]:.0f} ms, max {times_ms[-1]:.0f} ms per call')


if __name__ == '__main__':
  app.run(main)
