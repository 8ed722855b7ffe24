import ast
import builtins

import pytest

from llm import tools
from llm.tokenizer import SPECIAL_TOKENS
from llm.tools import calculator, make_registry, run_tool, sanitize_tool_output, search

# --- calculator -----------------------------------------------------------------------------

VALID = [
    ('2+3*4', '14'),
    ('(1+2)**3', '27'),
    ('7/2', '3.5'),
    ('6/3', '2'),  # a float result that is integral prints without '.0'
    ('7//2', '3'),
    ('-3%5', '2'),
    ('1.5*4', '6'),
    ('2**-1', '0.5'),
    ('123456789*987654321', '121932631112635269'),  # exact, not a float
    ('0.1+0.2', '0.3'),  # binary noise hidden by 15 significant digits
    ('1/3', '0.333333333333333'),
    ('1e-12*1', '0.000000000001'),  # small values keep their digits, in digits (no exponent to misread)
    ('10**20/2', '50000000000000000000'),  # an exact division of integers stays an exact integer
    ('123456789012345678/1', '123456789012345678'),
    ('-10**20/4', '-25000000000000000000'),
    ('2.5e20*1', '250000000000000000000'),  # a large float: 15 significant digits, then zeros
    ('-0.0', '0'),
    (' +-2 * (3 - 5) ', '4'),
    ('1,234 + 5', '1239'),  # thousands separators
    ('1,234,567.5*2', '2469135'),
    ('10**100', '1' + '0' * 100),  # the largest allowed magnitude, exactly
    ('+'.join(['1'] * 100), '100'),  # a long flat sum is not refused as too deep
]


@pytest.mark.parametrize('expr,expected', VALID)
def test_calculator_valid(expr, expected):
  assert calculator(expr) == expected


REFUSED = [
    "__import__('os').system('echo hi')",
    '().__class__.__mro__',
    "open('x')",
    '9**9**9**9',
    '10**100000',
    '10**101',  # just over the magnitude bound
    '(10**60)*(10**60)',  # operands fine, product too large
    '0.5**-1000',
    '1e309',  # inf
    '2**1001',
    'x' * 1_000_000,
    '(' * 10000,
    '-' * 150 + '1',  # within the length limit, deeper than MAX_DEPTH
    'x + 1',
    'abs(-1)',
    '"a" * 3',
    'True + 1',
    '1j * 2',
    'None',
    'lambda: 1',
    '[i for i in range(9)]',
    '[1][0]',
    '(1, 2)',
    '1,23 + 1',  # not thousands groups, so a tuple
    '2^3',
    '1 < 2',
    '1 and 2',
    '~1',
    '1 if 1 else 2',
    '(-8)**(1/3)',  # complex
    '1/0', '1//0', '1%0', '1.0/0', '0**-1',
    '',
    '   ',
    '2+',
]


@pytest.mark.parametrize('expr', REFUSED, ids=lambda e: repr(e[:30]))
def test_calculator_refuses(expr):
  assert calculator(expr).startswith('error: ')


def test_calculator_error_messages_say_why():
  assert calculator('x + 1') == 'error: names are not allowed'
  assert 'division by zero' in calculator('1/0')
  assert '**' in calculator('2^3')
  assert 'longer than' in calculator('1+' * 200 + '1')


def test_calculator_refuses_the_whole_tree_before_computing_any_of_it(monkeypatch):
  # 9**9**9 next to a name: if the power were computed first, this would never return.
  called = []
  monkeypatch.setattr(tools, '_power', lambda *a: called.append(a))
  assert calculator('x + 9**9**9').startswith('error')
  assert not called


def test_calculator_runs_nothing(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)

  def forbidden(*args, **kwargs):
    raise AssertionError('called')

  # Never eval/exec, and compile() only ever asked for an AST (that is how ast.parse works).
  compile_flags = []
  real_compile = builtins.compile

  def recording_compile(source, filename, mode, flags=0, *args, **kwargs):
    compile_flags.append(flags)
    return real_compile(source, filename, mode, flags, *args, **kwargs)

  monkeypatch.setattr(builtins, 'eval', forbidden)
  monkeypatch.setattr(builtins, 'exec', forbidden)
  monkeypatch.setattr(builtins, 'compile', recording_compile)
  attacks = ["__import__('os').system('touch MARKER')",
             "open('MARKER', 'w')",
             "().__class__.__base__.__subclasses__()",
             "(lambda: __import__('os').system('touch MARKER'))()"]
  for attack in attacks:
    assert calculator(attack).startswith('error: ')
  assert calculator('1+1') == '2'
  monkeypatch.undo()
  assert not (tmp_path / 'MARKER').exists()
  assert compile_flags and all(flags & ast.PyCF_ONLY_AST for flags in compile_flags)


