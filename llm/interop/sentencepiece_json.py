"""A SentencePiece BPE model (a tokenizer.model file) as a `tokenizers` tokenizer.json object that
gives the same ids on every text: the importer reads a Llama's or Mistral's tokenizer.model with
it, and the exporter writes our runs' tokenizer (llm/tokenizer.py) with it for transformers.

SentencePiece's BPE (bpe_model.cc) starts from the characters of the whole normalized text (no
split into words) and repeatedly merges the adjacent pair whose concatenation is a piece, the
highest-scored first, the leftmost among equals. A `tokenizers` BPE does the same when every
split of every piece into two pieces is a merge ranked by that piece's score (BPE pieces' scores
are distinct: the order they were learned in), as below. One tie could still part them: two
different pairs making the same piece at overlapping places (x+y = y+z), which SentencePiece
breaks by position and tokenizers by the pairs' ranks; none showed in the tests' 2,011 texts nor
in 2,000 windows of tiny Shakespeare with 3,000-piece models. Pieces
hold a space where SentencePiece writes U+2581, so a literal U+2581 in text is not a piece:

- sentencepiece as is (ours=False): U+2581 in text reads as a space, as in SentencePiece, and
  add_dummy_prefix prepends one;
- our Tokenizer (ours=True) also cuts text after each blank line and spells a literal U+2581 in
  its UTF-8 bytes (llm.tokenizer.Tokenizer.encode); the pre-tokenizer and the space pieces do it.

Control pieces (bos, eos, the chat tokens) become special added tokens: `transformers` finds
them in text, HFTokenizer never does (encode_special_tokens). What a tokenizers pipeline would not
match exactly is refused by field: unigram models, normalization other than identity (nmt_nfkc
differs on '\\r\\n'), extra-whitespace removal, user-defined or unused pieces, and a dummy prefix
in a model our Tokenizer runs (it would prepend one to each paragraph).
"""
import json

import tokenizers
from sentencepiece import sentencepiece_model_pb2 as model_pb2  # protobuf: a dependency of orbax and grain
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from llm.interop.errors import refuse

_SPACE_MARK = '\u2581'
# Python's re.split(r'(?<=\n\n)', text) (llm.tokenizer._paragraphs) as tokenizers matches: a cut
# after the first two newlines of a run and after each one past them.
_PARAGRAPH_END = r'(?<=\n\n)\n|\n\n'
_PIECE = model_pb2.ModelProto.SentencePiece
_FALLBACK = ("; save a tokenizer.json beside it with transformers' "
             'AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)')


def _read_model(data: bytes, where: str):
  """The ModelProto of a tokenizer.model's bytes; where names the file in errors."""
  proto = model_pb2.ModelProto()
  try:
    proto.ParseFromString(data)
  except Exception as e:  # protobuf's DecodeError has no stable import path
    raise ValueError(f'{where} is not a SentencePiece model: {" ".join(str(e).split())}') from None
  if not proto.pieces:
    raise ValueError(f'{where} is not a SentencePiece model: it holds no pieces')
  return proto


def _check_exact(proto, where: str, ours: bool):
  spec, norm = proto.trainer_spec, proto.normalizer_spec
  if ours and norm.add_dummy_prefix:  # our Tokenizer would give each paragraph its own
    refuse(f'{where} add_dummy_prefix', True, 'llm.tokenizer trains without one')
  if spec.model_type != model_pb2.TrainerSpec.BPE:
    refuse(f'{where} model_type', model_pb2.TrainerSpec.ModelType.Name(spec.model_type), 'only BPE' + _FALLBACK)
  if norm.precompiled_charsmap:
    refuse(f'{where} normalization', norm.name, 'only identity converts exactly' + _FALLBACK)
  for part, field, exact in ((norm, 'remove_extra_whitespaces', False), (norm, 'escape_whitespaces', True),
                             (spec, 'treat_whitespace_as_suffix', False)):
    if getattr(part, field) != exact:
      refuse(f'{where} {field}', getattr(part, field), f'only {exact} converts exactly' + _FALLBACK)
  odd = [p.piece for p in proto.pieces if p.type in (_PIECE.USER_DEFINED, _PIECE.UNUSED)]
  if odd:
    refuse(f'{where} piece', odd[0], f'user-defined and unused pieces ({len(odd)}) do not convert' + _FALLBACK)


def to_tokenizer_json(data: bytes, where: str, ours: bool) -> dict:
  """tokenizer.json's object for the SentencePiece model serialized in data (see the module doc)."""
  proto = _read_model(data, where)
  _check_exact(proto, where, ours)
  pieces = [p.piece.replace(_SPACE_MARK, ' ') for p in proto.pieces]
  vocab = {piece: i for i, piece in enumerate(pieces)}
  score = {pieces[i]: p.score for i, p in enumerate(proto.pieces) if p.type == _PIECE.NORMAL}
  merges = sorted(((piece[:k], piece[k:]) for piece in score for k in range(1, len(piece))
                   if piece[:k] in score and piece[k:] in score),
                  key=lambda pair: (-score[pair[0] + pair[1]], vocab[pair[0] + pair[1]]))
  spec, norm = proto.trainer_spec, proto.normalizer_spec
  tok = tokenizers.Tokenizer(models.BPE(vocab, merges, unk_token=pieces[spec.unk_id] if spec.unk_id >= 0 else None,
                                        byte_fallback=spec.byte_fallback, fuse_unk=True))
  steps = ([] if ours else [normalizers.Replace(_SPACE_MARK, ' ')]) + (
      [normalizers.Prepend(' ')] if norm.add_dummy_prefix else [])
  if steps:
    tok.normalizer = normalizers.Sequence(steps)
  if ours:
    tok.pre_tokenizer = pre_tokenizers.Split(tokenizers.Regex(_PARAGRAPH_END), 'merged_with_previous')
  # Strip: SentencePiece drops the dummy prefix's space when decoding; after Fuse, one string.
  tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()] + (
      [decoders.Strip(' ', 1, 0)] if norm.add_dummy_prefix else []))
  tok.add_special_tokens([tokenizers.AddedToken(pieces[i], special=True, normalized=False)
                          for i, p in enumerate(proto.pieces) if p.type in (_PIECE.CONTROL, _PIECE.UNKNOWN)])
  if spec.bos_id >= 0:  # transformers' tokenizer(text) starts with bos, as our prompts and Llama's do
    bos = pieces[spec.bos_id]
    tok.post_processor = processors.TemplateProcessing(single=f'{bos} $A', pair=f'{bos} $A {bos} $B:1',
                                                       special_tokens=[(bos, spec.bos_id)])
  return json.loads(tok.to_str())
