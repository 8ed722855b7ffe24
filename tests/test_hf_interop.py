"""Hugging Face interop (llm/interop, python -m llm.hf): tiny random GPT-2, Llama and Qwen3 models built
with transformers (a test-only dependency, CPU torch; these tests skip without it) import with
logits equal to transformers' own, our runs export to directories transformers loads with equal
logits and greedy tokens, import -> export -> import is exact, the two-file export decodes like
the engine, and bad checkpoints end in one line."""
import io
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import tokenizers

from conftest import ROOT, xla_flags
from llm import chat_template, inference, tokenizer as tokenizer_lib
from llm.interop import exporter, importer, params as params_lib, two_files
from llm.interop.weights import Weights
from test_inference import _opt_bytes_and_save, synthetic_tok  # noqa: F401  (a fixture)
from test_model import init, small_config

_TEXT = ('The cat sat on the mat. A dog ran to the door, and then it ran back! '
         'Numbers: 12 345 6789. Accents: café naïve, emoji 🙂, 東京. ')
# What a tokenizer conversion can get wrong: digits, runs of spaces and tabs, blank lines (our
# tokenizer cuts text after each), leading and trailing space, unicode, a literal U+2581 (the
# SentencePiece space mark), special-token look-alikes.
_VARIED = ['', ' ', 'Numbers: 12 345 6789, 3.14159 and -42.', 'a  b   c    d\t\te \t x', '  leading and trailing  ',
           'line one\nline two\n\nparagraph\n\n\n\nfar  \n \n\n x\n', 'café naïve Ångström ﬁ ①, 東京 🙂🙂',
           'the \u2581 mark \u2581\u2581x\u2581', '\r\n\r\n', 'forged <|user|> turn <s> </s> <unk> <0x41>', _TEXT]
_ALPHABET = [*'abcTh .,!?0123456789', '  ', '   ', '\n', '\n\n', '\t', '\r', 'é', '東', '🙂', '\u2581', '\xa0',
             'the ', ' the', '<s>', '<|user|>']


def _texts(n: int = 2000, seed: int = 0) -> list[str]:
  """_VARIED and n random strings of _ALPHABET's pieces."""
  rng = random.Random(seed)
  return _VARIED + [''.join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def _training_text(seed: int) -> list[str]:
  """Sentences for a tokenizer that learns pieces for space runs, blank lines and the rest."""
  return ['\n\n'.join(_texts(40, seed * 1000 + i)) for i in range(100)]


def _torch_transformers():
  return pytest.importorskip('torch'), pytest.importorskip('transformers')


def _byte_level_tokenizer(add_prefix_space: bool = False) -> 'tokenizers.Tokenizer':
  """GPT-2's kind: byte-level BPE with <|endoftext|>, trained on a sentence."""
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator([_TEXT] * 20, trainers.BpeTrainer(
      vocab_size=320, special_tokens=['<|endoftext|>'], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return tok


def _sentencepiece_style_tokenizer() -> 'tokenizers.Tokenizer':
  """Llama 2's kind: BPE over U+2581-marked words with byte fallback, <unk> <s> </s> first."""
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE(unk_token='<unk>', byte_fallback=True))
  tok.pre_tokenizer = pre_tokenizers.Metaspace()
  tok.decoder = decoders.Sequence([decoders.Replace('\u2581', ' '), decoders.ByteFallback(), decoders.Fuse()])
  tok.train_from_iterator([_TEXT] * 20, trainers.BpeTrainer(
      vocab_size=200, special_tokens=['<unk>', '<s>', '</s>'] + [f'<0x{b:02X}>' for b in range(256)]))
  # As in Llama's tokenizer.json, the byte pieces are ordinary vocabulary, not added tokens.
  spec = json.loads(tok.to_str())
  spec['added_tokens'] = spec['added_tokens'][:3]
  return tokenizers.Tokenizer.from_str(json.dumps(spec))


def _llama_sentencepiece(path: Path, **changes):
  """A Llama tokenizer.model in miniature: SentencePiece BPE, byte fallback, a dummy prefix, digits
  split, <unk> <s> </s> first; trained here. Returns sentencepiece's processor for it."""
  import sentencepiece as spm
  model = io.BytesIO()
  options = dict(model_type='bpe', byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
                 normalization_rule_name='identity', remove_extra_whitespaces=False, unk_id=0, bos_id=1, eos_id=2,
                 pad_id=-1, minloglevel=2)
  spm.SentencePieceTrainer.train(sentence_iterator=iter(_training_text(seed=1)), model_writer=model, vocab_size=400,
                                 **(options | changes))
  path.write_bytes(model.getvalue())
  return spm.SentencePieceProcessor(model_file=str(path))


def _perturbed(model, torch):
  """Every parameter moved off its init (zero biases, unit norm scales would hide a mapping error)."""
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.2 * torch.randn(p.shape, generator=gen))
  return model.eval()


def _save_hf(model, tok, out: Path, tok_config: dict) -> Path:
  model.save_pretrained(out)
  tok.save(str(out / 'tokenizer.json'))
  (out / 'tokenizer_config.json').write_text(json.dumps(tok_config))
  return out


@pytest.fixture(scope='module')
def gpt2_dir(tmp_path_factory):
  torch, transformers = _torch_transformers()
  tok = _byte_level_tokenizer()
  eot = tok.token_to_id('<|endoftext|>')
  cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=64, vocab_size=tok.get_vocab_size(),
                                bos_token_id=eot, eos_token_id=eot, layer_norm_epsilon=1e-5)
  torch.manual_seed(0)
  model = _perturbed(transformers.GPT2LMHeadModel(cfg), torch)
  return _save_hf(model, tok, tmp_path_factory.mktemp('gpt2'), {})


@pytest.fixture(scope='module')
def llama_dir(tmp_path_factory):
  torch, transformers = _torch_transformers()
  tok = _sentencepiece_style_tokenizer()
  cfg = transformers.LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                                 intermediate_size=48, vocab_size=tok.get_vocab_size() + 5, max_position_embeddings=64,
                                 rms_norm_eps=1e-5, rope_parameters={'rope_type': 'default', 'rope_theta': 500.0},
                                 bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
  torch.manual_seed(0)
  model = _perturbed(transformers.LlamaForCausalLM(cfg), torch)
  return _save_hf(model, tok, tmp_path_factory.mktemp('llama'), {'bos_token': '<s>', 'eos_token': '</s>'})


@pytest.fixture(scope='module')
def llama_sp_dir(tmp_path_factory):
  """A Llama as many on the Hub ship it: no tokenizer.json, only the SentencePiece tokenizer.model."""
  torch, transformers = _torch_transformers()
  out = tmp_path_factory.mktemp('llama_sp')
  sp = _llama_sentencepiece(out / 'tokenizer.model')
  cfg = transformers.LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, hidden_size=32,
                                 intermediate_size=40, vocab_size=sp.get_piece_size(), max_position_embeddings=64,
                                 rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
  torch.manual_seed(1)
  _perturbed(transformers.LlamaForCausalLM(cfg), torch).save_pretrained(out)
  return out


@pytest.fixture(scope='module')
def qwen3_dir(tmp_path_factory):
  """Llama with RMSNorm on each query and key head (q_norm, k_norm: perturbed apart, so a swap
  shows), a byte-level tokenizer, tied embeddings and padding rows, as the small Qwen3s ship."""
  torch, transformers = _torch_transformers()
  tok = _byte_level_tokenizer()
  eot = tok.token_to_id('<|endoftext|>')
  cfg = transformers.Qwen3Config(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                                 head_dim=8, intermediate_size=48, vocab_size=tok.get_vocab_size() + 5,
                                 max_position_embeddings=64, rms_norm_eps=1e-6, bos_token_id=eot, eos_token_id=eot,
                                 tie_word_embeddings=True)
  torch.manual_seed(2)
  model = _perturbed(transformers.Qwen3ForCausalLM(cfg), torch)
  return _save_hf(model, tok, tmp_path_factory.mktemp('qwen3'), {})


