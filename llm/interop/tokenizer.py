"""A Hugging Face model's own tokenizer (its tokenizer.json, read by the `tokenizers` package, or a
SentencePiece tokenizer.model alone, converted exactly by sentencepiece_json.py) behind the
interface of llm.tokenizer.Tokenizer, so every stage runs an imported model as is. The exporter
writes our own runs' SentencePiece tokenizer through it too (from_ours).

A run keeps it as one file, `tokenizer.hf.json`: the tokenizer.json itself plus the ids that
config.json and tokenizer_config.json name (bos, eos, pad), every id its generation stops at
(config.json's and generation_config.json's eos_token_id), its own chat template, and the model's
vocabulary rows.
The chat special tokens of llm.tokenizer.SPECIAL_TOKENS are added as special tokens after the
model's own (`with_chat_tokens`); the importer grows the embedding table to match.

As with the SentencePiece tokenizer, text never produces a special token: '<|user|>' or
'<|endoftext|>' inside a document is encoded as its characters (encode_special_tokens).
"""
import hashlib
import json
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import tokenizers
from absl import logging

from llm import tokenizer as tokenizer_lib
from llm.interop import sentencepiece_json

FILE_NAME = 'tokenizer.hf.json'
_BYTE_PIECE = re.compile(r'<0x[0-9A-Fa-f]{2}>')


def _token(tok: tokenizers.Tokenizer, i) -> str | None:
  """The token whose id is i; None where i is not one (not an int, negative, past the end)."""
  if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < tok.get_vocab_size(with_added_tokens=True):
    return None
  return tok.id_to_token(i)


def _json_object(path: Path) -> dict:
  """The object a model directory's optional JSON file holds ({} where there is no file)."""
  try:
    value = json.loads(path.read_text(encoding='utf-8')) if path.is_file() else {}
  except ValueError as e:
    raise ValueError(f'{path} is not valid JSON: {e}') from None
  if not isinstance(value, dict):
    raise ValueError(f'{path} holds a {type(value).__name__}, not an object')
  return value


def _ids(value) -> list:
  """A config's token id field, one id or a list of them, as a list."""
  return value if isinstance(value, list) else [] if value is None else [value]


def _chat_template(hf_dir: Path, tok_config: dict):
  """The model's own chat template: chat_template.jinja (transformers >= 4.43 saves it there), else
  tokenizer_config.json's chat_template (a string, or a list of named ones); None where it has none."""
  path = hf_dir / 'chat_template.jinja'
  return path.read_text(encoding='utf-8') if path.is_file() else tok_config.get('chat_template')


