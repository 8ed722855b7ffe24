"""Best-of-n against a proxy reward model, the second optimiser of the hacking study: sample
max(n) responses per held-out prompt from the policy, and for each n report the proxy and gold
reward of the response the proxy ranks first, at KL_bon = log n - (n - 1) / n.

    python -m llm.rl.best_of_n --policy=runs/sft_gold --proxy=runs/rm_gold_4k --n=1,2,4,8,16,32,64 \
        --prompts=64 --out=results/reward_hacking/bon_4k.json

For each n the max(n) samples of a prompt split into max(n) / n disjoint groups of n, each
contributing its proxy-best response, so every sample is used at every n (lower variance
than one draw of n). A proxy of several runs (DIR1,DIR2) is an ensemble (--ensemble mean|min).
"""
import json
from pathlib import Path

from absl import flags
import numpy as np

from llm import chat_template, cli, inference, tools
from llm.rl import gold as gold_lib, hacking, reward_model, tasks as rl_tasks


def select(proxy_PxN: np.ndarray, gold_PxN: np.ndarray, n: int) -> tuple[float, float]:
  """(mean proxy, mean gold) of the proxy's best of each disjoint group of n samples."""
  P, N = proxy_PxN.shape
  if N % n:
    raise ValueError(f'best-of-{n} needs a sample count divisible by n, got {N}')
  proxy_PxGxn, gold_PxGxn = proxy_PxN.reshape(P, N // n, n), gold_PxN.reshape(P, N // n, n)
  best_PxGx1 = proxy_PxGxn.argmax(-1)[..., None]
  return (float(np.take_along_axis(proxy_PxGxn, best_PxGx1, -1).mean()),
          float(np.take_along_axis(gold_PxGxn, best_PxGx1, -1).mean()))


def curve(proxy_PxN: np.ndarray, gold_PxN: np.ndarray, ns: list[int]) -> list[dict]:
  rows = []
  for n in ns:
    proxy, gold = select(proxy_PxN, gold_PxN, n)
    rows.append({'n': n, 'kl_bon': hacking.kl_bon(n), 'd': hacking.distance(hacking.kl_bon(n)),
                 'proxy': proxy, 'gold': gold})
  return rows


def parse_ns(text: str) -> list[int]:
  """The n's of --n (comma-separated): each 1 or more and a divisor of the largest, the samples
  drawn per prompt. Checked before anything is loaded or sampled."""
  try:
    ns = [int(n) for n in text.split(',')]
  except ValueError:
    raise ValueError(f'--n={text}: write whole numbers separated by commas, e.g. --n=1,2,4,8') from None
  if min(ns) < 1:
    raise ValueError(f'--n={text}: each n must be 1 or more')
  if any(max(ns) % n for n in ns):
    raise ValueError(f'--n={text}: each n must divide the largest, {max(ns)}, the samples drawn per prompt '
                     '(they split into disjoint groups of n)')
  return ns


def sample_and_score(policy: str, proxy: str, ensemble: str, prompts: int, samples: int, max_new_tokens: int,
                     temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
  """(proxy_PxN, gold_PxN, examples): samples responses per held-out gold-setting prompt."""
  run = inference.load(policy)
  tok = run.tokenizer
  engine = inference.Engine(run.model_cfg, run.params, tok, run.mesh, rules=run.rules, tools=tools.make_registry())
  window = run.config.train.seq_len  # what the proxy reads of each sample, prompt included
  scorer = reward_model.load_proxy(proxy.split(','), ensemble, window, mesh=run.mesh, policy_tokenizer=tok)
  problems = gold_lib.GoldTopicsTask().heldout(prompts)
  ids = [chat_template.render_prompt(tok, p.prompt_messages) for p in problems for _ in range(samples)]
  # Budgeted to the proxy's window, not the cache: a longer sample would be scored cut short.
  room = min(engine.cache_len, window)
  completions = engine.generate(ids, [min(max_new_tokens, room - len(i)) for i in ids], temperature,
                                seed=inference.row_seeds(seed, 0, len(ids)),
                                stop_ids=chat_template.turn_stop_ids(tok))
  texts = [rl_tasks.assistant_text(tok, c.tokens) for c in completions]
  proxy_PxN = scorer.score([i + c.tokens for i, c in zip(ids, completions)]).reshape(prompts, samples)
  gold_PxN, examples = gold_and_examples(problems, texts, proxy_PxN)
  return proxy_PxN, gold_PxN, examples


def gold_and_examples(problems: list, texts: list[str], proxy_PxN: np.ndarray) -> tuple[np.ndarray, list]:
  """(gold_PxN, examples): the gold reward of texts, prompt by prompt (N samples each, in
  problems' order), and for the first 8 prompts the sample the proxy ranks first."""
  P, N = proxy_PxN.shape
  gold_PxN = np.array([gold_lib.gold_reward(problems[j // N].meta['topic'], t) for j, t in enumerate(texts)],
                      np.float32).reshape(P, N)
  best = proxy_PxN.argmax(1)
  examples = [{'prompt': problems[p].prompt_messages[-1]['content'], 'response': texts[p * N + best[p]],
               'proxy': float(proxy_PxN[p, best[p]]), 'gold': float(gold_PxN[p, best[p]])}
              for p in range(min(P, 8))]
  return gold_PxN, examples


def main(argv):
  del argv
  f = flags.FLAGS
  # Checked first: an empty one would be read as the current directory, after minutes of loading the other.
  for flag, what in (('policy', 'the policy run DIR (an SFT run of the gold setting)'),
                     ('proxy', 'the reward model run DIR, or DIR1,DIR2,... for an ensemble')):
    if not f[flag].value:
      raise ValueError(f'--{flag} is missing: give {what}')
  ns = parse_ns(f.n)
  samples = max(ns)
  proxy_PxN, gold_PxN, examples = sample_and_score(f.policy, f.proxy, f.ensemble, f.prompts, samples,
                                                   f.max_new_tokens, f.temperature, f.seed)
  rows = curve(proxy_PxN, gold_PxN, ns)
  for row in rows:
    print(f"n={row['n']:4d}  KL_bon={row['kl_bon']:.3f}  d={row['d']:.3f}  proxy={row['proxy']:.4f}  "
          f"gold={row['gold']:.4f}")
  if f.out:
    Path(f.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f.out).write_text(json.dumps({'policy': f.policy, 'proxy': f.proxy, 'ensemble': f.ensemble,
                                       'prompts': f.prompts, 'curve': rows, 'examples_best_of_max_n': examples},
                                      indent=1) + '\n')


if __name__ == '__main__':
  flags.DEFINE_string('policy', '', 'the policy run (an SFT run of the gold setting)')
  flags.DEFINE_string('proxy', '', 'reward model run DIR, or DIR1,DIR2,... for an ensemble')
  flags.DEFINE_enum('ensemble', 'mean', reward_model.REDUCTIONS,
                    "how an ensemble combines: 'mean' or 'min' (worst case)")
  flags.DEFINE_string('n', '1,2,4,8,16,32,64', 'comma-separated n; max(n) samples per prompt, each n divides it')
  flags.DEFINE_integer('prompts', 64, 'held-out prompts', lower_bound=1)
  flags.DEFINE_integer('max_new_tokens', 96, 'response length cap', lower_bound=1)
  flags.DEFINE_float('temperature', 1.0, 'sampling temperature (1: the policy itself, as KL_bon assumes)',
                    lower_bound=0.0)
  flags.DEFINE_integer('seed', 0, 'sampling seed', lower_bound=0)
  flags.DEFINE_string('out', '', 'JSON file for the curve and the proxy-best examples')

  cli.run(main, 'llm.rl.best_of_n')