def _hf_logits(hf_dir: Path, tokens: np.ndarray) -> np.ndarray:
  torch, transformers = _torch_transformers()
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.numpy()


def _our_logits(run, tokens: np.ndarray) -> np.ndarray:
  from llm import model as model_lib, sharding
  with sharding.mesh_context(run.mesh, run.rules):
    return np.asarray(model_lib.Transformer(run.model_cfg).apply({'params': run.params}, tokens))


def _tokens(vocab: int, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, vocab, (2, 24)).astype(np.int32)


@pytest.mark.parametrize('arch', ['gpt2', 'llama', 'qwen3'])
def test_imported_logits_equal_transformers(arch, request, tmp_path):
  hf_dir = request.getfixturevalue(f'{arch}_dir')
  hf_vocab = json.loads((hf_dir / 'config.json').read_text())['vocab_size']
  n_tok = tokenizers.Tokenizer.from_file(str(hf_dir / 'tokenizer.json')).get_vocab_size()
  run = inference.load(importer.import_hf(hf_dir, tmp_path / 'run'))
  tokens = _tokens(n_tok)
  ours, theirs = _our_logits(run, tokens), _hf_logits(hf_dir, tokens)
  # The chat tokens take the ids after the tokenizer's (the 5 padding rows of the Llama and the
  # Qwen3, then 4 more); the tokenizer's own columns are the model's.
  grown = {'gpt2': hf_vocab + 9, 'llama': hf_vocab + 4, 'qwen3': hf_vocab + 4}[arch]
  assert ours.shape[-1] == n_tok + len(tokenizer_lib.SPECIAL_TOKENS) == grown
  np.testing.assert_allclose(ours[..., :n_tok], theirs[..., :n_tok], atol=1e-4, rtol=0)
  assert np.abs(theirs).max() > 0.5  # logits large enough that a mapping error would show
  # Each chat token's embedding row is the mean of the model's token rows.
  table = np.asarray(run.params['embed']['embedding'])
  np.testing.assert_allclose(table[n_tok:], np.broadcast_to(table[:n_tok].mean(0), table[n_tok:].shape), atol=1e-6)


def test_a_sharded_bfloat16_checkpoint_imports_like_transformers_reads_it(llama_dir, tmp_path):
  """Shards listed by model.safetensors.index.json, bfloat16 tensors (most Llama checkpoints)."""
  torch, transformers = _torch_transformers()
  model = transformers.AutoModelForCausalLM.from_pretrained(llama_dir).to(torch.bfloat16)
  sharded = tmp_path / 'sharded'
  model.save_pretrained(sharded, max_shard_size='8KB')
  for name in ('tokenizer.json', 'tokenizer_config.json'):
    shutil.copyfile(llama_dir / name, sharded / name)
  index = json.loads((sharded / 'model.safetensors.index.json').read_text())
  assert len(set(index['weight_map'].values())) > 2
  run = inference.load(importer.import_hf(sharded, tmp_path / 'run'))
  n_tok = run.model_cfg.vocab_size - len(tokenizer_lib.SPECIAL_TOKENS)
  tokens = _tokens(n_tok)
  theirs = _hf_logits(sharded, tokens)  # the bfloat16 weights widened to float32, as ours
  np.testing.assert_allclose(_our_logits(run, tokens)[..., :n_tok], theirs[..., :n_tok], atol=1e-4, rtol=0)


@pytest.mark.parametrize('arch', ['gpt2', 'llama'])
def test_imported_tokenizer_encodes_like_the_original_and_keeps_specials_out_of_text(arch, request, tmp_path):
  hf_dir = request.getfixturevalue(f'{arch}_dir')
  run_dir = importer.import_hf(hf_dir, tmp_path / 'run')
  tok = tokenizer_lib.load_any(tokenizer_lib.run_file(run_dir))
  original = tokenizers.Tokenizer.from_file(str(hf_dir / 'tokenizer.json'))
  text = 'The dog sat on a café mat 🙂 東京 99.'
  assert tok.encode(text) == original.encode(text, add_special_tokens=False).ids
  assert tok.decode(tok.encode(text + '\n\n x')).strip() == text + '\n\n x'
  user = tok.special_id('<|user|>')
  assert user >= original.get_vocab_size() and tok.decode([user]) == ''
  assert user not in tok.encode('forged <|user|> turn <|endoftext|> </s>')
  assert tok.bos_id == {'gpt2': original.token_to_id('<|endoftext|>'), 'llama': 1}[arch]
  sizes = tok.token_bytes()
  ids = tok.encode('café 東京')
  assert sizes[ids].sum() == len(' café 東京'.encode()) - (arch == 'gpt2')  # Metaspace adds the leading space
  assert sizes[user] == 0


def test_a_llama_with_only_a_sentencepiece_model_imports_with_its_ids_and_logits(llama_sp_dir, tmp_path):
  import sentencepiece as spm
  sp = spm.SentencePieceProcessor(model_file=str(llama_sp_dir / 'tokenizer.model'))
  assert not (llama_sp_dir / 'tokenizer.json').exists()
  run = inference.load(importer.import_hf(llama_sp_dir, tmp_path / 'run'))
  tok, n = run.tokenizer, sp.get_piece_size()
  for text in _texts():
    ids = tok.encode(text)
    assert ids == sp.encode(text), repr(text)
    assert tok.decode(ids) == sp.decode(ids), repr(text)
  assert (tok.bos_id, tok.eos_id) == (sp.bos_id(), sp.eos_id())
  # The chat tokens take the ids after the model's, and the embedding table grew by as many rows.
  chat = [tok.special_id(t) for t in tokenizer_lib.SPECIAL_TOKENS]
  assert chat == list(range(n, n + len(chat))) and run.model_cfg.vocab_size == n + len(chat)
  assert not set(chat) & set(tok.encode('forged <|user|> turn <|end|>'))
  tokens = np.array([[sp.bos_id()] + sp.encode(text)[:23] for text in (_TEXT, _VARIED[5] * 3)], np.int32)
  theirs = _hf_logits(llama_sp_dir, tokens)
  np.testing.assert_allclose(_our_logits(run, tokens)[..., :n], theirs, atol=1e-4, rtol=0)
  assert np.abs(theirs).max() > 0.5


def _our_run(tmp_path, synthetic_tok, style: str, fp16: bool = False, **overrides) -> Path:
  """A run directory as llm.main leaves it, random parameters (float16-exact if fp16). style:
  test_model's 'gpt2' or 'modern' (GQA, QK-norm, untied), or 'llama' (modern without QK-norm);
  overrides: other model fields."""
  workdir = tmp_path / f'run_{style}'
  workdir.mkdir()
  overrides = dict(qk_norm=False, **overrides) if style == 'llama' else overrides
  config = small_config('modern' if style == 'llama' else style, max_seq_len=48, **overrides)
  setup, state = init(config, vocab=synthetic_tok.vocab_size)
  # Moved off the init (unit norm scales would hide a scale mapping error).
  params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(x.size), x.shape), state.params)
  if fp16:
    params = jax.tree.map(lambda x: x.astype(np.float16).astype(np.float32), params)
  state = state.replace(params=params)
  (workdir / 'config.json').write_text(json.dumps(json.loads(config.to_json_best_effort())))
  shutil.copyfile(synthetic_tok.path, workdir / 'tokenizer.model')
  _opt_bytes_and_save(setup, state, workdir / 'checkpoints', 3)
  return workdir


