"""Tools the model can call during generation: a calculator, a local text search, Python in a
sandbox (llm/sandbox), and dispatch.

The model writes `<|tool_call|>name: arguments<|/tool_call|>`; the engine hands the text between
the tokens to run_tool(), which returns a string to feed back between `<|tool_result|>` and
`<|/tool_result|>`. Every tool takes and returns a string, and bad input becomes an 'error: ...'
string rather than an exception: the model reads the error and can try again.
"""
import ast
import decimal
import functools
import math
import os
import re
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from llm import sandbox

ToolRegistry = dict[str, Callable[[str], str]]

# ---------------------------------------------------------------------------------------------
# Calculator
# ---------------------------------------------------------------------------------------------

# Bounds that make every evaluation cheap, so no wall-clock guard is needed: the input is short,
# the tree is shallow, every value (including intermediates) is at most 10**100 in magnitude, and
# a power is refused *before* it is computed when its result would be larger. Integer arithmetic
# on numbers of a few hundred digits and float arithmetic both take microseconds.
MAX_EXPRESSION_CHARS = 200
MAX_DEPTH = 100  # the length limit already implies this; it guards recursion if that grows
MAX_EXPONENT = 1000  # allows e.g. 1.005**360 (30 years of monthly interest)
MAX_DIGITS = 100
MAX_MAGNITUDE = 10**MAX_DIGITS

_BINARY_OPERATORS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: _divide(a, b),
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.Pow: None,  # _power(): its size is checked before computing
}
_UNARY_OPERATORS = {ast.UAdd: lambda a: +a, ast.USub: lambda a: -a}
_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant,
                  *_BINARY_OPERATORS, *_UNARY_OPERATORS)

# Friendlier refusals for what a model is likely to try; anything else gets its node's name.
_REFUSALS = {
    ast.Name: 'names are not allowed',
    ast.Call: 'function calls are not allowed',
    ast.Attribute: 'attributes are not allowed',
    ast.Subscript: 'subscripts are not allowed',
    ast.Tuple: 'commas are only allowed as thousands separators, as in 1,234',
    ast.BitXor: 'operator ^ is not allowed; write powers with **',
    ast.Compare: 'comparisons are not allowed',
    ast.BoolOp: 'and/or are not allowed',
    ast.Lambda: 'lambdas are not allowed',
}

# '1,234,567.5' -> '1234567.5'. A comma inside a number can only mean a thousands separator here
# (tuples are not arithmetic), so it is accepted when every group after the first has exactly
# three digits; anything else ('1,23', '1,2345') stays a comma and is refused as a tuple.
_THOUSANDS = re.compile(r'(?<![\w.,])\d{1,3}(?:,\d{3})+(?![\w,])')


class _CalculatorError(Exception):
  """A refusal whose message is shown to the model as is."""


def calculator(expr: str) -> str:
  """Evaluates arithmetic on ints and decimals: + - * / // % **, unary +/-, parentheses.

  Python's `ast` parses the text and only a whitelist of node types is evaluated, by walking the
  tree; nothing is ever eval'd, exec'd or compiled to code. The whole tree is checked before any
  of it is computed, so 'x + 9**9**9' is refused without computing the power.
  Returns the result as a string (see _format_number) or 'error: ...'.
  """
  if not isinstance(expr, str):
    return 'error: the expression must be text'
  if len(expr) > MAX_EXPRESSION_CHARS:
    return f'error: expression longer than {MAX_EXPRESSION_CHARS} characters'
  text = _THOUSANDS.sub(lambda m: m.group().replace(',', ''), expr.strip())
  if not text:
    return 'error: empty expression'
  try:
    tree = ast.parse(text, mode='eval')
  except (SyntaxError, ValueError, MemoryError, RecursionError):
    return f'error: could not parse {expr.strip()!r} as arithmetic'
  try:
    _check_tree(tree)
    return _format_number(_evaluate(tree.body))
  except _CalculatorError as e:
    return f'error: {e}'
  except ZeroDivisionError:
    return 'error: division by zero'
  except (OverflowError, MemoryError, RecursionError):
    return 'error: result too large'


