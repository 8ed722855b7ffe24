"""Serving benchmark: a real `python -m llm.serve` on 127.0.0.1 under 1, 8, 32, ... concurrent
clients, against sequential serving (one client).

    python -m llm.bench --serve --clients=1,8,32

The served run has configs/pretrain_small.py's model (the CPU chat model's shape: 4 layers,
width 256, 256-token context, vocabulary 4096) with random parameters and a tokenizer trained on
made-up words, written to a temporary directory, so the benchmark needs no data and no training.
Each client sends chat requests one after another (a short user message, max_tokens new tokens at
temperature 1, a seed per request); a random model almost never writes <|end|>, so nearly every
reply is max_tokens long, and the token counts come from each response's usage. Per level:
requests/s and completion tokens/s over the level's wall time, p50/p99 request latency, and
tokens/s over one client's. Each level first runs untimed, the same way with other seeds (the
batch and prefill shapes it reaches compile then). The clients run in this process (one asyncio
loop) on the same cores as the server, each on its own kept-alive connection, writing HTTP/1.1
by hand: httpx's AsyncClient took ~10% of the two cores at 32 clients, time the server lost.
"""
import asyncio
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


# The server runs on the CPU, on a GPU host too: the benchmark times CPU serving.
_SERVER_PLATFORM = 'cpu'


def write_random_run(workdir: Path, vocab: int = 4096) -> Path:
  """A run directory as llm.main leaves it (config.json, tokenizer.model, checkpoints/), with
  configs/pretrain_small.py's model at random parameters."""
  import grain
  import jax
  from configs import pretrain_small
  from llm import checkpoint, sharding, train
  from llm.tokenizer import train_tokenizer
  rng = random.Random(0)
  words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(2, 9))) for _ in range(20000)]
  text = '\n\n'.join(' '.join(rng.choice(words) for _ in range(60)) for _ in range(3000))
  tok = train_tokenizer([text], vocab, workdir / 'tokenizer.model', 2_000_000)
  config = pretrain_small.get_config()
  (workdir / 'config.json').write_text(config.to_json_best_effort())
  setup = train.build(config, tok.vocab_size, sharding.make_mesh(config.mesh))
  with setup.context():
    state = setup.init(jax.random.key(0))
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', keep=1)
  ckpt.save(0, state, iter(grain.MapDataset.range(1).to_iter_dataset()))
  ckpt.wait()
  ckpt.close()
  return workdir


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


async def _post(reader, writer, host: str, path: str, body: dict) -> dict:
  """One HTTP/1.1 request on a kept-alive connection; the JSON response. A load generator this
  lean keeps the clients' share of the two cores small (httpx's was ~10%)."""
  data = json.dumps(body).encode()
  writer.write(f'POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n'
               f'Content-Length: {len(data)}\r\n\r\n'.encode() + data)
  head = await reader.readuntil(b'\r\n\r\n')
  status = int(head.split(b' ', 2)[1])
  length = next(int(line.split(b':')[1]) for line in head.split(b'\r\n') if line.lower().startswith(b'content-length:'))
  payload = await reader.readexactly(length)
  if status != 200:
    raise RuntimeError(f'{path} answered {status}: {payload[:500]!r}')
  return json.loads(payload)


def _body(seed: int, max_tokens: int, temperature: float) -> dict:
  """One benchmark request: a short chat question, a seed of its own."""
  return {'messages': [{'role': 'user', 'content': f'question {seed}: how far is it to town?'}],
          'max_tokens': max_tokens, 'temperature': temperature, 'seed': seed}


async def _level(url: str, clients: int, rounds: int, max_tokens: int, temperature: float, seed0: int) -> dict:
  """clients concurrent clients, each sending `rounds` requests back to back on its connection."""
  latencies, tokens = [], []
  host, port = url.removeprefix('http://').split(':')

  async def client(c):
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
      for r in range(rounds):
        body = _body(seed0 + c * rounds + r, max_tokens, temperature)
        start = time.perf_counter()
        response = await _post(reader, writer, f'{host}:{port}', '/v1/chat/completions', body)
        latencies.append(time.perf_counter() - start)
        tokens.append(response['usage']['completion_tokens'])
    finally:
      writer.close()

  start, cpu = time.perf_counter(), time.process_time()
  await asyncio.gather(*(client(c) for c in range(clients)))
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  return {'clients': clients, 'requests': len(latencies), 'wall_s': round(wall, 2),
          'requests_per_s': round(len(latencies) / wall, 2), 'tokens_per_s': round(sum(tokens) / wall, 1),
          'mean_tokens': round(float(np.mean(tokens)), 1),
          'p50_latency_s': round(float(np.percentile(latencies, 50)), 3),
          'p99_latency_s': round(float(np.percentile(latencies, 99)), 3),
          'clients_cpu': round(cpu / wall, 3)}  # cores the clients used (of the machine's)


def run(clients: list[int], max_tokens: int = 64, min_requests: int = 64, temperature: float = 1.0,
        steps_per_call: int = 8, workdir: str | None = None) -> list[dict]:
  """One result per level (clients), each with its tokens/s over the first level's."""
  import httpx
  from llm import hostinfo
  logging.getLogger('httpx').setLevel(logging.WARNING)  # a line per request otherwise
  tmp = Path(tempfile.mkdtemp(prefix='bench_serve_'))
  server = None
  try:
    run_dir = Path(workdir) if workdir else write_random_run(tmp / 'run')
    port = _free_port()
    url = f'http://127.0.0.1:{port}'
    env = dict(os.environ, JAX_PLATFORMS=_SERVER_PLATFORM)
    server = subprocess.Popen([sys.executable, '-m', 'llm.serve', f'--workdir={run_dir}', f'--port={port}',
                               f'--slots={max(clients)}', f'--queue={max(clients)}',
                               f'--steps_per_call={steps_per_call}'], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(tmp / 'server.log', 'w'))
    deadline = time.time() + 600
    while True:
      if server.poll() is not None:
        raise RuntimeError(f'the server exited ({server.returncode}): {(tmp / "server.log").read_text()[-2000:]}')
      try:
        if httpx.get(url + '/health', timeout=5).status_code == 200:
          break
      except httpx.TransportError:
        pass
      if time.time() > deadline:
        raise RuntimeError('the server did not answer /health within 600 s')
      time.sleep(0.5)
    results = []
    for i, c in enumerate(clients):
      rounds = max(2, -(-min_requests // c))
      asyncio.run(_level(url, c, rounds, max_tokens, temperature, seed0=10**6 * (i + 1)))  # untimed: compiles
      result = asyncio.run(_level(url, c, rounds, max_tokens, temperature, seed0=0))
      result['tokens_per_s_vs_first'] = round(result['tokens_per_s'] / (results or [result])[0]['tokens_per_s'], 2)
      result['host'] = hostinfo.describe(_SERVER_PLATFORM)  # the server's devices, not this process's
      print(json.dumps(result), flush=True)
      results.append(result)
    return results
  finally:
    if server is not None:
      server.terminate()
      server.wait(timeout=60)
    shutil.rmtree(tmp, ignore_errors=True)