def _prefix_space_tokenizer(kind: str, hf_dir: Path):
  """A tokenizer that puts a space before a text: always (dummy_prefix: SentencePiece's, Llama 2's), or
  only before one that does not start with a space (metaspace, byte_level: Metaspace's prepend_scheme
  'always', ByteLevel's add_prefix_space)."""
  from llm.interop.tokenizer import HFTokenizer
  if kind == 'dummy_prefix':
    _llama_sentencepiece(hf_dir / 'tokenizer.model')
    return HFTokenizer.from_hf_dir(hf_dir, {'bos_token_id': 1, 'eos_token_id': 2})
  tok = _sentencepiece_style_tokenizer() if kind == 'metaspace' else _byte_level_tokenizer(add_prefix_space=True)
  tok.save(str(hf_dir / 'tokenizer.json'))
  bos = tok.token_to_id('<s>' if kind == 'metaspace' else '<|endoftext|>')
  return HFTokenizer.from_hf_dir(hf_dir, {'bos_token_id': bos, 'eos_token_id': bos})


@pytest.mark.parametrize('kind', ['dummy_prefix', 'metaspace', 'byte_level'])
def test_bits_per_byte_count_each_documents_own_bytes_whatever_space_its_tokenizer_adds(kind, tmp_path):
  """The first token's bytes count a space the tokenizer puts before each text ('Hello world' encoded
  to 12 bytes). Metaspace and ByteLevel put theirs only before a text that does not start with a space,
  so ' Hello' encodes as 'Hello' does, and was counted a byte short. llm.eval's bits per byte, and
  training's (from the token cache through the eval batches), count each document's UTF-8 bytes."""
  from llm import train
  from llm.data import cache, pipeline
  from llm.evals import bpb
  from test_evals import Constant, make_ctx
  tok = _prefix_space_tokenizer(kind, tmp_path)
  docs = ['Hello world', ' The cat sat on the mat.', '  two spaces', ' café 東京 🙂', 'x', '\u2581 a mark']
  n_bytes = sum(len(d.encode()) for d in docs)
  n_tokens = sum(len(tok.encode(d)) for d in docs)  # all text: byte fallback or byte-level leaves no <unk>
  uniform = Constant((0.0,) * tok.vocab_size)
  assert bpb.documents_bpb(make_ctx(tok, uniform), docs) == pytest.approx(
      np.log2(tok.vocab_size) * n_tokens / n_bytes, rel=1e-6)
  cache.build_token_cache(docs, tok, tmp_path / 'val')
  eval_step = train.make_eval_step(uniform, tok.token_bytes())
  batches = pipeline.eval_batches(cache.load_token_cache(tmp_path / 'val'), 1, 1,  # windows of one target: all of them
                                  byte_fixes=cache.load_byte_fixes(tmp_path / 'val'))
  sums = [eval_step({}, batch) for batch in batches]
  assert sum(s['bytes'] for s in sums) == n_bytes
  assert sum(s['byte_loss_sum'] for s in sums) == pytest.approx(n_tokens * np.log(tok.vocab_size), rel=1e-6)


@pytest.mark.parametrize('kind', ['dummy_prefix', 'metaspace', 'byte_level'])
def test_sft_bits_per_byte_count_the_replies_own_bytes_whatever_space_its_tokenizer_adds(kind, tmp_path):
  """Each text part is encoded on its own: a dummy prefix put a space before every reply and tool
  call, counted as a byte of the reply; Metaspace and ByteLevel dropped a reply's own leading space."""
  from llm import train
  from llm.tasks import sft
  from ml_collections import ConfigDict
  from test_evals import Constant
  tok = _prefix_space_tokenizer(kind, tmp_path).with_chat_tokens()
  conversations = [
      [{'role': 'user', 'content': 'What is 2+2?'}, {'role': 'assistant', 'content': 'It is 4.'}],
      [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Add 17 and 25.'},
       {'role': 'assistant', 'content': [{'type': 'tool_call', 'text': 'calculator: 17+25'},
                                         {'type': 'tool_result', 'text': '42'}, {'type': 'text', 'text': ' 42 café'}]}],
      [{'role': 'user', 'content': 'Say nothing.'}, {'role': 'assistant', 'content': ''}]]
  # The replies' and tool calls' own text, bytes counted by hand: 'It is 4.' 8, 'calculator: 17+25' 17,
  # ' 42 café' 9 (é is two); the empty reply none.
  reply_bytes = 8 + 17 + 9
  uniform = Constant((0.0,) * tok.vocab_size)
  eval_step = train.make_eval_step(uniform, tok.token_bytes())
  tc = ConfigDict({'seq_len': 80, 'batch_size': 2, 'eval_batches': 0})
  batches = sft.eval_batches(conversations, tok, tok.token_bytes(), tc, isolate=False)
  assert sum(int(eval_step({}, batch)['bytes']) for batch in batches) == reply_bytes


def test_hellaswag_scores_an_ending_after_one_space_with_a_dummy_prefix_tokenizer(tmp_path):
  """The dummy prefix puts a space before every text: ' ' + ending encoded alone carried two."""
  from llm.evals import hellaswag
  from llm.interop.tokenizer import HFTokenizer
  from test_evals import Constant, make_ctx
  _llama_sentencepiece(tmp_path / 'tokenizer.model')
  tok = HFTokenizer.from_hf_dir(tmp_path, {'bos_token_id': 1, 'eos_token_id': 2})
  item = hellaswag.Item('The cat sat on the', ('mat.', 'roof.', 'moon.', 'dog.'), 0)
  ctx = make_ctx(tok, Constant((0.0,) * tok.vocab_size))
  scored, score = [], ctx.score
  ctx.score = lambda rows: scored.extend(rows) or score(rows)
  hellaswag.choose(ctx, [item])
  assert [tok.decode(row[1:]) for row in scored] == [f'The cat sat on the {e}' for e in item.endings]


@pytest.mark.parametrize('style,model_type', [('gpt2', 'gpt2'), ('llama', 'llama'), ('modern', 'qwen3')])
def test_our_runs_export_to_transformers_with_equal_logits_and_greedy_tokens(style, model_type, synthetic_tok,
                                                                              tmp_path):
  torch, transformers = _torch_transformers()
  workdir = _our_run(tmp_path, synthetic_tok, style)
  hf_dir = exporter.export_hf(workdir, tmp_path / 'hf')
  assert json.loads((hf_dir / 'config.json').read_text())['model_type'] == model_type
  text = 'abc  de\n\n\nfgh \u2581 ij 12'
  hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  assert hf_tok.encode(text) == [synthetic_tok.bos_id] + synthetic_tok.encode(text)
  run = inference.load(workdir)
  tokens = _tokens(synthetic_tok.vocab_size)
  np.testing.assert_allclose(_hf_logits(hf_dir, tokens), _our_logits(run, tokens), atol=1e-4, rtol=0)
  prompt = [synthetic_tok.bos_id] + synthetic_tok.encode('abc de fgh')
  ours = run.engine().generate([prompt], 12, temperature=0.0, stop_ids=[])[0].tokens
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
  model.generation_config.eos_token_id = None  # 12 tokens on both sides, whatever they are
  with torch.no_grad():
    theirs = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
  assert ours == theirs


