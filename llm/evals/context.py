"""What an evaluator gets: a model (parameters only), its tokenizer, the run's facts, and two
batched ways to query the model: token losses of whole sequences (scoring) and generation.

Built from a finished run (Context.from_run, what `python -m llm.eval` does) or from the
training loop's setup (Context.from_setup), so both measure with the same code.
"""
import dataclasses
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from llm import chat_template, files, inference, init_from, losses, model as model_lib, sharding, tools as tools_lib
from llm.data import sources
from llm.rl import tasks as rl_tasks

_LENGTH_BUCKET = 64  # scored rows are padded to a multiple of this: few compiled shapes
SCORE_BATCH = 32  # rows per scoring forward pass
GENERATE_BATCH = 64  # rows per generate() call: bounds the KV cache's size


@dataclasses.dataclass
class Context:
  model_cfg: model_lib.ModelConfig
  params: dict  # in the training layout, on mesh
  tokenizer: object  # llm.tokenizer.Tokenizer
  mesh: jax.sharding.Mesh
  rules: tuple
  config: ml_collections.ConfigDict  # the run's config
  summary: dict = dataclasses.field(default_factory=dict)  # the run's summary.json ({} while it runs)
  limit: int = 0  # items per evaluator (problems, HellaSwag items, scored windows); 0 = each one's default
  corpora: tuple = ()  # extra text files or folders for bits per byte
  model: nn.Module | None = None  # a stand-in for Transformer(model_cfg) (tests)
  data_dir_flag: str = '--config.data.dir'  # what sets config.data.dir, for errors (llm.eval: --data_dir)
  engines: dict = dataclasses.field(default_factory=dict)  # tools (bool) -> Engine, built on first use

  @classmethod
  def from_run(cls, run: inference.Run, **kwargs) -> 'Context':
    summary_path = run.workdir / 'summary.json'
    summary = files.read_json(summary_path) if summary_path.exists() else {}
    config = run.config
    if parent := init_from.located(config, run.workdir):
      # Absolute, so the held-out sets follow the init_from chain (heldout.lineage) from whatever
      # directory this runs in; one not found stays as typed, for lineage to name if asked.
      config = config.copy_and_resolve_references()
      config.init_from = str(parent)
    return cls(run.model_cfg, run.params, run.tokenizer, run.mesh, run.rules, config, summary, **kwargs)

  @classmethod
  def from_setup(cls, config, setup, params, tokenizer, **kwargs) -> 'Context':
    """Inside the training loop (llm.train.Setup), on the parameters being trained."""
    return cls(setup.model_cfg, params, tokenizer, setup.mesh, setup.rules, config, **kwargs)

  def count(self, default: int) -> int:
    """How many items an evaluator takes: --limit if given, else its default."""
    return self.limit or default

  def identity_facts(self):
    """What this model should say about itself (llm/evals/identity.py)."""
    from llm.evals import identity
    return identity.run_facts(self.config, self.model_cfg)

  def data_dir(self, holds: str = '') -> Path:
    """config.data.dir, $LLM_DATA_DIR, else the first of ./data, ../shared/data that holds `holds`
    (the evaluator's data set under it), as training searches for its source: a ./data made by
    llm.data.download must not hide the shared data dir. holds is the run's, no flag's to fix."""
    return sources.find_data_dir(self.config.data.dir, self.data_dir_flag, holds, holds_flag='')

  # ---- scoring -----------------------------------------------------------------------------

  @property
  def max_len(self) -> int:
    """Longest row score() takes: the context plus the token it predicts."""
    return self.model_cfg.max_seq_len + 1

  def score(self, rows: list[list[int]]) -> list[np.ndarray]:
    """Per row, the loss (nats) of each of its tokens after the first given the ones before:
    float32[len(row) - 1]. Rows are batched SCORE_BATCH at a time, padded to a bucketed length."""
    if any(len(r) > self.max_len or len(r) < 2 for r in rows):
      raise ValueError(f'score() rows need 2 to {self.max_len} tokens')
    fn = self._score_fn()
    out = []
    for start in range(0, len(rows), SCORE_BATCH):
      chunk = rows[start:start + SCORE_BATCH]
      T = min(-(-max(map(len, chunk)) // _LENGTH_BUCKET) * _LENGTH_BUCKET, self.max_len)
      tokens_BxT = np.zeros((SCORE_BATCH, T), np.int32)
      for i, r in enumerate(chunk):
        tokens_BxT[i, :len(r)] = r
      with sharding.mesh_context(self.mesh, self.rules):
        loss_BxT = np.asarray(fn(self.params, jnp.asarray(tokens_BxT)))
      out += [loss_BxT[i, :len(r) - 1] for i, r in enumerate(chunk)]
    return out

  def _score_fn(self):
    if 'score' not in self.engines:
      model = self.model or model_lib.Transformer(self.model_cfg)

      def token_losses(params, tokens_BxT):
        logits_BxTxV = model.apply({'params': params}, tokens_BxT[:, :-1])
        return losses.next_token_loss(logits_BxTxV, tokens_BxT[:, 1:])[2]

      self.engines['score'] = jax.jit(token_losses)
    return self.engines['score']

  # ---- generation --------------------------------------------------------------------------

  def engine(self, tools: bool | str | dict = False) -> inference.Engine:
    """The engine with the calculator (tools=True), the calculator and python (tools='python'),
    the given registry (a dict, e.g. tools.make_registry(search_folder=...)), or without any
    tool. Two are kept, with tools and without: which tools only matters on the host, so every
    registry reuses the calculator's compiled engine."""
    if isinstance(tools, dict):
      registry = tools
    else:
      registry = tools_lib.make_registry(python_tool=tools == 'python') if tools else {}
    if bool(tools) not in self.engines:
      self.engines[bool(tools)] = inference.Engine(self.model_cfg, self.params, self.tokenizer, self.mesh,
                                                   rules=self.rules, tools=registry, model=self.model)
    engine = self.engines[bool(tools)]
    engine.tools, engine.params = registry, self.params
    return engine

  def generate(self, prompts: list[list[int]], max_new_tokens: int, tools: bool | str | dict = False, **kwargs):
    """engine.generate over GENERATE_BATCH rows at a time; each row's budget is cut to the room
    its prompt leaves. A prompt that leaves no room gets None (the caller counts it a miss)."""
    engine = self.engine(tools)
    seeds = kwargs.pop('seed', list(range(len(prompts))))
    fits = [i for i, p in enumerate(prompts) if len(p) < engine.cache_len]
    out = [None] * len(prompts)
    for start in range(0, len(fits), GENERATE_BATCH):
      rows = fits[start:start + GENERATE_BATCH]
      budget = [min(max_new_tokens, engine.cache_len - len(prompts[i])) for i in rows]
      done = engine.generate([prompts[i] for i in rows], budget, seed=[seeds[i] for i in rows], **kwargs)
      for i, completion in zip(rows, done):
        out[i] = completion
    return out

  def chat(self, questions: list[str], max_new_tokens: int, tools: bool | str | dict = False, **kwargs):
    """Each question as one user turn; the assistant's completions (None where it cannot fit).
    Greedy unless kwargs say otherwise; stops at <|end|>."""
    tok = self.tokenizer
    prompts = [chat_template.render_prompt(tok, [{'role': 'user', 'content': q}]) for q in questions]
    kwargs.setdefault('temperature', 0.0)
    return self.generate(prompts, max_new_tokens, tools, stop_ids=chat_template.turn_stop_ids(tok),
                         **kwargs)


def assistant_text(tokenizer, completion) -> str:
  """What the model wrote itself (text parts; tool calls and results left out); '' for None."""
  return '' if completion is None else rl_tasks.assistant_text(tokenizer, completion.tokens)


def tool_calls(tokenizer, completion) -> list[str]:
  """The tool calls' texts ('calculator: 12 * 4') in a completion."""
  if completion is None:
    return []
  return [p['text'] for p in chat_template.parse_assistant(tokenizer, completion.tokens) if p['type'] == 'tool_call']


def mean(values) -> float:
  """The mean, NaN over nothing: a rate with no cases (bypasses of requests none were refused,
  hallucinations with no unseen facts) is undefined, not 0, which would read as measured."""
  values = list(values)
  return float(np.mean(values)) if values else float('nan')


def fitted(values) -> list:
  """The values of the prompts that fit the context: one that did not made no reply (None), so
  it counts neither way in a rate (scoring it as a reply that says nothing would bias the rate)."""
  return [v for v in values if v is not None]
