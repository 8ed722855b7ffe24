"""Bits per byte on held-out text: the training corpus's validation split (bpb_val) and each
--corpus, a text file or a folder of *.txt files (bpb_<its name>; a name another number
already takes, such as val, is refused).

As training's validation: documents become one stream of [bos] + tokens, cut into windows of
the model's context; every target token is scored once; the loss of the tokens that decode to
text (special tokens carry no bytes), over ln 2, over their UTF-8 bytes (each document's own,
whatever its tokens stand for: not a dummy prefix's space, and a leading space that a prefix took
for its own; llm.losses.byte_fix). Tokenizers of any vocabulary compare. --limit scores the first N
windows of each corpus.
"""
import math
import re
from pathlib import Path

import numpy as np

from llm import data as data_lib, losses
from llm.data import cache, sources


def documents_bpb(ctx, documents) -> float:
  tok = ctx.tokenizer
  documents = list(documents)
  token_bytes_V = tok.token_bytes()
  stream, first_fixes = cache.document_stream(documents, tok, token_bytes_V)
  fixes = np.zeros(len(stream), np.int64)  # each document's byte fix on its first token, 0 elsewhere
  for position, fix in first_fixes:
    fixes[position] = fix
  L = ctx.max_len
  starts = range(0, max(len(stream) - 1, 1), L - 1)  # window i predicts stream[i(L-1)+1 : (i+1)(L-1)+1]
  if ctx.limit:
    starts = starts[:ctx.limit]
  rows = [stream[s:s + L] for s in starts]
  loss, n_bytes = 0.0, 0
  for s, row, loss_T in zip(starts, rows, ctx.score(rows)):
    targets = np.asarray(row[1:])
    loss += float(loss_T[token_bytes_V[targets] > 0].sum())
    n_bytes += int(losses.target_bytes(token_bytes_V, targets, fixes[s + 1:s + len(row)]).sum())
  if not n_bytes:
    raise ValueError('bits per byte of text that holds no bytes; give a corpus with text in it')
  return loss / math.log(2) / n_bytes


def read_corpus(path: Path) -> list[str]:
  """A text file (one document) or a folder (each *.txt below it one document)."""
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f'--corpus={path} does not exist; give a text file or a folder of *.txt files')
  docs = list(sources.read_text_folder(path)) if path.is_dir() else [path.read_text(encoding='utf-8', errors='replace')]
  if not any(d.strip() for d in docs):
    raise ValueError(f'--corpus={path} holds no text (a folder is read for *.txt files)')
  return docs


def corpus_name(path: Path) -> str:
  """tinystories_val_sample/ -> tinystories_val_sample; notes/moby.txt -> moby."""
  path = Path(path)
  return re.sub(r'\W+', '_', path.name if path.is_dir() else path.stem).strip('_').lower()


def corpus_keys(corpora) -> list[str]:
  """The key of each --corpus, bpb_<its name>. One that another --corpus or the split's bpb_val
  already takes is refused: its number would overwrite theirs in the results."""
  taken = {'bpb_val': "the run's validation split"}
  for path in corpora:
    key = f'bpb_{corpus_name(path)}'
    if key in taken:
      raise ValueError(f'--corpus={path} would be reported as {key}, as {taken[key]} is; give it a file or '
                       'folder of another name')
    taken[key] = f'--corpus={path}'
  return list(taken)[1:]


def evaluate(ctx) -> dict:
  keys = corpus_keys(ctx.corpora)
  _, val = data_lib.split_corpus(ctx.data_dir(ctx.config.data.source), ctx.config.data)
  out = {'bpb_val': documents_bpb(ctx, val)}
  for key, path in zip(keys, ctx.corpora):
    out[key] = documents_bpb(ctx, read_corpus(path))
  return out