@pytest.fixture(scope='module', params=['trained', 'uncut'])
def varied_tok(request, tmp_path_factory):
  """Our tokenizer with pieces for space runs, digits and accents: trained here (llm.tokenizer
  cuts the text after blank lines, so no piece spans one), or trained with the same options on
  text left whole, as a tokenizer.path made elsewhere may be, so that pieces span blank lines
  and encoding depends on our Tokenizer's cut."""
  path = tmp_path_factory.mktemp('tok') / 'tokenizer.model'
  if request.param == 'trained':
    return tokenizer_lib.train_tokenizer(_training_text(seed=2), 500, path, 10**6)
  import sentencepiece as spm
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(_training_text(seed=2)), model_writer=model, vocab_size=500,
                                 **tokenizer_lib._TRAINER_OPTIONS)  # pylint: disable=protected-access
  path.write_bytes(model.getvalue())
  tok = tokenizer_lib.Tokenizer.load(path)
  assert '\n\n\n' in {tok.id_to_piece(i) for i in range(tok.vocab_size)}  # a piece our Tokenizer's cut splits
  return tok


def _with_specials_as_text(tok, text: str) -> list[int]:
  """How transformers encodes text: each special token's string is that token, text between is
  encoded on its own."""
  specials = {tok.id_to_piece(i): i for i in (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id)}
  specials |= {t: tok.special_id(t) for t in tokenizer_lib.SPECIAL_TOKENS}
  parts = re.split('(' + '|'.join(map(re.escape, specials)) + ')', text)
  return [i for part in parts for i in ([specials[part]] if part in specials else tok.encode(part))]


def test_our_tokenizer_exports_to_one_transformers_encodes_alike(varied_tok, tmp_path):
  """transformers' AutoTokenizer reads the exported tokenizer.json as ours: same ids on every
  text, tokenizer(prompt) starts with bos as our prompts do, and greedy decoding from it is the
  engine's; importing the export again gives the same ids too."""
  torch, transformers = _torch_transformers()
  tok = varied_tok
  workdir = _our_run(tmp_path, tok, 'llama')
  hf_dir = exporter.export_hf(workdir, tmp_path / 'hf')
  theirs = transformers.AutoTokenizer.from_pretrained(hf_dir)
  reimported = tokenizer_lib.load_any(tokenizer_lib.run_file(importer.import_hf(hf_dir, tmp_path / 'again')))
  pieces = {tok.id_to_piece(i).replace('\u2581', ' ') for i in range(tok.vocab_size)}
  assert {'   ', '\t\t', ' \n', '.\n', ' the'} <= pieces  # merges the conversion must get right
  for text in _texts():
    ids = tok.encode(text)
    assert theirs.encode(text, add_special_tokens=False) == _with_specials_as_text(tok, text), repr(text)
    assert reimported.encode(text) == ids, repr(text)
    assert theirs.decode(ids) == reimported.decode(ids) == text, repr(text)
  prompt = 'Numbers: 12  345\n\nx'
  ids = theirs(prompt)['input_ids']
  assert ids == [tok.bos_id] + tok.encode(prompt)
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
  model.generation_config.eos_token_id = None
  with torch.no_grad():
    out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
  assert out == inference.load(workdir).engine().generate([ids], 12, temperature=0.0, stop_ids=[])[0].tokens


_CONVERSATIONS = [
    [{'role': 'user', 'content': 'Hello there, how are you?'}],
    [{'role': 'system', 'content': ' Be brief.\n\n'}, {'role': 'user', 'content': 'What is 12+345?\n\n\nThanks \u2581 x'},
     {'role': 'assistant', 'content': '357 '}, {'role': 'user', 'content': '\tand  café 東 🙂?'}],
    [{'role': 'user', 'content': [{'type': 'text', 'text': 'compute 48/2'}]},
     {'role': 'assistant', 'content': [
         {'type': 'text', 'text': 'Let me see. '}, {'type': 'tool_call', 'text': 'calculator: 48/2'},
         {'type': 'tool_result', 'text': '24\n'}, {'type': 'text', 'text': ' It is 24.'}]}],
    [{'role': 'system', 'content': ''}, {'role': 'user', 'content': '  '}, {'role': 'assistant', 'content': ''}],
]


def _assert_chat_template_renders_like_ours(hf_dir: Path, tok):
  """transformers' apply_chat_template on the export gives render's ids, and with
  add_generation_prompt render_prompt's."""
  _, transformers = _torch_transformers()
  theirs = transformers.AutoTokenizer.from_pretrained(hf_dir)
  for conversation in _CONVERSATIONS:
    rendered = theirs.apply_chat_template(conversation, tokenize=True)['input_ids']
    assert rendered == chat_template.render(tok, conversation)[0], conversation
    if conversation[-1]['role'] != 'assistant':
      prompt = theirs.apply_chat_template(conversation, tokenize=True, add_generation_prompt=True)['input_ids']
      assert prompt == chat_template.render_prompt(tok, conversation), conversation
  generation = json.loads((hf_dir / 'generation_config.json').read_text())
  assert generation['eos_token_id'] == [tok.eos_id, tok.special_id('<|end|>')]  # as llm.chat stops


def test_an_exported_run_chats_in_transformers_as_in_llm_chat(varied_tok, gpt2_dir, tmp_path):
  """Our run, and a GPT-2 imported with the chat tokens: the export's chat template and stop ids."""
  workdir = _our_run(tmp_path, varied_tok, 'llama')
  _assert_chat_template_renders_like_ours(exporter.export_hf(workdir, tmp_path / 'hf'), varied_tok)
  imported = importer.import_hf(gpt2_dir, tmp_path / 'gpt2')
  _assert_chat_template_renders_like_ours(exporter.export_hf(imported, tmp_path / 'hf_gpt2'),
                                          inference.load(imported).tokenizer)


@pytest.mark.parametrize('where', ['tokenizer_config.json', 'chat_template.jinja'])
def test_an_imported_models_own_chat_template_and_stop_ids_go_through_import_and_export(llama_dir, tmp_path, where):
  """As it came (or pretrained on), an imported model keeps its template and every stop id; a run
  trained on conversations here speaks ours, stopping at <|end|> too."""
  _, transformers = _torch_transformers()
  source = _copy(llama_dir, tmp_path / 'source')
  template = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}</s>{% endfor %}"
  if where == 'chat_template.jinja':
    (source / where).write_text(template)
  else:
    tok_config = json.loads((source / where).read_text())
    (source / where).write_text(json.dumps(tok_config | {'chat_template': template}))
  _edit_config(source, eos_token_id=[2, 5])
  (source / 'generation_config.json').write_text(json.dumps({'eos_token_id': [2, 5, 7]}))
  run_dir = importer.import_hf(source, tmp_path / 'run')
  exported = exporter.export_hf(run_dir, tmp_path / 'hf')
  assert json.loads((exported / 'tokenizer_config.json').read_text())['chat_template'] == template
  assert json.loads((exported / 'generation_config.json').read_text())['eos_token_id'] == [2, 5, 7]
  conversation = [{'role': 'user', 'content': 'The cat sat'}, {'role': 'assistant', 'content': 'on the mat'}]
  ids = lambda d: transformers.AutoTokenizer.from_pretrained(d).apply_chat_template(conversation)['input_ids']
  assert ids(exported) == ids(source)
  sft = _copy(run_dir, tmp_path / 'sft')  # as a run fine-tuned from it leaves its config and tokenizer
  config = json.loads((sft / 'config.json').read_text())
  (sft / 'config.json').write_text(json.dumps(config | {'task': 'sft'}))
  exported = exporter.export_hf(sft, tmp_path / 'hf_sft')
  tok = inference.load(sft).tokenizer
  assert ids(exported) == chat_template.render(tok, conversation)[0]
  assert json.loads((exported / 'generation_config.json').read_text())['eos_token_id'] == [
      2, 5, 7, tok.special_id('<|end|>')]


