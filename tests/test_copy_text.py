"""The copy_text SFT source (llm/data/copy_text.py): a book passage asked back and repeated
exactly, never one holding a word the letter probes ask about."""
import itertools
import random
import re

import pytest

from llm.data import conversations, copy_text, letters


def write_book(folder, text):
  (folder / letters.BOOKS).mkdir(parents=True)
  (folder / letters.BOOKS / 'book.txt').write_text(text)


def test_the_reply_is_the_passage_of_the_question_exactly(tmp_path):
  text = ' '.join(f'w{i},' if i % 3 == 0 else f'w{i}' for i in range(1000))
  write_book(tmp_path, text)
  words = text.split()
  for conversation in [next(copy_text.copy_text(tmp_path, seed)) for seed in range(50)]:
    user, assistant = conversation
    reply = assistant['content']
    assert reply in user['content'] and 3 <= len(reply.split()) <= 12
    first = words.index(reply.split()[0])
    assert words[first:first + len(reply.split())] == reply.split()  # consecutive words of the book


def test_no_passage_holds_a_probe_word(tmp_path):
  """Held out by whole word, in any case and next to punctuation: 'Necessary,' is one; 'peppers' is not."""
  filler = ' '.join(['the', 'peppers', 'of', 'old']) * 3
  write_book(tmp_path, ' '.join(f'{filler} Necessary, {filler} "letter" {filler}' for _ in range(40)))
  source = copy_text.copy_text(tmp_path, 0)
  replies = [next(source)[1]['content'] for _ in range(400)]
  assert not any(re.search(r'necessary|\bletter\b', r, re.I) for r in replies)
  assert any('peppers' in r for r in replies)
  assert copy_text.holds_a_probe_word('Necessary, he said') and not copy_text.holds_a_probe_word('peppers')


def test_deterministic_given_the_seed(tmp_path):
  write_book(tmp_path, ' '.join(f'word{i}' for i in range(300)))
  take = lambda seed: [copy_text.copy_conversation(random.Random(seed), copy_text.book_words(tmp_path))
                       for _ in range(5)]
  assert take(1) == take(1) and take(1) != take(2)
  assert 'copy_text' in conversations.GENERATED


def test_missing_books_name_the_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match=f'{letters.BOOKS}.*copy_text'):
    next(conversations.SOURCES['copy_text'](tmp_path, 0))


# --- copy_pieces: made-up words of the tokenizer's own pieces ---------------------------------

@pytest.fixture(scope='module')
def piece_tok(tmp_path_factory):
  """A small BPE over varied words and the probe words, so that probe pieces exist."""
  from llm.tokenizer import train_tokenizer
  rng = random.Random(0)
  syllables = ['ka', 'lo', 'mi', 'ster', 'ven', 'dra', 'po', 'lith', 'ou', 'grim', 'sa', 'tu', 'wen']
  words = [''.join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(400)]
  text = '\n'.join(' '.join(rng.choice(words + list(letters.PROBE_WORDS)) for _ in range(12)) for _ in range(3000))
  return train_tokenizer([text], 400, tmp_path_factory.mktemp('pieces') / 'tok.model', 10**9)


def test_copy_pieces_replies_repeat_the_question_and_never_hold_a_probe_piece(piece_tok):
  held_out = copy_text.probe_pieces(piece_tok)
  assert {piece_tok.id_to_piece(i) for i in piece_tok.encode(' necessary')} <= held_out
  source = copy_text.copy_pieces(None, 0, piece_tok)
  replies = []
  for _ in range(500):
    user, assistant = next(source)
    assert assistant['content'] in user['content'] and 2 <= len(assistant['content'].split()) <= 6
    replies.append(assistant['content'])
  copied = {piece_tok.id_to_piece(i) for r in replies for i in piece_tok.encode(r)}
  assert not copied & held_out
  assert not any(copy_text.holds_a_probe_word(r) for r in replies)
  starts, tails = copy_text.word_pieces(piece_tok)
  # Vocabulary-wide: most word-like pieces that are not probe pieces get copied, word starts and
  # continuations alike.
  assert len(copied & {'\u2581' + s for s in starts}) >= 0.8 * len(starts)
  assert len(copied & set(tails)) >= 0.8 * len(tails)


def test_copy_pieces_is_deterministic_and_needs_the_tokenizer(piece_tok):
  take = lambda seed: list(itertools.islice(copy_text.copy_pieces(None, seed, piece_tok), 3))
  assert take(1) == take(1) and take(1) != take(2)
  assert 'copy_pieces' in conversations.GENERATED
  with pytest.raises(ValueError, match="copy_pieces.*tokenizer"):
    next(copy_text.copy_pieces(None, 0, None))