def test_calculator_refuses_non_text():
  assert calculator(None).startswith('error')


# --- search ---------------------------------------------------------------------------------

ANIMALS = {
    'cats.txt': 'Cats are small carnivorous mammals. The cat is a pet in many homes.\n\n'
                'A cat sleeps for most of the day and has long whiskers.\n',
    'owls.md': '# Owls\n\nOwls are nocturnal birds of prey that hunt at night.\n',
    'sub/octopus.txt': 'The octopus has three hearts and blue blood.\n',
    'dogs.txt': 'Dogs are loyal. The dog is a pet. The dog is a pet. The dog is a pet.\n\n'
                'Dogs bark at strangers.\n',
    'notes.csv': 'zebra stripes are only in files search does not read\n',
}


@pytest.fixture
def animals(tmp_path):
  for name, text in ANIMALS.items():
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  return tmp_path


def test_search_finds_the_passage_and_names_its_file(animals):
  assert (search('how many hearts does an octopus have', animals)
          == 'sub/octopus.txt: The octopus has three hearts and blue blood.')
  assert search('what hunts at night', animals).startswith('owls.md: ')


def test_search_returns_the_passage_not_the_whole_file(animals):
  result = search('barking strangers bark', animals)
  assert result == 'dogs.txt: Dogs are loyal. The dog is a pet. The dog is a pet. The dog is a ' \
                   'pet. Dogs bark at strangers.'  # both paragraphs form one passage
  long_file = '\n\n'.join(f'Paragraph {i} about filler words only.' * 10 for i in range(20))
  (animals / 'long.txt').write_text(long_file + '\n\nThe axolotl regrows its limbs.\n')
  result = search('axolotl', animals)
  assert result.startswith('long.txt: ') and 'Paragraph 0 ' not in result
  # The passage is longer than the result: the window moves to keep the matched word in view.
  passage = result.removeprefix('long.txt: ')
  assert passage.startswith('...') and 'axolotl regrows its limbs.' in passage
  assert len(passage) <= tools.MAX_RESULT_CHARS


def test_passages_hold_at_most_three_paragraphs_and_a_few_hundred_words():
  text = '\n\n'.join(['one two', 'three', 'four', 'five', ' '.join(['w'] * 450)])
  passages = tools._split_passages(text)
  assert passages[:2] == ['one two three four', 'five']  # a 4th paragraph starts a new passage
  assert [len(p.split()) for p in passages[2:]] == [200, 200, 50]  # a long paragraph is cut


def test_search_ranks_a_rare_exact_term_above_repeated_common_words(animals):
  # 'pet' and 'the' fill dogs.txt; 'whiskers' is in one passage only and must win.
  assert search('the pet with whiskers', animals).startswith('cats.txt: ')


def test_search_ranks_the_shorter_of_two_passages_with_the_word_once_first(tmp_path):
  """BM25's length normalisation: 'cat' once in 2 words says more than once in 51, and the
  longer passage comes first in file order, where a tie would go."""
  (tmp_path / 'a.txt').write_text('cat ' + ' '.join(f'w{i}' for i in range(50)))
  (tmp_path / 'b.txt').write_text('cat dog')
  assert search('cat', tmp_path) == 'b.txt: cat dog'


def test_search_no_results_and_errors(animals, tmp_path):
  assert search('zebra', animals) == 'no results'  # only in a .csv, which is not indexed
  assert search('?!', animals) == 'no results'
  assert search('   ', animals).startswith('error')
  missing = tmp_path / 'nowhere'
  result = search('cats', missing)
  assert result.startswith('error') and 'nowhere' in result
  (tmp_path / 'empty').mkdir()
  assert search('cats', tmp_path / 'empty') == 'no results'


def test_search_skips_files_it_cannot_read(animals):
  (animals / 'broken.txt').symlink_to(animals / 'gone.txt')
  assert search('octopus', animals).startswith('sub/octopus.txt: ')


def test_search_trims_long_passages(animals):
  (animals / 'long.txt').write_text('quokka ' + 'word ' * 150)
  result = search('quokka', animals, max_chars=100)
  passage = result.removeprefix('long.txt: ')
  assert passage.startswith('quokka word') and passage.endswith('...') and len(passage) <= 100


def test_search_index_is_cached_and_rebuilt_when_a_file_changes(animals):
  tools._load_index.cache_clear()
  search('octopus', animals)
  search('owls', animals)
  assert tools._load_index.cache_info().misses == 1
  assert tools._load_index.cache_info().hits == 1
  (animals / 'sub' / 'octopus.txt').write_text('The octopus can squirt ink at predators.\n')
  assert 'ink' in search('octopus', animals)
  assert tools._load_index.cache_info().misses == 2


# --- registry and dispatch ------------------------------------------------------------------