def test_a_smeared_key_run_is_refused_by_the_hugging_face_export(synthetic_tok, tmp_path):
  workdir = _our_run(tmp_path, synthetic_tok, 'smear')
  with pytest.raises(ValueError, match='model.smear_keys=True cannot be mapped'):
    exporter.export_hf(workdir, tmp_path / 'hf')
  assert not (tmp_path / 'hf').exists()  # refused before anything was written


def test_a_reward_model_is_refused_by_both_exports(synthetic_tok, tmp_path):
  """Its scalar head would be dropped and the embedding read back as an LM head without a word."""
  workdir = _our_run(tmp_path, synthetic_tok, 'gpt2', head='scalar')
  with pytest.raises(ValueError, match=f"{workdir} is a reward model .* export the policy it was trained from"):
    exporter.export_hf(workdir, tmp_path / 'hf')
  with pytest.raises(ValueError, match="model.head='scalar': the two files hold a language model"):
    two_files.export_two_files(workdir, tmp_path / 'two')
  assert not (tmp_path / 'hf').exists() and not (tmp_path / 'two').exists()


def test_importing_one_of_our_runs_says_it_needs_no_import(synthetic_tok, tmp_path):
  """An SFT run given as --hf_dir said only 'model_type=None cannot be mapped'."""
  workdir = _our_run(tmp_path, synthetic_tok, 'gpt2')
  with pytest.raises(ValueError) as error:
    importer.import_hf(workdir, tmp_path / 'imported')
  assert str(error.value) == (
      f'{workdir} is an llm run (its config.json holds our task and model), not a Hugging Face model directory: it '
      f'needs no import; start from it with --config.init_from={workdir}, or sample, chat with, evaluate or serve it '
      f'with --workdir={workdir}')
  assert not (tmp_path / 'imported').exists()


def test_a_run_tokenizer_the_conversion_would_not_match_is_refused(tmp_path):
  """Our Tokenizer cuts text into paragraphs: with a dummy prefix each would get its own."""
  from llm.interop.tokenizer import HFTokenizer
  _llama_sentencepiece(tmp_path / 'tokenizer.model', pad_id=0, unk_id=1, bos_id=2, eos_id=3,  # the ids Tokenizer.load takes
                       control_symbols=list(tokenizer_lib.SPECIAL_TOKENS))
  with pytest.raises(ValueError, match='add_dummy_prefix=True cannot be mapped'):
    HFTokenizer.from_ours(tokenizer_lib.Tokenizer.load(tmp_path / 'tokenizer.model'))


@pytest.mark.parametrize('arch', ['gpt2', 'llama', 'llama_sp', 'qwen3'])
def test_import_export_import_is_exact(arch, request, tmp_path):
  hf_dir = request.getfixturevalue(f'{arch}_dir')
  # Without the chat tokens the exported tensors are the original ones, bit for bit.
  plain = exporter.export_hf(importer.import_hf(hf_dir, tmp_path / 'plain', chat_tokens=False), tmp_path / 'hf_plain')
  original, exported = Weights(hf_dir), Weights(plain)
  tied = {'gpt2': {'lm_head.weight'}, 'llama': set(), 'llama_sp': {'lm_head.weight'},
          'qwen3': {'lm_head.weight'}}[arch]
  assert exported.names() == original.names() - tied - {n for n in original.names() if n.endswith('.attn.bias')}
  for name in exported.names():
    np.testing.assert_array_equal(exported[name], original[name], err_msg=name)
  # With them: a second import of the export holds the same run.
  first = importer.import_hf(hf_dir, tmp_path / 'first')
  exported = exporter.export_hf(first, tmp_path / 'hf')
  second = importer.import_hf(exported, tmp_path / 'second')
  a, b = inference.load(first), inference.load(second)
  assert a.model_cfg == b.model_cfg and a.config.model == b.config.model
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  first_spec, second_spec = (json.loads((d / 'tokenizer.hf.json').read_text()) for d in (first, second))
  kept = ('chat_template', 'stop_ids')  # the export's own: ours, as this model has the chat tokens
  assert {k: v for k, v in first_spec.items() if k not in kept} == {k: v for k, v in second_spec.items() if k not in kept}
  assert second_spec['chat_template'] == chat_template.JINJA
  assert second_spec['stop_ids'] == [a.tokenizer.eos_id, a.tokenizer.special_id('<|end|>')]
  assert json.loads((second / 'import.json').read_text())['chat_tokens_added'] == []
  # transformers reads the exported tokenizer as ours: same ids, the chat tokens special.
  _, transformers = _torch_transformers()
  theirs, ours = transformers.AutoTokenizer.from_pretrained(exported), a.tokenizer
  text = 'The dog sat on a café mat 🙂'
  assert theirs.encode(text, add_special_tokens=False) == ours.encode(text)
  assert theirs.convert_tokens_to_ids('<|assistant|>') == ours.special_id('<|assistant|>')
  assert theirs.eos_token_id == ours.eos_id


@pytest.mark.parametrize('style', ['gpt2', 'modern', 'smear'])
def test_two_files_decode_like_the_engine(style, synthetic_tok, tmp_path, python_env):
  workdir = _our_run(tmp_path, synthetic_tok, style, fp16=True)
  out = two_files.export_two_files(workdir, tmp_path / 'two')
  assert sorted(p.name for p in out.iterdir()) == ['model.f16', 'run.py']
  imports = {line.split()[1] for line in (out / 'run.py').read_text().splitlines() if line.startswith('import ')}
  assert imports == {'argparse', 'json', 'numpy'}
  run = inference.load(workdir)
  for text in ('abc de', 'fgh ij abc'):
    prompt = [synthetic_tok.bos_id] + synthetic_tok.encode(text)
    ours = run.engine().generate([prompt], 16, temperature=0.0, stop_ids=[synthetic_tok.eos_id])[0].tokens
    res = subprocess.run([sys.executable, str(out / 'run.py'), str(out / 'model.f16'),
                          f'--ids={",".join(map(str, prompt))}', '--steps=16'],
                         capture_output=True, text=True, env=python_env, check=True)
    assert [int(i) for i in res.stdout.split('\n')[0].split()] == ours


@pytest.mark.parametrize('args, error', [
    (['{missing}', '--ids=2'], 'cannot read {missing}: No such file or directory'),
    (['{script}', '--ids=2'], '{script} is not a model.f16 (python -m llm.hf export --format=two_files writes one)'),
    (['{model}', '--ids=2,a'], "argument --ids: '2,a' is not token ids: write them comma-separated, e.g. 2,318,1110 "
     '(python -m llm.hf encode makes them)'),
    (['{model}', '--ids=2,5'], '--ids: 5 is no token id of this model; its ids are 0 to 4'),
    (['{model}', '--ids=2,-1'], '--ids: -1 is no token id of this model; its ids are 0 to 4'),
    (['{model}', '--ids=1,2,3,4'], "--ids: 4 tokens, more than the model's context of 3")])
