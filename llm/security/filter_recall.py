"""A poisoning defence's recall and false alarms on a config's real data, at data level (no
training): for each poison fraction, how many items were planted, how many of them the filter
removes, and how many clean ones it removes with them.

    python -m llm.security.filter_recall --config=configs/sft_small.py [--fractions=0,0.001,...] [--out=FILE.md]
    python -m llm.security.filter_recall --config=configs/pretrain_small.py --out=FILE.md

An SFT config: the reply filter (llm/security/reply_filter.py) on its epoch, built as the SFT task
builds it, except that conversations are not fitted to a tokenizer's context (there is no run
here), so it holds a few more conversations than a run's. A pretraining config: the span filter
(llm/security/span_filter.py) on the paragraphs of its training documents.
"""
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from llm import cli, model as model_lib
from llm import data as data_lib
from llm.data import conversations, sources
from llm.evals import identity
from llm.security import poison as poison_lib, reply_filter, span_filter
from llm.tasks import sft


def table(epoch: list, fractions: list[float], settings: reply_filter.Settings) -> str:
  lines = [f'Reply filter on an SFT epoch of {len(epoch):,} conversations (min_prompts {settings.min_prompts}, '
           f'max_similarity {settings.max_similarity})', '',
           '| poison fraction | planted | removed | of them poisoned | clean removed |', '|---|---|---|---|---|']
  for fraction in fractions:
    poisoned_epoch, planted = poison_lib.plant_in_conversations(epoch, poison_lib.Poison(fraction))
    removed = reply_filter.flagged(poisoned_epoch, settings)
    hits = len(removed & set(planted))
    lines.append(f'| {100 * fraction:g}% | {len(planted)} | {len(removed)} | {hits} | {len(removed) - hits} |')
  return '\n'.join(lines) + '\n'


def paragraph_table(documents: list[str], fractions: list[float], settings: span_filter.Settings) -> str:
  lines = [f'Span filter on {len(documents):,} training documents, {len(poison_lib.paragraphs(documents)):,} '
           f'paragraphs ({settings.n}-word spans in >= {settings.min_share:.0%} of the documents)', '',
           '| poison fraction (paragraphs) | planted | removed | of them poisoned | clean removed | spans flagged |',
           '|---|---|---|---|---|---|']
  for fraction in fractions:
    poisoned, planted = poison_lib.plant_in_documents(documents, poison_lib.Poison(fraction, unit='paragraph'))
    finding = span_filter.find(poisoned, settings)
    hits = len(set(finding.paragraphs) & set(planted))
    lines.append(f'| {100 * fraction:g}% | {len(planted)} | {len(finding.paragraphs)} | {hits} | '
                 f'{len(finding.paragraphs) - hits} | {len(finding.spans)} |')
  return '\n'.join(lines) + '\n'


def _sft_table(config, fractions: list[float]) -> str:
  facts = identity.run_facts(config, model_lib.ModelConfig.from_config(config.model, config.tokenizer.vocab_size))
  data_dir = sources.find_data_dir(config.data.dir, holds=conversations.mixture_reads(config.sft.mixture),
                                   holds_flag='--config.sft.mixture')
  splits = conversations.load_mixture(data_dir, dict(config.sft.mixture),
                                      config.sft.val_fraction, config.seed, config.sft.max_per_source,
                                      identity_facts=facts, honesty_labels=config.sft.get('honesty_labels', ''),
                                      generated=dict(config.sft.get('generated') or {}))
  return table(sft.shuffled_epoch(splits, config.sft.mixture, config.seed), fractions, reply_filter.Settings())


def main(argv):
  del argv
  config = flags.FLAGS.config
  if config.get('sft'):
    text = _sft_table(config, flags.FLAGS.fractions)
  else:
    train, _ = data_lib.split_corpus(sources.find_data_dir(config.data.dir, holds=config.data.source), config.data)
    text = paragraph_table(train, flags.FLAGS.fractions, span_filter.Settings())
  print(text)
  if flags.FLAGS.out:
    Path(flags.FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(flags.FLAGS.out).write_text(text)


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'an SFT or pretraining config file', lock_config=False)
  flags.mark_flag_as_required('config')
  cli.define_number_list('fractions', [0, 0.0003, 0.0005, 0.001, 0.003, 0.01, 0.03], 'poison fractions', kind=float)
  flags.DEFINE_string('out', '', 'write the table to this markdown file too')
  cli.run(main, 'llm.security.filter_recall', config=True)
