"""The python_letters SFT source (llm/data/letters.py): exact counts and spellings, tool results
that the sandbox really prints, words held out of training by content, the word list."""
import random
import re

import pytest

from llm import chat_template, sandbox
from llm.data import conversations, letters

WORDS = ('garden', 'lantern', 'pepper', 'river', 'bookshelf', 'quiet', 'committee', 'balloon')


def draw(n, words=WORDS, seed=0):
  rng = random.Random(seed)
  return [letters.letters_conversation(rng, rng.choice(words)) for _ in range(n)]


def word_and_letter(conversation):
  """The word and letter a question is about: the word is the one of WORDS it names; the letter,
  for a counting question, the single letter it names."""
  question = conversation[0]['content']
  word = next(w for w in re.findall(r'[a-z]+', question) if w in WORDS)
  letter = re.findall(r'\b([a-z])\b', question.replace(word, ''))
  return word, letter[0] if letter else None


def parts_of(conversation, kind):
  return [p['text'] for p in conversation[1]['content'] if p['type'] == kind]


def test_counts_and_spellings_are_exact():
  kinds = set()
  for conversation in draw(400):
    word, letter = word_and_letter(conversation)
    (call,), (result,) = parts_of(conversation, 'tool_call'), parts_of(conversation, 'tool_result')
    answer = parts_of(conversation, 'text')[-1]
    if letter:  # counting
      expected = sum(1 for c in word if c == letter)
      assert call == f'python: print(" {word}".count("{letter}"))' and result == str(expected)
      assert conversations.extract_answer(answer) == str(expected) and word in answer
      kinds.add('absent' if expected == 0 else 'count')
    else:
      assert call == f'python: print(*" {word}".strip())' and result.split(' ') == list(word)
      assert result in answer
      kinds.add('spell')
  assert kinds == {'count', 'absent', 'spell'}


def test_tool_results_are_what_the_sandbox_prints():
  seen = {}
  for conversation in draw(60):
    (call,), (result,) = parts_of(conversation, 'tool_call'), parts_of(conversation, 'tool_result')
    seen.setdefault('count' in call, (call, result))
  assert len(seen) == 2  # a counting call and a spelling call
  for call, result in seen.values():
    name, code = call.split(': ', 1)
    assert name == 'python' and sandbox.run(code).text(500) == result


def test_conversations_render_with_the_tool_result_out_of_the_loss(tok):
  conversation = draw(1)[0]
  ids, mask = chat_template.render(tok, conversation)
  result_ids = chat_template.tool_result_ids(tok, parts_of(conversation, 'tool_result')[0])
  start = next(i for i in range(len(ids)) if ids[i:i + len(result_ids)] == result_ids)
  assert not any(mask[start:start + len(result_ids)]) and all(mask[start - 1:start])


def test_the_word_in_the_code_is_the_questions_tokens(tok):
  """' word' in the call encodes to the same ids as in the question, so the model copies tokens."""
  for conversation in draw(40):
    word, _ = word_and_letter(conversation)
    question, call = tok.encode(conversation[0]['content']), tok.encode(parts_of(conversation, 'tool_call')[0])
    spaced = tok.encode(f' {word}')
    contains = lambda ids: any(ids[i:i + len(spaced)] == spaced for i in range(len(ids)))
    assert contains(call), word
    if f' {word}' in conversation[0]['content']:
      assert contains(question), word


def test_deterministic_given_the_seed():
  assert draw(20, seed=3) == draw(20, seed=3) and draw(20, seed=3) != draw(20, seed=4)


def write_books(folder, texts):
  folder.mkdir(parents=True)
  for i, text in enumerate(texts):
    (folder / f'book{i}.txt').write_text(text)


def test_word_list_keeps_frequent_lowercase_words_and_holds_out_the_probe_words(tmp_path):
  book = ' '.join(['garden lantern river'] * letters.MIN_COUNT + ['rare'] * (letters.MIN_COUNT - 1)
                  + ['Sunday', "don't", 'well-known'] * 10 + list(letters.PROBE_WORDS) * 10)
  write_books(tmp_path / letters.BOOKS, [book])
  assert letters.words_from_books(tmp_path) == ('garden', 'lantern', 'river')


def test_the_source_never_shows_a_probe_word(tmp_path):
  """Held out by whole word: 'pepperoni' and 'lettering' are fine, 'pepper' and 'letter' are not,
  as book words or spliced ('pepp' + 'hunter'[-2:] would make 'pepper')."""
  training = {'garden', 'pepperoni', 'lettering', 'hunter'}
  write_books(tmp_path / letters.BOOKS, [' '.join((list(letters.PROBE_WORDS) + sorted(training)) * letters.MIN_COUNT)])
  source = conversations.SOURCES['python_letters'](tmp_path, 0)
  coded = {re.search(r'" (\w+)"', parts_of(next(source), 'tool_call')[0])[1] for _ in range(3000)}
  assert training < coded and not coded & set(letters.PROBE_WORDS)
  invented = coded - training
  assert len(invented) > 30 and all(any(w.startswith(h[:2]) for h in training) and any(w.endswith(t[-2:]) for t in training)
                                    for w in invented)


def test_invented_words_splice_a_proper_head_onto_a_proper_tail():
  words = ('garden', 'lantern', 'bookshelf', 'quiet')
  splices = lambda word: [(h, t) for h in words for t in words for i in range(2, len(h))
                          if word[:i] == h[:i] and 2 <= len(word) - i < len(t) and t.endswith(word[i:])]
  rng = random.Random(0)
  drawn = [letters.splice_word(rng, words) for _ in range(500)]
  assert all(4 <= len(w) <= 15 and splices(w) for w in drawn)
  assert len(set(drawn)) > 100


def test_word_list_from_the_gutenberg_books(data_dir):
  words = letters.words_from_books(data_dir)
  assert len(words) > 5000 and words == tuple(sorted(set(words)))
  assert all(re.fullmatch(r'[a-z]{3,15}', w) for w in words)
  assert {'garden', 'river', 'window'} <= set(words) and not set(letters.PROBE_WORDS) & set(words)


def test_missing_books_name_the_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"{letters.BOOKS}.*python_letters"):
    next(conversations.SOURCES['python_letters'](tmp_path, 0))
