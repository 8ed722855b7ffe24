"""SentencePiece BPE tokenizer: training, caching, loading, and the special tokens of every stage.

Any string round-trips (decode(encode(s)) == s): normalization is off, whitespace is kept as is,
and characters outside the vocabulary fall back to their UTF-8 bytes (<0xNN> tokens).
"""
import hashlib
import io
import itertools
import json
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from absl import logging
from google.protobuf.message import DecodeError
import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2  # protobuf: a dependency of orbax and grain

from llm import files

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

# Control symbols, not user-defined ones: SentencePiece never produces them from text, so the
# literal string '<|user|>' inside a document or a tool's output cannot forge a turn boundary.
# Only code that builds token sequences (the chat template) can emit them, via special_id().
# Their ids follow eos in this order (<|system|> is 4), before the byte and learned pieces.
# '<|tool|>' is reserved: the chat template keeps tool calls and results inside the assistant
# turn, so nothing emits it yet; it is there for a turn of the tool role (OpenAI's role 'tool'
# messages, which a server receives), and dropping it would cost more than it saves. Any change
# to this tuple changes every tokenizer's cache key (it is in _TRAINER_OPTIONS), so each is
# retrained on next use and every token cache rebuilt (keyed by the tokenizer's content); the
# pieces after the specials all move, so new runs no longer share token ids with earlier ones
# (a run keeps its own tokenizer.model and finds specials by name, so it still loads after a token
# is dropped; not after one is added, which Tokenizer.load finds missing from the runs before).
SPECIAL_TOKENS = ('<|system|>', '<|user|>', '<|assistant|>', '<|tool|>', '<|end|>',
                  '<|tool_call|>', '<|/tool_call|>', '<|tool_result|>', '<|/tool_result|>')

# SentencePiece writes spaces as U+2581 inside pieces, so a literal U+2581 in the text would come
# back as a space; encode() sends it as its three UTF-8 bytes instead.
_SPACE_MARK = '\u2581'
_SPACE_MARK_BYTES = tuple(f'<0x{b:02X}>' for b in _SPACE_MARK.encode())

_RESERVED_IDS = 4 + len(SPECIAL_TOKENS) + 256  # pad, unk, bos, eos, the specials, the byte pieces
_MAX_SENTENCE_BYTES = 16384  # SentencePiece silently skips longer training sentences
_MAX_SENTENCE_CHARS = _MAX_SENTENCE_BYTES // 4  # a character is at most 4 UTF-8 bytes
_PARAGRAPH_END = re.compile(r'(?<=\n\n)')

# Part of the tokenizer cache key: changing any of these retrains cached tokenizers.
_TRAINER_OPTIONS = dict(
    model_type='bpe',
    byte_fallback=True,
    pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
    unk_surface='',  # byte fallback means unk is never produced; if decoded, it is empty text
    control_symbols=list(SPECIAL_TOKENS),
    character_coverage=0.9995,  # rarer characters are spelled in bytes
    split_digits=True,  # one token per digit, so numbers line up for arithmetic
    allow_whitespace_only_pieces=True,  # runs of spaces (indentation) become single tokens
    normalization_rule_name='identity',
    remove_extra_whitespaces=False,
    add_dummy_prefix=False,  # no invented leading space: token bytes add up to the text's bytes
    max_sentence_length=_MAX_SENTENCE_BYTES,
    hard_vocab_limit=False,  # tiny corpora may not support the requested vocabulary size
    minloglevel=2,
)


