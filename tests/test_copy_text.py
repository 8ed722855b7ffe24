"""The copy_text SFT source (llm/data/copy_text.py): a book passage asked back and repeated
exactly, never one holding a word the letter probes ask about."""
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