def _check_tree(tree: ast.AST) -> None:
  """Refuses any node outside the whitelist, and trees deeper than MAX_DEPTH (iteratively)."""
  stack = [(tree, 0)]
  while stack:
    node, depth = stack.pop()
    if depth > MAX_DEPTH:
      raise _CalculatorError(f'expression nested deeper than {MAX_DEPTH} levels')
    if not isinstance(node, _ALLOWED_NODES):
      raise _CalculatorError(_REFUSALS.get(type(node), f'{type(node).__name__} is not allowed'))
    if isinstance(node, ast.Constant):
      # bool is an int subclass, and True/1j/'s'/None all parse as Constant.
      if type(node.value) not in (int, float):
        raise _CalculatorError(f'only numbers are allowed, not {node.value!r}'[:80])
    stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _evaluate(node: ast.AST) -> int | float:
  if isinstance(node, ast.Constant):
    return _checked(node.value)
  if isinstance(node, ast.UnaryOp):
    return _checked(_UNARY_OPERATORS[type(node.op)](_evaluate(node.operand)))
  if isinstance(node, ast.BinOp):
    left, right = _evaluate(node.left), _evaluate(node.right)
    if isinstance(node.op, ast.Pow):
      return _checked(_power(left, right))
    return _checked(_BINARY_OPERATORS[type(node.op)](left, right))
  raise _CalculatorError(f'{type(node).__name__} is not allowed')  # unreachable after _check_tree


def _power(base: int | float, exponent: int | float) -> int | float:
  """base ** exponent, refused before computing when the result would exceed MAX_MAGNITUDE."""
  if abs(exponent) > MAX_EXPONENT:
    raise _CalculatorError(f'exponent larger than {MAX_EXPONENT}')
  # Digits of the result, estimated in O(1); the +1 slack lets exact boundary cases (10**100)
  # through to the exact check in _checked.
  if base != 0 and exponent > 0 and exponent * math.log10(abs(base)) > MAX_DIGITS + 1:
    raise _CalculatorError('result too large')
  return base ** exponent


def _checked(value) -> int | float:
  """Refuses complex, infinite, NaN and too large values; every intermediate passes here."""
  if type(value) not in (int, float):  # e.g. (-8)**0.5 is complex
    raise _CalculatorError('result is not a real number')
  if isinstance(value, float) and math.isnan(value):
    raise _CalculatorError('result is not a number')
  if abs(value) > MAX_MAGNITUDE:  # exact comparison for ints; also catches inf
    raise _CalculatorError(f'result larger than 1e{MAX_DIGITS}')
  return value


def _divide(a: int | float, b: int | float) -> int | float:
  """a / b, exact for integers that divide: through a float, 10**20/2 would come out rounded
  (and 123456789012345678/1 off by 2)."""
  if type(a) is int and type(b) is int and b and a % b == 0:
    return a // b
  return a / b


def _format_number(value: int | float) -> str:
  """Integers as plain digits; floats to 15 significant digits, in plain notation without a
  trailing '.0'.

  15 digits is what a double holds exactly, so binary noise disappears (0.1+0.2 -> '0.3') while
  small values keep their digits (1e-12 -> '0.000000000001', where round(x, 10) would print 0).
  Never an exponent: answers are read as digits (conversations.extract_answer would take
  '5e+19' for 19).
  """
  if isinstance(value, int):
    return str(value)
  return format(decimal.Decimal(format(value + 0.0, '.15g')), 'f')  # + 0.0 turns -0.0 into 0.0


# ---------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------

SEARCH_SUFFIXES = ('.txt', '.md')
PASSAGE_WORDS = 200  # a passage is 1-3 paragraphs of up to about this many words
PASSAGE_PARAGRAPHS = 3
MAX_RESULT_CHARS = 600
MAX_QUERY_CHARS = 500
BM25_K1, BM25_B = 1.5, 0.75

_WORD = re.compile(r'[^\W_]+')  # runs of letters and digits, any script
_BLANK_LINE = re.compile(r'\n\s*\n')


def _words(text: str) -> list[str]:
  return _WORD.findall(text.lower())


@dataclass(frozen=True)
class _SearchIndex:
  passages: list[str]  # whitespace-collapsed passage text
  sources: list[str]  # file of each passage, relative to the folder
  lengths: np.ndarray  # words per passage, float
  postings: dict[str, tuple[np.ndarray, np.ndarray]]  # word -> (passage ids, counts there)


def search(query: str, folder: str | Path, max_chars: int = MAX_RESULT_CHARS) -> str:
  """The passage of folder's *.txt / *.md files (recursive) that best matches query by BM25.

  Returns 'file: passage' with the passage trimmed to max_chars, 'no results' when no passage
  shares a word with the query, or 'error: ...'. The index is built once per folder and
  rebuilt only when a file is added, removed or changed.
  """
  if not isinstance(query, str) or not query.strip():
    return 'error: empty search query'
  root = Path(folder).expanduser()
  if not root.is_dir():
    return f'error: search folder {str(folder)!r} does not exist or is not a folder'
  index = _load_index(str(root.resolve()), _folder_fingerprint(root))
  query_words = set(_words(query[:MAX_QUERY_CHARS]))
  if not index.passages or not query_words:
    return 'no results'
  scores = _bm25_scores(index, query_words)
  best = int(np.argmax(scores))  # ties go to the first passage in file order
  if scores[best] <= 0:
    return 'no results'
  # Keep the passage's rarest query word in view when the passage must be trimmed.
  matched = [w for w in query_words if w in index.postings and best in index.postings[w][0]]
  rarest = min(matched, key=lambda w: len(index.postings[w][0]))
  return f'{index.sources[best]}: {_trim(index.passages[best], max_chars, rarest)}'