class Tokenizer:
  """A loaded SentencePiece model. Build one with Tokenizer.load or train_tokenizer."""

  pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

  def __init__(self, processor: spm.SentencePieceProcessor, path: Path):
    self._sp = processor
    self.path = path
    self._space_mark_ids = [processor.piece_to_id(p) for p in _SPACE_MARK_BYTES]

  @classmethod
  def load(cls, path: Path | str) -> 'Tokenizer':
    path = Path(path)
    if not path.is_file():
      raise FileNotFoundError(f'tokenizer model {path} does not exist; train one by setting '
                              "--config.tokenizer.path='' or point it at a .model file")
    try:
      processor = spm.SentencePieceProcessor(model_file=str(path), num_threads=os.cpu_count())
    except RuntimeError:  # 'could not parse ModelProto'
      raise ValueError(f'tokenizer model {path} is not a SentencePiece model: give a run\'s tokenizer.model (or the '
                       'tokenizer.hf.json of a run imported with python -m llm.hf import)') from None
    _check_layout(processor, path)
    return cls(processor, path)

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def stop_ids(self) -> list[int]:
    """The ids plain text generation stops at (an imported model's tokenizer may have several)."""
    return [self.eos_id]

  @property
  def fingerprint(self) -> str:
    """Short hash of the model's content: token caches built with it are keyed by this."""
    return hashlib.sha256(self._sp.serialized_model_proto()).hexdigest()[:16]

  def has_special(self, name: str) -> bool:
    """Whether special_id(name) has an id: always, for a SPECIAL_TOKENS name (trained in)."""
    return name in SPECIAL_TOKENS

  def special_id(self, name: str) -> int:
    if name not in SPECIAL_TOKENS:
      raise ValueError(f'{name!r} is not a special token; use one of {SPECIAL_TOKENS}')
    return self._sp.piece_to_id(name)

  def encode(self, text: str) -> list[int]:
    """Token ids of text, without bos/eos."""
    if _SPACE_MARK not in text and len(_paragraphs(text)) <= 1:
      return self._sp.encode(text)  # short text: the threaded batch path costs 30x more here
    return self.encode_batch([text])[0]

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """encode() of each text, paragraphs spread over all CPU cores.

    Text is encoded paragraph by paragraph, as the tokenizer was trained: no token spans a
    blank line, and BPE on a whole book at once is about twice as slow.
    """
    paragraphs = [_paragraphs(text) for text in texts]
    encoded = iter(self._encode_paragraphs([p for ps in paragraphs for p in ps]))
    return [list(itertools.chain.from_iterable(itertools.islice(encoded, len(ps))))
            for ps in paragraphs]

  def _encode_paragraphs(self, paragraphs: list[str]) -> list[list[int]]:
    ids = self._sp.encode(paragraphs)
    for i, paragraph in enumerate(paragraphs):
      if _SPACE_MARK in paragraph:
        first, *rest = paragraph.split(_SPACE_MARK)
        ids[i] = self._sp.encode(first)
        for part in rest:
          ids[i] += self._space_mark_ids + self._sp.encode(part)
    return ids

  def encode_bytes(self, data: bytes) -> list[int]:
    """Invalid UTF-8 becomes U+FFFD, which then round-trips like any other character."""
    return self.encode(data.decode('utf-8', errors='replace'))

  def decode(self, ids: Iterable[int]) -> str:
    """Text of ids; pad, unk, bos, eos and the special tokens contribute nothing."""
    return self._sp.decode([int(i) for i in ids])

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  def token_bytes(self) -> np.ndarray:
    """int32[vocab_size]: UTF-8 bytes each token decodes to (0 for pad/unk/bos/eos/specials).

    Bits per byte of a batch = sum(loss where bytes > 0) / (ln 2 * sum(bytes)).
    """
    sizes = np.zeros(self.vocab_size, np.int32)
    for i in range(self.vocab_size):
      if self._sp.is_byte(i):
        sizes[i] = 1
      elif not (self._sp.is_control(i) or self._sp.is_unknown(i) or self._sp.is_unused(i)):
        sizes[i] = len(self._sp.id_to_piece(i).replace(_SPACE_MARK, ' ').encode())
    return sizes


def _check_layout(processor: spm.SentencePieceProcessor, path: Path):
  """Refuses a SentencePiece model not trained by train_tokenizer (a Llama's, one trained with
  SentencePiece's defaults: unk 0, bos 1, eos 2): the ids every stage writes would be wrong, and each
  special token would be <unk>."""
  wrong = [f'{name} id {got}, not {want}' for name, got, want in (
      ('pad', processor.pad_id(), PAD_ID), ('unk', processor.unk_id(), UNK_ID), ('bos', processor.bos_id(), BOS_ID),
      ('eos', processor.eos_id(), EOS_ID)) if got != want]
  missing = [name for name in SPECIAL_TOKENS if not processor.is_control(processor.piece_to_id(name))]
  if missing:
    wrong.append(f'no special token {", ".join(missing)}')
  if wrong:
    raise ValueError(f'tokenizer model {path} was not trained by llm ({"; ".join(wrong)}): use one a run trained '
                     '(its tokenizer.model), or bring a Hugging Face model in with its own tokenizer through '
                     'python -m llm.hf import --hf_dir=DIR --workdir=RUN')


# The tokenizer file a run keeps: a SentencePiece model trained here, or an imported Hugging Face
# model's own tokenizer (llm/interop/tokenizer.py; the `tokenizers` package).
RUN_FILES = ('tokenizer.model', 'tokenizer.hf.json')


def load_any(path: Path | str):
  """A Tokenizer, or an imported model's HFTokenizer (same interface) for a .hf.json file."""
  if str(path).endswith('.hf.json'):
    from llm.interop.tokenizer import HFTokenizer  # pylint: disable=import-outside-toplevel
    return HFTokenizer.load(path)
  return Tokenizer.load(path)


def run_file(workdir: Path | str) -> Path:
  """The tokenizer file a run directory holds (tokenizer.model when it holds none yet)."""
  paths = [Path(workdir) / name for name in RUN_FILES]
  return next((p for p in paths if p.exists()), paths[0])


def run_file_name(path: Path | str) -> str:
  """The name a run keeps the tokenizer file `path` under."""
  return RUN_FILES[1] if str(path).endswith('.hf.json') else RUN_FILES[0]


def _paragraphs(text: str) -> list[str]:
  """text cut after each blank line; the separators stay, so pieces can learn '\\n\\n'."""
  return [p for p in _PARAGRAPH_END.split(text) if p]