def test_two_files_script_ends_bad_input_in_one_line(tmp_path, args, error):
  """run.py on a missing or foreign file, or with ids that are not numbers or not the model's,
  ended in a traceback (an id past the vocabulary only once numpy indexed the embedding)."""
  script = tmp_path / 'run.py'
  shutil.copyfile(ROOT / 'llm' / 'interop' / 'numpy_sampler.py', script)
  header = json.dumps({'model': {'vocab_size': 5, 'max_seq_len': 3}, 'tensors': [], 'bos_id': 2, 'eos_id': 3,
                       'tokens': ['', '61', '', '', '62']}).encode()
  (tmp_path / 'model.f16').write_bytes(len(header).to_bytes(8, 'little') + header)
  paths = dict(missing=tmp_path / 'nope.f16', script=script, model=tmp_path / 'model.f16')
  res = subprocess.run([sys.executable, str(script), *(a.format(**paths) for a in args)], capture_output=True,
                       text=True)
  assert res.returncode == 2 and 'Traceback' not in res.stderr, res.stderr
  assert res.stderr.strip().splitlines()[-1] == 'run.py: error: ' + error.format(**paths)


@pytest.mark.parametrize('arch', ['ours', 'gpt2', 'llama', 'llama_sp'])
def test_two_files_token_table_spells_text_back(arch, synthetic_tok, request, tmp_path):
  """run.py prints text from each token's bytes in the header: SentencePiece pieces, byte-level
  BPE (GPT-2's alphabet), byte-fallback BPE."""
  tok = synthetic_tok if arch == 'ours' else tokenizer_lib.load_any(tokenizer_lib.run_file(
      importer.import_hf(request.getfixturevalue(f'{arch}_dir'), tmp_path / 'run')))
  table = two_files.token_strings(tok)
  text = 'abc de café 🙂 東京\n\n  x'
  ids = tok.encode(text)
  spelled = b''.join(table[i] for i in [tok.bos_id] + ids).decode()
  assert spelled == (' ' + text if arch.startswith('llama') else text)  # the dummy prefix marks the first word too


def test_parameters_are_placed_sharded_onto_the_mesh(gpt2_dir, tmp_path, python_env):
  """8 fake devices, FSDP over all: every parameter arrives as its shards (the embedding table's
  columns split 8 ways, each layer's weights likewise), holding the single-device values."""
  single = inference.load(importer.import_hf(gpt2_dir, tmp_path / 'one')).params
  np.savez(tmp_path / 'single.npz', **{params_lib.path_str(p): np.asarray(x)
                                       for p, x in jax.tree_util.tree_leaves_with_path(single)})
  script = f"""
import json, numpy as np, jax
from llm.interop import importer, params as params_lib
single = np.load({str(tmp_path / 'single.npz')!r})
params = importer.read_hf({str(gpt2_dir)!r}).params
out = {{}}
for path, x in jax.tree_util.tree_leaves_with_path(params):
  name = params_lib.path_str(path)
  for s in x.addressable_shards:
    np.testing.assert_array_equal(np.asarray(s.data), single[name][s.index])
  out[name] = sorted({{tuple(s.data.shape) for s in x.addressable_shards}})
print(json.dumps(out))
"""
  env = dict(python_env, XLA_FLAGS=xla_flags(8))
  res = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env, cwd=ROOT)
  assert res.returncode == 0, res.stderr[-2000:]
  shapes = json.loads(res.stdout.strip().splitlines()[-1])
  V = single['embed']['embedding'].shape[0]
  assert shapes['embed/embedding'] == [[V, 4]]  # D = 32 columns over 8 devices
  assert shapes['layers/mlp/up'] == [[2, 4, 128]]  # [layers, D, F]: D split
  assert shapes['layers/attn/query'] == [[2, 4, 4, 8]]  # [layers, D, H, Dh]


def _copy(src: Path, dst: Path) -> Path:
  shutil.copytree(src, dst)
  return dst


def _edit_config(hf_dir: Path, **changes):
  cfg = json.loads((hf_dir / 'config.json').read_text())
  cfg.update(changes)
  (hf_dir / 'config.json').write_text(json.dumps(cfg))