def _text_files(root: Path) -> list[Path]:
  """Sorted, so passage order (and tie-breaking) does not depend on the file system."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root):  # does not follow directory symlinks
    dirnames.sort()
    found += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(SEARCH_SUFFIXES)]
  return found


def _folder_fingerprint(root: Path) -> tuple:
  """Names, sizes and mtimes of the files: part of the cache key, so edits rebuild the index."""
  fingerprint = []
  for path in _text_files(root):
    try:
      stat = path.stat()
    except OSError:  # e.g. a broken symlink: skipped, like an unreadable file
      continue
    fingerprint.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
  return tuple(fingerprint)


@functools.lru_cache(maxsize=8)  # small: a stale index for an edited folder is simply evicted
def _load_index(root: str, fingerprint: tuple) -> _SearchIndex:
  passages, sources, counts = [], [], []
  for relative_name, _, _ in fingerprint:
    try:
      text = (Path(root) / relative_name).read_text(encoding='utf-8', errors='replace')
    except OSError:  # unreadable files are left out rather than failing every search
      continue
    for passage in _split_passages(text):
      passages.append(passage)
      sources.append(relative_name)
      counts.append(Counter(_words(passage)))
  ids_by_word, counts_by_word = {}, {}
  for passage_id, passage_counts in enumerate(counts):
    for word, count in passage_counts.items():
      ids_by_word.setdefault(word, []).append(passage_id)
      counts_by_word.setdefault(word, []).append(count)
  postings = {word: (np.array(ids_by_word[word], np.int64),
                     np.array(counts_by_word[word], np.float64)) for word in ids_by_word}
  lengths = np.array([sum(c.values()) for c in counts], np.float64)
  return _SearchIndex(passages, sources, lengths, postings)


def _split_passages(text: str) -> list[str]:
  """Groups consecutive paragraphs into passages of at most PASSAGE_PARAGRAPHS paragraphs and
  about PASSAGE_WORDS words; a longer paragraph is cut into PASSAGE_WORDS-word pieces."""
  pieces = []  # paragraphs, long ones already cut
  for paragraph in _BLANK_LINE.split(text):
    words = paragraph.split()
    for start in range(0, len(words), PASSAGE_WORDS):
      pieces.append(words[start:start + PASSAGE_WORDS])
  passages, current = [], []  # current: the pieces of the passage being filled
  for words in pieces:
    too_long = sum(map(len, current)) + len(words) > PASSAGE_WORDS
    if current and (too_long or len(current) == PASSAGE_PARAGRAPHS):
      passages.append(current)
      current = []
    current.append(words)
  if current:
    passages.append(current)
  # Whitespace collapsed: a tool result is read by the model, where line breaks only cost tokens.
  return [' '.join(' '.join(words) for words in passage) for passage in passages]


def _bm25_scores(index: _SearchIndex, query_words: set[str]) -> np.ndarray:
  num_passages = len(index.passages)
  length_norm = 1 - BM25_B + BM25_B * index.lengths / max(index.lengths.mean(), 1.0)
  scores = np.zeros(num_passages)
  for word in query_words:
    if word not in index.postings:
      continue
    ids, counts = index.postings[word]
    # The +1 inside the log keeps idf positive even for a word found in most passages.
    idf = math.log(1 + (num_passages - len(ids) + 0.5) / (len(ids) + 0.5))
    scores[ids] += idf * counts * (BM25_K1 + 1) / (counts + BM25_K1 * length_norm[ids])
  return scores


def _trim(text: str, max_chars: int, focus_word: str) -> str:
  """text cut to at most max_chars on word boundaries, marked with '...', keeping focus_word
  in view: the window starts a little before its first occurrence when that lies past the cut."""
  if len(text) <= max_chars:
    return text
  match = re.search(rf'(?<![^\W_]){re.escape(focus_word)}(?![^\W_])', text, re.IGNORECASE)
  if match is None or match.end() <= max_chars - 3:
    return _cut_at_word(text, max_chars - 3) + '...'
  space = text.find(' ', max(match.start() - max_chars // 4, 0), match.start())
  rest = text[space + 1 if space >= 0 else match.start():]
  if len(rest) <= max_chars - 3:
    return '...' + rest
  return '...' + _cut_at_word(rest, max_chars - 6) + '...'


def _cut_at_word(text: str, max_chars: int) -> str:
  if len(text) <= max_chars:
    return text
  cut = text[:max_chars + 1]  # +1: a space right after the limit still ends a whole word
  return cut[:cut.rindex(' ')] if ' ' in cut else cut[:max_chars]


# ---------------------------------------------------------------------------------------------
# Python
# ---------------------------------------------------------------------------------------------

def python(code: str) -> str:
  """Runs code in a fresh sandboxed interpreter (llm/sandbox: no files, network, processes or
  signals; sandbox.Limits bounds CPU, memory, wall time and output). Returns what it printed
  (stdout and stderr, a last expression's repr, an exception's last lines) and, when a limit
  stopped it, an 'error: ...' line saying which."""
  return sandbox.run(code).text(MAX_TOOL_OUTPUT_CHARS)


# ---------------------------------------------------------------------------------------------
# Registry, dispatch and sanitizing
# ---------------------------------------------------------------------------------------------

MAX_TOOL_OUTPUT_CHARS = 2000
TRUNCATED = ' ...[truncated]'  # ends a cut tool result (here by characters, llm.chat_template by tokens)
_TOOL_NAME = re.compile(r'[A-Za-z_]\w*')

# A '<' that starts a special-token string (llm.tokenizer's SPECIAL_TOKENS, all '<|...|>', and
# SentencePiece's <s>, </s>, <pad>, <unk>), and any '<|' at all, so tokens added later are covered too.
_TOKEN_START = re.compile(r'<(?=\||/?s>|pad>|unk>)')
_ZERO_WIDTH_SPACE = '\u200b'


def make_registry(search_folder: str | Path | None = None, python_tool: bool = False) -> ToolRegistry:
  """The tools available to the model: the calculator, search when a folder is given, and python
  when python_tool (off by default: it runs model-written code, though sandboxed)."""
  registry: ToolRegistry = {'calculator': calculator}
  if search_folder is not None:
    if not Path(search_folder).is_dir():  # else only the model would find out, at its first search
      raise ValueError(f'--search_folder={search_folder} is not a folder; give a folder of .txt/.md files')
    registry['search'] = functools.partial(search, folder=search_folder)
  if python_tool:
    registry['python'] = python
  return registry


def run_tool(registry: ToolRegistry, call_text: str) -> str:
  """Runs the call the model wrote between the tool-call tokens, 'name: arguments'.

  Never raises: an unknown tool, a malformed call or an exception inside the tool becomes an
  'error: ...' string. The result is passed through sanitize_tool_output (idempotent, so the
  engine may sanitize again).
  """
  name, colon, arguments = call_text.partition(':')
  name = name.strip()
  if not colon or not _TOOL_NAME.fullmatch(name):
    result = 'error: malformed tool call; write it as "name: arguments", e.g. "calculator: 48/2"'
  elif name not in registry:
    result = f'error: unknown tool {name[:40]!r}; available: {", ".join(sorted(registry))}'
  else:
    try:
      result = str(registry[name](_dedented(arguments)))
    except Exception as e:  # a tool's bug must not end generation; the model sees the error
      result = f'error: {name} failed: {type(e).__name__}: {e}'
  return sanitize_tool_output(result)


def _dedented(arguments: str) -> str:
  """The arguments without blank lines before them, common indentation or surrounding space: code
  that starts on the line after 'python:' may be an indented block."""
  return textwrap.dedent(re.sub(r'\A(?:[ \t]*\n)+', '', arguments)).strip()


def sanitize_tool_output(text: str, max_chars: int = MAX_TOOL_OUTPUT_CHARS) -> str:
  """Makes untrusted tool output safe to feed back to the model.

  Our tokenizer encodes special-token strings in text as ordinary characters (they are control
  symbols), so this is defence in depth: a zero-width space goes after the '<' of every
  special-token string (and of every '<|'), so none survives while the text still reads the
  same. Escaping, unlike deleting, cannot join the pieces around a removed string into a new
  token ('<|us<|user|>er|>'), and one pass suffices: an insertion only changes what follows a
  matched '<'. The result is at most max_chars long, cut with a ' ...[truncated]' marker before its
  last line.
  """
  text = _TOKEN_START.sub('<' + _ZERO_WIDTH_SPACE, str(text))
  if len(text) > max_chars:
    # Cutting a clean string cannot create a token, and the marker starts with a space.
    text = cut_keeping_last_line(*split_last_line(text), max_chars, TRUNCATED)
  return text


def split_last_line(text: str) -> tuple[str, str]:
  """(text before its last line, '\n' + the last line); (text, '') for a single line."""
  head, newline, last = text.rpartition('\n')
  return (head, newline + last) if newline else (text, '')


def cut_keeping_last_line(head, last_line, room: int, marker):
  """head + last_line (strings, or token lists) cut to `room` with `marker` where head gives way:
  the last line stays whole when it takes at most half the room, since that is where a program's
  error, or the limit that stopped it (llm/sandbox), is written."""
  if len(last_line) > room // 2:
    head, last_line = head + last_line, last_line[:0]
  return head[:max(room - len(marker) - len(last_line), 0)] + marker + last_line
