"""How far a run has learned the induction task (`--config.data.copy_task=1.0`): the loss on the
second copy of held-out copy_task windows (its first token left out, which nothing predicts)
against the loss on the other tokens, where chance is log(pool size). Induction heads show as the
second copy's loss falling far below chance while the rest stays there.

    python results/sft_recipe/copy_task_loss.py --workdir=runs/stage1 --steps=1000,2000,3000 [--pool=255]

Windows are drawn for ids no training run reaches (2**40 + i), from the pool copy_task would use:
the --pool most frequent tokens of the run's training stream (llm/data/pipeline.py).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from llm import inference  # noqa: E402
from llm.data import pipeline, prepare  # noqa: E402
from llm.evals import Context  # noqa: E402
from llm.tasks.pretrain import cache_dir  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument('--workdir', required=True)
ap.add_argument('--steps', default='')  # comma-separated checkpoint steps ('' = the latest)
ap.add_argument('--pool', type=int, default=255)  # the copy-task run's data.repeat_vocab
ap.add_argument('--alphabet_min', type=int, default=0)  # its data.copy_alphabet_min
ap.add_argument('--windows', type=int, default=256)  # held-out windows scored
ap.add_argument('--width', type=int, default=129)  # train.seq_len + 1 of the copy-task run
a = ap.parse_args()

run = inference.load(a.workdir)
pool = pipeline.frequent_tokens(prepare(run.config, cache_dir(run.config)).train_tokens, a.pool)
windows = [pipeline.copy_task_window(2 ** 40 + i, a.width, pool, a.alphabet_min) for i in range(a.windows)]
# Where each window's copy sits: the longest later match of its own prefix (as the data test finds it).
second_BxT = np.zeros((a.windows, a.width - 1), bool)  # second_BxT[b, t]: target t + 1 is in the second copy
for b, w in enumerate(windows):
  match = [next((k for k in range(a.width - s) if w[s + k] != w[k]), a.width - s) for s in range(1, a.width)]
  start = 1 + int(np.argmax(match))
  second_BxT[b, start:start + match[start - 1] - 1] = True  # targets start+1 .. start+L-1
steps = [int(s) for s in a.steps.split(',') if s] or [run.step]
for step in steps:
  ctx = Context.from_run(inference.load(a.workdir, step=step, mesh=run.mesh))
  loss_BxT = np.stack(ctx.score([list(map(int, w)) for w in windows]))
  print(f'{a.workdir} step {step}: second-copy loss {loss_BxT[second_BxT].mean():.3f}, '
        f'other tokens {loss_BxT[~second_BxT].mean():.3f} (chance {np.log(a.pool):.2f})', flush=True)