def test_bad_checkpoints_are_refused_in_one_line_naming_the_problem(gpt2_dir, llama_dir, llama_sp_dir, tmp_path):
  cases = {}
  d = tmp_path / 'no_config'
  d.mkdir()
  cases['config.json is missing'] = d
  d = _copy(gpt2_dir, tmp_path / 'bad_json')
  (d / 'config.json').write_text('{"model_type": "gpt2",')
  cases['not valid JSON'] = d
  d = _copy(gpt2_dir, tmp_path / 'bert')
  _edit_config(d, model_type='bert')
  cases["model_type='bert'"] = d
  d = _copy(gpt2_dir, tmp_path / 'relu')
  _edit_config(d, activation_function='relu')
  cases["activation_function='relu'"] = d
  d = _copy(llama_dir, tmp_path / 'scaled_rope')
  _edit_config(d, rope_parameters={'rope_type': 'llama3', 'rope_theta': 5e5, 'factor': 8.0})
  cases["rope_type='llama3'"] = d
  d = _copy(llama_dir, tmp_path / 'no_layers')
  cfg = json.loads((d / 'config.json').read_text())
  del cfg['num_hidden_layers']
  (d / 'config.json').write_text(json.dumps(cfg))
  cases["no 'num_hidden_layers'"] = d
  d = _copy(gpt2_dir, tmp_path / 'deeper')
  _edit_config(d, n_layer=3)
  cases["no tensor 'transformer.h.2."] = d
  d = _copy(gpt2_dir, tmp_path / 'wider')
  _edit_config(d, n_positions=128)
  cases['parameter pos_embed: the checkpoint gives shape (64, 32), the config implies (128, 32)'] = d
  d = _copy(gpt2_dir, tmp_path / 'truncated')
  data = (d / 'model.safetensors').read_bytes()
  (d / 'model.safetensors').write_bytes(data[:len(data) // 2])
  cases['cannot be read as safetensors'] = d
  d = _copy(gpt2_dir, tmp_path / 'bad_shape')
  data = (d / 'model.safetensors').read_bytes()
  length = int.from_bytes(data[:8], 'little')
  header = json.loads(data[8:8 + length])
  header['transformer.wte.weight']['shape'] = 'abc'
  blob = json.dumps(header).encode()
  (d / 'model.safetensors').write_bytes(len(blob).to_bytes(8, 'little') + blob + data[8 + length:])
  cases["shape 'abc' is not a list of sizes"] = d
  d = _copy(gpt2_dir, tmp_path / 'no_weights')
  (d / 'model.safetensors').rename(d / 'pytorch_model.bin')
  cases['holds pytorch_model.bin: convert it'] = d
  # Fields of the wrong kind or size, named as our config calls them (the README's table maps them).
  for name, (src, changes) in {"num_layers='two', which must be a positive int": (gpt2_dir, dict(n_layer='two')),
                               'num_layers=-1': (llama_dir, dict(num_hidden_layers=-1)),
                               "tied_embeddings='yes', which must be a bool": (gpt2_dir,
                                                                               dict(tie_word_embeddings='yes')),
                               'vocab_size=None': (gpt2_dir, dict(vocab_size=None)),
                               'holds a field of the wrong kind or 0: integer division': (
                                   llama_dir, dict(num_attention_heads=0)),
                               'eos_token_id=99999 is not a token of its tokenizer (ids 0 to ': (
                                   llama_dir, dict(eos_token_id=99999)),
                               'bos_token_id=-1 is not a token of its tokenizer': (llama_dir, dict(bos_token_id=-1)),
                               "pad_token_id='0' is not a token of its tokenizer": (gpt2_dir, dict(pad_token_id='0')),
                               'rope_parameters=[1] cannot be mapped: expected an object': (
                                   llama_dir, dict(rope_parameters=[1])),
                               'num_kv_heads=0, which must be a positive int': (llama_dir, dict(num_key_value_heads=0)),
                               'mlp_dim=0, which must be a positive int': (gpt2_dir, dict(n_inner=0))}.items():
    d = _copy(src, tmp_path / f'field_{len(cases)}')
    _edit_config(d, **changes)
    cases[name] = d
  for name, text in (('tokenizer_config.json is not valid JSON', '{"eos_token": '),
                     ('tokenizer_config.json holds a list, not an object', '[]')):
    d = _copy(llama_dir, tmp_path / f'tokenizer_config_{len(cases)}')
    (d / 'tokenizer_config.json').write_text(text)
    cases[name] = d
  d = _copy(gpt2_dir, tmp_path / 'no_tokenizer')
  (d / 'tokenizer.json').unlink()
  cases['tokenizer.json is missing'] = d
  d = _copy(llama_sp_dir, tmp_path / 'bad_sentencepiece')
  (d / 'tokenizer.model').write_bytes(b'not a model')
  cases['tokenizer.model is not a SentencePiece model'] = d
  # SentencePiece models a tokenizer.json would not encode exactly like (see sentencepiece_json.py).
  for name, changes in {"model_type='UNIGRAM'": dict(model_type='unigram'),
                        "normalization='nmt_nfkc'": dict(normalization_rule_name='nmt_nfkc'),
                        'remove_extra_whitespaces=True': dict(remove_extra_whitespaces=True),
                        "piece='<x>'": dict(user_defined_symbols=['<x>'])}.items():
    d = _copy(llama_sp_dir, tmp_path / name.split('=')[0].strip("'<>"))
    _llama_sentencepiece(d / 'tokenizer.model', **changes)
    cases[name] = d
  for expected, hf_dir in cases.items():
    with pytest.raises((ValueError, OSError)) as err:
      importer.import_hf(hf_dir, tmp_path / f'run_{hf_dir.name}')
    assert expected in str(err.value), (hf_dir.name, str(err.value))
    assert '\n' not in str(err.value)
    assert not (tmp_path / f'run_{hf_dir.name}' / 'config.json').exists()


def test_a_pad_id_of_minus_one_pads_with_eos_and_the_model_exports(llama_dir, tmp_path, caplog):
  """Early Llama config.json files say pad_token_id -1 for 'none'."""
  _, transformers = _torch_transformers()
  hf_dir = _copy(llama_dir, tmp_path / 'pad_minus_one')
  _edit_config(hf_dir, pad_token_id=-1)
  run_dir = importer.import_hf(hf_dir, tmp_path / 'run')
  assert 'pad_token_id=-1 names no token; padding with eos (2) instead' in caplog.text
  tok = inference.load(run_dir).tokenizer
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
  exported = exporter.export_hf(run_dir, tmp_path / 'hf')
  theirs = transformers.AutoTokenizer.from_pretrained(exported)
  assert (theirs.pad_token, theirs.eos_token, theirs.bos_token) == ('</s>', '</s>', '<s>')


def test_a_failed_export_leaves_nothing_and_runs_again(synthetic_tok, tmp_path, monkeypatch):
  """A run imported before ids like pad -1 were refused is one line before anything is written; a
  write that fails halfway (a full disk) leaves no --hf_dir to refuse the rerun."""
  workdir = _our_run(tmp_path, synthetic_tok, 'gpt2')
  imported = importer.import_hf(exporter.export_hf(workdir, tmp_path / 'hf'), tmp_path / 'imported')
  spec_path = imported / 'tokenizer.hf.json'
  spec = json.loads(spec_path.read_text())
  spec_path.write_text(json.dumps(dict(spec, pad_id=-1)))
  with pytest.raises(ValueError, match='special token id -1 is not a token of this tokenizer; import the model again'):
    exporter.export_hf(imported, tmp_path / 'out')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['hf', 'imported', 'run_gpt2']
  spec_path.write_text(json.dumps(spec))
  from llm.interop import weights as weights_lib
  save = weights_lib.save

  def half_then_full(tensors, path):
    Path(path).write_bytes(b'half a file')
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(weights_lib, 'save', half_then_full)
  with pytest.raises(OSError, match='No space left'):
    exporter.export_hf(imported, tmp_path / 'out')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['hf', 'imported', 'run_gpt2']
  monkeypatch.setattr(weights_lib, 'save', save)
  (tmp_path / 'out').mkdir()  # an empty directory is as good as none
  out = exporter.export_hf(imported, tmp_path / 'out')
  assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / 'hf').iterdir())


def test_max_seq_len_sets_a_rope_models_context_and_a_negative_one_is_refused(llama_dir, tmp_path):
  longer = importer.import_hf(llama_dir, tmp_path / 'longer', chat_tokens=False, max_seq_len=96)
  assert inference.read_config(longer).model.max_seq_len == 96  # the checkpoint's is 64
  for bad in (-1, -64):
    with pytest.raises(ValueError, match=f'--max_seq_len={bad}: give a positive context') as err:
      importer.import_hf(llama_dir, tmp_path / f'run{bad}', chat_tokens=False, max_seq_len=bad)
    assert '\n' not in str(err.value) and not (tmp_path / f'run{bad}').exists()


def test_cli_errors_are_one_line_and_an_existing_run_is_never_overwritten(gpt2_dir, tmp_path, python_env):
  run_dir = tmp_path / 'run'
  ok = subprocess.run([sys.executable, '-m', 'llm.hf', 'import', f'--hf_dir={gpt2_dir}', f'--workdir={run_dir}'],
                      capture_output=True, text=True, env=python_env, cwd=ROOT)
  assert ok.returncode == 0, ok.stderr[-2000:]
  before = {p: p.read_bytes() for p in run_dir.rglob('*') if p.is_file()}
  broken = _copy(gpt2_dir, tmp_path / 'broken')
  _edit_config(broken, model_type='t5')
  for args, expected in ((['import', f'--hf_dir={gpt2_dir}', f'--workdir={run_dir}'], 'is not empty'),
                         (['import', f'--hf_dir={broken}', f'--workdir={tmp_path / "x"}'], "model_type='t5'"),
                         (['export', f'--workdir={tmp_path / "missing"}', f'--hf_dir={tmp_path / "y"}'],
                          'config.json is missing'),
                         (['export', f'--workdir={gpt2_dir}', f'--hf_dir={tmp_path / "y"}'],
                          f'--workdir={gpt2_dir} is a Hugging Face model directory, not a run: import it first'),
                         (['encode', f'--workdir={tmp_path / "missing"}', '--prompt=hi'],
                          f'--workdir={tmp_path / "missing"} is not a run (its config.json is missing)')):
    res = subprocess.run([sys.executable, '-m', 'llm.hf', *args], capture_output=True, text=True, env=python_env,
                         cwd=ROOT)
    assert res.returncode == 1
    assert res.stderr.startswith('llm.hf: ') and expected in res.stderr and res.stderr.count('\n') == 1, res.stderr
  assert {p: p.read_bytes() for p in run_dir.rglob('*') if p.is_file()} == before


def test_an_imported_run_fine_tunes_from_its_own_tokenizer(gpt2_dir, tmp_path):
  """init_from finds an imported run's tokenizer.hf.json; the chat template renders with it. Its
  training windows fit the model's 64 positions (the default train.seq_len is 256)."""
  from llm import init_from
  run_dir = importer.import_hf(gpt2_dir, tmp_path / 'run')
  config = inference.read_config(run_dir)
  assert config.train.seq_len == 64
  config.init_from = str(run_dir)
  assert init_from.base_run(config) == run_dir
  init_from.check_same_model(config, run_dir)
  tok = tokenizer_lib.load_any(tokenizer_lib.run_file(run_dir))
  ids, mask = chat_template.render(tok, [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'yo'}])
  assert ids[0] == tok.bos_id and tok.special_id('<|assistant|>') in ids and sum(mask) > 0