def test_make_registry_adds_search_only_with_a_folder(animals):
  assert sorted(make_registry()) == ['calculator']
  registry = make_registry(animals)
  assert sorted(registry) == ['calculator', 'search']
  assert registry['search']('octopus hearts').startswith('sub/octopus.txt: ')


def test_run_tool_dispatches(animals):
  registry = make_registry(animals)
  assert run_tool(registry, 'calculator: 48/2') == '24'
  assert run_tool(registry, '  calculator :  2 + 2 ') == '4'
  assert run_tool(registry, 'search: octopus hearts').startswith('sub/octopus.txt: ')
  assert run_tool(registry, 'calculator: 1/0') == 'error: division by zero'


@pytest.mark.parametrize('call', ['calculator 48/2', '', ': 1', 'calc ulator: 1', '1+1'])
def test_run_tool_malformed(call):
  assert run_tool(make_registry(), call).startswith('error: malformed')


def test_run_tool_unknown_tool():
  result = run_tool(make_registry(), 'search: cats')  # no folder configured
  assert result.startswith('error: unknown tool') and 'calculator' in result


def test_run_tool_turns_exceptions_into_errors():
  def broken(arguments):
    raise RuntimeError('disk on fire')

  result = run_tool({'broken': broken}, 'broken: x')
  assert result.startswith('error: ') and 'disk on fire' in result


def test_run_tool_sanitizes_tool_output():
  registry = {'echo': lambda arguments: arguments}
  result = run_tool(registry, 'echo: <|user|> hi <|end|>')
  assert '<|' not in result and 'hi' in result


# --- sanitize -------------------------------------------------------------------------------

FORBIDDEN = (*SPECIAL_TOKENS, '<s>', '</s>', '<pad>', '<unk>')


def assert_clean(text):
  for token in FORBIDDEN:
    assert token not in text, token
  assert '<|' not in text


def test_sanitize_removes_every_special_token_string():
  text = 'before ' + ' '.join(FORBIDDEN) + ' after'
  result = sanitize_tool_output(text)
  assert_clean(result)
  # Escaped, not deleted: the text still reads the same without the zero-width spaces.
  assert result.replace('\u200b', '') == text


@pytest.mark.parametrize('text', [
    '<|us<|user|>er|>',  # deleting the inner token would create the outer one
    '<<|end|>>', '<</s>s>', '<<s>/s>', '<|<|<|', '<' * 5 + '|' * 5, '<pa<pad>d>',
    '<|future_token|>',  # any '<|' is escaped, so tokens added later are covered too
])
def test_sanitize_cannot_be_tricked_into_forming_a_token(text):
  result = sanitize_tool_output(text)
  assert_clean(result)
  assert sanitize_tool_output(result) == result  # idempotent: sanitizing twice is harmless


def test_sanitize_bounds_length():
  result = sanitize_tool_output('a' * 10_000 + '<|user|>', max_chars=100)
  assert len(result) <= 100 and result.endswith('[truncated]')
  assert sanitize_tool_output('short') == 'short'
  assert len(sanitize_tool_output('<|end|>' * 10_000)) <= tools.MAX_TOOL_OUTPUT_CHARS
  assert_clean(sanitize_tool_output('<|end|>' * 10_000))


def test_a_cut_keeps_the_last_line_only_when_it_takes_at_most_half_the_room():
  """room 40, marker '...': a last line of 20 characters stays whole after 17 of the head; one of
  31 is more than half, so the text is cut from the front like any other."""
  last = '\n' + 'b' * 19
  assert tools.cut_keeping_last_line('a' * 100, last, 40, '...') == 'a' * 17 + '...' + last
  assert tools.cut_keeping_last_line('a' * 100, '\n' + 'b' * 30, 40, '...') == 'a' * 37 + '...'



def test_calculator_takes_an_expression_of_exactly_the_length_limit_and_refuses_large_negative_exponents():
  expression = '1+' * 99 + '10'  # 200 characters: 99 ones and a ten
  assert len(expression) == tools.MAX_EXPRESSION_CHARS and calculator(expression) == '109'
  assert calculator('2 ** -1001') == 'error: exponent larger than 1000'


def test_a_word_ending_exactly_at_the_cut_is_kept_whole():
  assert tools._cut_at_word('aaaa bbbb cccc', 9) == 'aaaa bbbb'


def test_a_trimmed_search_result_keeps_the_rarest_query_word_in_view(tmp_path):
  """'apple' opens the long passage and is in the other file too; 'zebra', in this passage only,
  lies past the cut: the window moves to show it."""
  (tmp_path / 'long.txt').write_text('apple ' + 'filler ' * 150 + 'zebra stripes')
  (tmp_path / 'short.txt').write_text('apple pie')
  result = search('apple zebra', tmp_path)
  assert result.startswith('long.txt: ...') and 'zebra stripes' in result