class HFTokenizer:
  """Build one with HFTokenizer.load (a run's file), from_hf_dir (a Hugging Face model dir) or
  from_ours (our SentencePiece tokenizer, for export)."""

  def __init__(self, spec: dict, path: Path | None = None):
    # {'tokenizer': tokenizer.json's object, 'bos_id', 'eos_id', 'pad_id', 'vocab_size', and in runs
    # imported since they are kept, 'stop_ids' and 'chat_template' (the model's own, or None)}
    self.spec = spec
    self.path = path
    self._tok = tokenizers.Tokenizer.from_str(json.dumps(spec['tokenizer']))
    self._tok.encode_special_tokens = True  # special tokens only from code, never from text
    self.bos_id, self.eos_id, self.pad_id = spec['bos_id'], spec['eos_id'], spec['pad_id']
    self.unk_id = None  # byte-level or byte-fallback: nothing is unknown

  @classmethod
  def load(cls, path: Path | str) -> 'HFTokenizer':
    path = Path(path)
    if not path.is_file():
      raise FileNotFoundError(f'tokenizer {path} does not exist')
    try:
      return cls(json.loads(path.read_text(encoding='utf-8')), path)
    except Exception as e:  # json's ValueError, a missing key, tokenizers' bare Exception on a bad file
      raise ValueError(f'{path} is not a tokenizer.hf.json as python -m llm.hf import writes ({type(e).__name__}: '
                       f'{" ".join(str(e).split())})') from None

  @classmethod
  def from_ours(cls, tok: tokenizer_lib.Tokenizer) -> 'HFTokenizer':
    """Our SentencePiece tokenizer as one that encodes every text to the same ids."""
    spec = sentencepiece_json.to_tokenizer_json(Path(tok.path).read_bytes(), str(tok.path), ours=True)
    return cls({'tokenizer': spec, 'bos_id': tok.bos_id, 'eos_id': tok.eos_id, 'pad_id': tok.pad_id,
                'vocab_size': tok.vocab_size})

  @staticmethod
  def _read_hf_dir(hf_dir: Path) -> dict:
    """tokenizer.json's object, else that of the SentencePiece tokenizer.model converted."""
    path, sp_path = hf_dir / 'tokenizer.json', hf_dir / 'tokenizer.model'
    if path.is_file():
      try:
        spec = json.loads(path.read_text(encoding='utf-8'))
        tokenizers.Tokenizer.from_str(json.dumps(spec))
      except Exception as e:  # tokenizers raises a bare Exception on a bad file
        raise ValueError(f'{path} is not a tokenizers file: {" ".join(str(e).split())}') from None
      return spec
    if sp_path.is_file():
      return sentencepiece_json.to_tokenizer_json(sp_path.read_bytes(), str(sp_path), ours=False)
    raise FileNotFoundError(f'{path} is missing, and so is a SentencePiece tokenizer.model: write tokenizer.json with '
                            f"transformers.AutoTokenizer.from_pretrained('{hf_dir}').save_pretrained('{hf_dir}')")

  @classmethod
  def from_hf_dir(cls, hf_dir: Path, hf_config: dict) -> 'HFTokenizer':
    """The tokenizer of a Hugging Face model directory, with the special ids config.json names."""
    hf_dir = Path(hf_dir)
    spec = {'tokenizer': cls._read_hf_dir(hf_dir)}
    tok = tokenizers.Tokenizer.from_str(json.dumps(spec['tokenizer']))
    tok_config = _json_object(hf_dir / 'tokenizer_config.json')
    generation = _json_object(hf_dir / 'generation_config.json')

    def token_id(name):
      """config.json's NAME_token_id, else tokenizer_config.json's NAME_token looked up."""
      value = hf_config.get(f'{name}_token_id')
      if isinstance(value, list):  # several stop ids (Llama 3): the first is the end of text
        value = value[0] if value else None
      if value is None:
        token = tok_config.get(f'{name}_token')
        token = token.get('content') if isinstance(token, dict) else token
        value = tok.token_to_id(token) if token else None
      return value

    eos = token_id('eos')
    if eos is None:
      raise ValueError(f'{hf_dir}: neither config.json eos_token_id nor tokenizer_config.json eos_token '
                       'names the end-of-text token; add eos_token_id to config.json')
    bos = token_id('bos')
    pad = token_id('pad')
    if isinstance(pad, int) and pad < 0:  # early Llamas: pad_token_id -1, meaning none
      logging.warning('%s: pad_token_id=%d names no token; padding with eos (%d) instead', hf_dir / 'config.json',
                      pad, eos)
      pad = None
    # Every id generation stops at (Llama 3: end of text, end of turn, end of message), eos first.
    stop_ids = list(dict.fromkeys([eos, *_ids(hf_config.get('eos_token_id')), *_ids(generation.get('eos_token_id'))]))
    named = [('config.json', 'bos_token_id', bos), ('config.json', 'pad_token_id', pad)]  # eos: among the stop ids
    named += [(file, 'eos_token_id', i) for file, config in (('config.json', hf_config),
                                                             ('generation_config.json', generation))
              for i in _ids(config.get('eos_token_id'))]
    for file, field, value in named:
      if value is not None and _token(tok, value) is None:
        raise ValueError(f'{hf_dir / file}: {field}={value!r} is not a token of its tokenizer '
                         f'(ids 0 to {tok.get_vocab_size(with_added_tokens=True) - 1}): fix {file}')
    spec.update(bos_id=eos if bos is None else bos, eos_id=eos, pad_id=eos if pad is None else pad,
                vocab_size=tok.get_vocab_size(with_added_tokens=True), stop_ids=stop_ids,
                chat_template=_chat_template(hf_dir, tok_config))
    return cls(spec)

  @property
  def stop_ids(self) -> list[int]:
    """The ids the model's own generation stops at, eos first."""
    return self.spec.get('stop_ids', [self.eos_id])

  @property
  def chat_template(self):
    """The model's own chat template (a Jinja string, or a list of named ones); None where it has none."""
    return self.spec.get('chat_template')

  def missing_chat_tokens(self) -> list[str]:
    return [t for t in tokenizer_lib.SPECIAL_TOKENS if self._tok.token_to_id(t) is None]

  def with_chat_tokens(self) -> 'HFTokenizer':
    """This tokenizer with the project's chat special tokens it lacks added after its own."""
    tok = tokenizers.Tokenizer.from_str(self._tok.to_str())
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                            for t in tokenizer_lib.SPECIAL_TOKENS])
    spec = dict(self.spec, tokenizer=json.loads(tok.to_str()))
    spec['vocab_size'] = max(spec['vocab_size'], tok.get_vocab_size(with_added_tokens=True))
    return HFTokenizer(spec)

  def with_vocab_size(self, vocab_size: int) -> 'HFTokenizer':
    """Rows of the model's embedding table past the tokenizer's last token (padding) count too."""
    return HFTokenizer(dict(self.spec, vocab_size=max(vocab_size, self.spec['vocab_size'])))

  def save(self, path: Path | str):
    self.path = Path(path)
    self.path.write_text(json.dumps(self.spec, ensure_ascii=False), encoding='utf-8')

  @property
  def vocab_size(self) -> int:
    """Rows of the model's embedding table: the tokenizer's tokens, and any padding rows."""
    return self.spec['vocab_size']

  @property
  def fingerprint(self) -> str:
    return hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:16]

  def has_special(self, name: str) -> bool:
    """Whether special_id(name) has an id: not the chat tokens of a model imported without them."""
    return name in tokenizer_lib.SPECIAL_TOKENS and self._tok.token_to_id(name) is not None

  def special_id(self, name: str) -> int:
    if name not in tokenizer_lib.SPECIAL_TOKENS:
      raise ValueError(f'{name!r} is not a special token; use one of {tokenizer_lib.SPECIAL_TOKENS}')
    i = self._tok.token_to_id(name)
    if i is None:
      raise ValueError(f'this tokenizer has no {name} token: import the model again with --chat_tokens=true')
    return i

  def encode(self, text: str) -> list[int]:
    """Token ids of text, without bos/eos (the tokenizer's post-processor is not applied)."""
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def encode_bytes(self, data: bytes) -> list[int]:
    return self.encode(data.decode('utf-8', errors='replace'))

  def decode(self, ids: Iterable[int]) -> str:
    """Text of ids; special tokens and padding rows contribute nothing."""
    size = self._tok.get_vocab_size(with_added_tokens=True)
    return self._tok.decode([int(i) for i in ids if int(i) < size], skip_special_tokens=True)

  def id_to_piece(self, i: int) -> str:
    return self._tok.id_to_token(int(i)) or ''

  def to_hf_files(self, chat_template=None) -> dict[str, str]:
    """{file name: text} of a Hugging Face tokenizer: tokenizer.json and tokenizer_config.json, with
    chat_template in it where given."""
    def name(i):
      token = _token(self._tok, i)
      if token is None:  # a run imported before such ids were refused
        raise ValueError(f'{self.path}: special token id {i!r} is not a token of this tokenizer; import the model again')
      return token

    config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'bos_token': name(self.bos_id),
              'eos_token': name(self.eos_id), 'pad_token': name(self.pad_id), 'clean_up_tokenization_spaces': False}
    if chat_template is not None:
      config['chat_template'] = chat_template
    return {'tokenizer.json': json.dumps(self.spec['tokenizer'], ensure_ascii=False),
            'tokenizer_config.json': json.dumps(config, indent=2, ensure_ascii=False)}

  @property
  def byte_level(self) -> bool:
    """Byte-level BPE (GPT-2, Llama 3): each character of a piece stands for one byte."""
    return 'ByteLevel' in json.dumps(self.spec['tokenizer'].get('decoder'))

  def token_bytes(self) -> np.ndarray:
    """int32[vocab_size]: UTF-8 bytes each token decodes to (0 for special tokens and padding rows).

    Byte-level BPE (GPT-2, Llama 3): one character of a piece is one byte. Otherwise
    (SentencePiece-style, Llama 2): '<0xNN>' byte-fallback pieces are one byte, and the
    piece's text, U+2581 read as a space, the rest.
    """
    special = {i for i, t in self._tok.get_added_tokens_decoder().items() if t.special}
    sizes = np.zeros(self.vocab_size, np.int32)
    for i in range(self._tok.get_vocab_size(with_added_tokens=True)):
      piece = self._tok.id_to_token(i)
      if piece is not None and not self.byte_level and _BYTE_PIECE.fullmatch(piece):
        sizes[i] = 1  # a byte-fallback piece, whether in the model's vocabulary or added beside it
      elif i in special or piece is None:
        continue
      elif self.byte_level:
        sizes[i] = len(piece)
      else:
        sizes[i] = len(piece.replace('\u2581', ' ').encode())
    return sizes