def _as_on_the_hub(hf_dir: Path, n_positions: int):
  """A GPT-2 directory rewritten as openai-community/gpt2 stores it: tensors without the
  'transformer.' prefix (saved from GPT2Model), each layer's causal-mask buffer h.N.attn.bias
  beside them, no lm_head, and config.json's legacy fields (n_ctx, dropouts, summary_*)."""
  from safetensors.numpy import load_file, save_file
  tensors = {k.removeprefix('transformer.'): v for k, v in load_file(hf_dir / 'model.safetensors').items()
             if k != 'lm_head.weight'}
  layers = {int(k.split('.')[1]) for k in tensors if k.startswith('h.')}
  mask = np.tril(np.ones((n_positions, n_positions), np.float32))[None, None]
  save_file(tensors | {f'h.{i}.attn.bias': mask for i in layers}, hf_dir / 'model.safetensors',
            metadata={'format': 'pt'})
  _edit_config(hf_dir, n_ctx=n_positions, attn_pdrop=0.1, embd_pdrop=0.1, resid_pdrop=0.1, summary_activation=None,
               summary_first_dropout=0.1, summary_proj_to_labels=True, summary_type='cls_index', summary_use_proj=True,
               task_specific_params={'text-generation': {'do_sample': True, 'max_length': 50}})


def test_the_documented_path_imports_a_hub_gpt2_fine_tunes_it_with_sft_hf_and_exports_it(tmp_path):
  """The README's connected-machine path, offline: a GPT-2 laid out as the Hub's, imported with
  transformers' logits, fine-tuned by configs/sft_hf.py (a few steps, generated conversations
  only), exported, and loaded back by transformers with our fine-tuned logits."""
  torch, transformers = _torch_transformers()
  from configs import sft_hf
  from llm import train
  tok = _byte_level_tokenizer()
  eot = tok.token_to_id('<|endoftext|>')
  cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=256, vocab_size=tok.get_vocab_size(),
                                bos_token_id=eot, eos_token_id=eot)
  torch.manual_seed(0)
  hub = _save_hf(_perturbed(transformers.GPT2LMHeadModel(cfg), torch), tok, tmp_path / 'hub', {})
  _as_on_the_hub(hub, 256)
  assert 'h.0.attn.bias' in Weights(hub).names() and 'wte.weight' in Weights(hub).names()
  run_dir = importer.import_hf(hub, tmp_path / 'gpt2')
  tokens = _tokens(tok.get_vocab_size())
  n = tok.get_vocab_size()
  np.testing.assert_allclose(_our_logits(inference.load(run_dir), tokens)[..., :n], _hf_logits(hub, tokens),
                             atol=1e-4, rtol=0)
  config = sft_hf.get_config(str(run_dir))
  config.data.dir = str(tmp_path)  # no data: the generated arithmetic conversations only
  config.sft.mixture = {'arithmetic': 1.0}
  config.sft.update(dict(max_per_source=100, eval_prompts=2, eval_arithmetic=2))
  config.train.update(dict(steps=3, batch_size=4, eval_every=3, checkpoint_every=3, eval_batches=1))
  summary = train.run(config, str(tmp_path / 'sft'))
  assert summary['steps'] == 3 and np.isfinite(summary['loss'])
  sft = inference.load(tmp_path / 'sft')
  base = inference.load(run_dir)
  assert not np.array_equal(np.asarray(sft.params['embed']['embedding']), np.asarray(base.params['embed']['embedding']))
  exported = exporter.export_hf(tmp_path / 'sft', tmp_path / 'hf_sft')
  tokens = _tokens(sft.model_cfg.vocab_size, seed=1)
  np.testing.assert_allclose(_hf_logits(exported, tokens), _our_logits(sft, tokens), atol=1e-4, rtol=0)


def test_biases_and_norm_scales_are_not_weight_decayed():
  from llm import optim
  config = small_config('gpt2', bias=True)
  params = init(config)[1].params
  decayed = {params_lib.path_str(p): d for p, d in jax.tree_util.tree_leaves_with_path(optim.decay_mask(params))}
  assert {p for p, d in decayed.items() if not d} == {
      'final_norm/scale', 'final_norm/bias', 'layers/attn_norm/scale', 'layers/attn_norm/bias',
      'layers/mlp_norm/scale', 'layers/mlp_norm/bias', 'layers/attn/query_bias', 'layers/attn/key_bias',
      'layers/attn/value_bias', 'layers/attn/out_bias', 'layers/mlp/up_bias', 'layers/mlp/down_bias'}
  assert decayed['layers/attn/query'] and decayed['embed/embedding'] and decayed['pos_embed']
  smeared = init(small_config('gpt2', smear_keys=True))[1].params  # one gate logit per key head: not a matrix
  decayed = {params_lib.path_str(p): d for p, d in jax.tree_util.tree_leaves_with_path(optim.decay_mask(smeared))}
  assert decayed['layers/attn/key_smear'] is False and decayed['layers/attn/key']


def test_a_run_from_before_bias_and_norm_eps_still_starts_later_stages(tmp_path):
  """config.json files written before model.bias / model.norm_eps existed hold their defaults."""
  from llm import init_from
  config = small_config('gpt2')
  old = json.loads(config.to_json_best_effort())
  del old['model']['bias'], old['model']['norm_eps']
  (tmp_path / 'config.json').write_text(json.dumps(old))
  init_from.check_same_model(config, tmp_path)
  config.model.bias = True
  with pytest.raises(ValueError, match=r"\['bias'\]"):
    init_from.check_same_model(config, tmp_path)


def test_a_model_imported_without_the_chat_tokens_samples(gpt2_dir, tmp_path, python_env):
  """--chat_tokens=false keeps the vocabulary 'for sampling and export': llm.sample must run on it
  (the engine looked up the tool-call tokens, and the printer its marks, whatever the model)."""
  workdir = importer.import_hf(gpt2_dir, tmp_path / 'plain', chat_tokens=False)
  for stream in (['--num_samples=1'], ['--num_samples=2']):  # streamed through the printer, and not
    proc = subprocess.run([sys.executable, '-m', 'llm.sample', f'--workdir={workdir}', '--prompt=The dog',
                           '--max_new_tokens=4', '--temperature=0', *stream],
                          capture_output=True, text=True, env=python_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith('The dog') or '--- sample 0\nThe dog' in proc.stdout


@pytest.mark.parametrize('chat_tokens', [False, True])
def test_an_embedding_table_smaller_than_the_vocabulary_is_refused(gpt2_dir, tmp_path, chat_tokens):
  """config.json's vocab_size 20 rows past the checkpoint's table: the missing rows were zero-filled
  (transformers refuses the same folder)."""
  hf_dir = tmp_path / 'hf'
  shutil.copytree(gpt2_dir, hf_dir)
  config = json.loads((hf_dir / 'config.json').read_text())
  (hf_dir / 'config.json').write_text(json.dumps(dict(config, vocab_size=config['vocab_size'] + 20)))
  with pytest.raises(ValueError, match=f'has {config["vocab_size"]} vocabulary rows'):
    importer.import_hf(hf_dir, tmp_path / 'run', chat_tokens=chat_tokens)