def _training_sentences(texts: Iterable[str], max_chars: int) -> Iterator[str]:
  """Paragraphs of texts, capped in size, until max_chars characters are out."""
  fed = 0
  for text in texts:
    for paragraph in _paragraphs(text):
      for start in range(0, len(paragraph), _MAX_SENTENCE_CHARS):
        sentence = paragraph[start:start + _MAX_SENTENCE_CHARS]
        yield sentence
        fed += len(sentence)
        if fed >= max_chars:
          return


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_path: Path,
                    max_chars: int) -> Tokenizer:
  """Trains BPE on the first max_chars characters of texts and writes out_path (.model).

  The vocabulary can come out smaller than vocab_size on a tiny corpus: a warning says so, and
  .vocab_size tells.
  """
  _check_settings(vocab_size, max_chars)
  sentences = _training_sentences(texts, max_chars)
  first = next(sentences, None)
  if first is None:  # SentencePiece would stop on an internal check, '!sentences_.empty()'
    raise ValueError('no text to train the tokenizer on: the training documents are empty; check '
                     'config.data.source, or set config.tokenizer.path to an existing .model')
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(sentence_iterator=itertools.chain([first], sentences),
                                   model_writer=model, vocab_size=vocab_size,
                                   num_threads=os.cpu_count(), **_TRAINER_OPTIONS)
  except RuntimeError as e:
    if 'Vocabulary size is smaller than required_chars' not in str(e):
      raise
    needed = str(e).split('required_chars.')[-1].split('.')[0].strip()  # '256 vs 329'
    raise ValueError(f'config.tokenizer.vocab_size={vocab_size} is below what this corpus needs for its characters '
                     f'and the special tokens ({needed}): raise config.tokenizer.vocab_size') from None
  files.write_atomically(out_path, without_thread_count(model.getvalue()))
  tokenizer = Tokenizer.load(out_path)
  if tokenizer.vocab_size < vocab_size:
    logging.warning('tokenizer: %d tokens, fewer than config.tokenizer.vocab_size=%d: its training text (at most '
                    'config.tokenizer.train_chars=%d characters) holds no more merges; give it more text, or ask for '
                    'fewer tokens', tokenizer.vocab_size, vocab_size, max_chars)
  return tokenizer


def _check_settings(vocab_size: int, max_chars: int):
  if vocab_size <= _RESERVED_IDS:
    raise ValueError(f'config.tokenizer.vocab_size={vocab_size} leaves no room for learned pieces: pad, unk, bos, eos, '
                     f'the {len(SPECIAL_TOKENS)} special tokens and the 256 bytes take {_RESERVED_IDS} ids; raise it '
                     '(e.g. 4096)')
  if max_chars < 1:  # 0 would not mean "all", as elsewhere: the first paragraph would be all it learns from
    raise ValueError(f'config.tokenizer.train_chars={max_chars} must be at least 1: the characters of training text '
                     'the tokenizer learns from (e.g. 20000000)')


def without_thread_count(model: bytes) -> bytes:
  """A SentencePiece model's bytes without the thread count it was trained with.

  SentencePiece keeps num_threads in the model's trainer_spec, so the same training on a host with
  another core count (training uses them all) would write another file: a resumed run would take
  it for another tokenizer, and the token caches keyed by its content would be built again.
  """
  proto = model_pb2.ModelProto.FromString(model)
  proto.trainer_spec.ClearField('num_threads')
  return proto.SerializeToString()


def same_file(a: Path | str, b: Path | str) -> bool:
  """Whether two run files (RUN_FILES, of one kind) hold the same tokenizer: the same bytes, or
  SentencePiece models that differ only in the thread count they were trained with (a model written
  before train_tokenizer dropped it records its host's core count)."""
  data_a, data_b = Path(a).read_bytes(), Path(b).read_bytes()
  if data_a == data_b or run_file_name(a) != RUN_FILES[0]:
    return data_a == data_b
  try:
    return without_thread_count(data_a) == without_thread_count(data_b)
  except DecodeError:  # a damaged file: another tokenizer, for all the run can tell
    return False


def get_or_train_tokenizer(cfg, train_docs_fn: Callable[[], Iterable[str]], cache_dir: Path,
                           fingerprint: str) -> Tokenizer:
  """The tokenizer named by cfg.path, else the one trained on this corpus (trained on first use).

  cfg: config.tokenizer (vocab_size, train_chars, path). fingerprint identifies the training
  documents; train_docs_fn is only called when no cached tokenizer matches.
  """
  if cfg.path:
    return load_any(cfg.path)
  _check_settings(cfg.vocab_size, cfg.train_chars)  # before the cache, which may hold one trained with them
  settings = dict(corpus=fingerprint, vocab_size=cfg.vocab_size, train_chars=cfg.train_chars,
                  trainer=_TRAINER_OPTIONS)
  key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
  path = Path(cache_dir) / 'tokenizers' / f'{key}.model'
  if path.is_file():
    return Tokenizer.load(path)
  return train_tokenizer(train_docs_fn(), cfg.vocab_size, path, cfg.train_chars)
