"""The HTTP side: OpenAI's /v1/chat/completions and /v1/completions (with server-sent events
when stream is set), /v1/models, /health, and the chat page at /.

Every request is checked before it reaches the batcher; anything wrong with it is a 400 whose
message says what and how to fix it, in OpenAI's error shape, so clients raise it as they would
OpenAI's. A client that goes away has its row freed (the batcher drops cancelled requests).
"""
import asyncio
import json
import secrets
import time
from pathlib import Path

import fastapi
from fastapi import exceptions, responses
from starlette.exceptions import HTTPException

from llm import chat_template, tokenizer as tokenizer_lib
from llm.serve import schema
from llm.serve.batcher import Batcher, QueueFull, Request
from llm.serve.text import TextStream, parse_parts

PAGE = Path(__file__).with_name('static') / 'index.html'


class ApiError(Exception):
  """A request refused with a message for the client, in OpenAI's error shape (400 unless said)."""

  def __init__(self, message: str, status: int = 400, kind: str = 'invalid_request_error'):
    super().__init__(message)
    self.status, self.kind = status, kind


def _error(status: int, message: str, kind: str = 'invalid_request_error', headers=None) -> responses.JSONResponse:
  return responses.JSONResponse({'error': {'message': message, 'type': kind, 'param': None, 'code': None}},
                                status_code=status, headers=headers)


def _refusal(request: fastapi.Request, exc: HTTPException) -> str:
  """What FastAPI's own refusals (no such route, another method, a body it could not read) say, as
  a sentence naming the fix."""
  asked = f'{request.method} {request.url.path}'
  if exc.status_code == 404:
    routes = [route for route in request.app.routes if isinstance(route, fastapi.routing.APIRoute)]  # not /docs
    served = ', '.join(f'{method} {route.path_format}' for route in routes for method in sorted(route.methods))
    return f'there is no {asked} here; this server answers {served}'
  if exc.status_code == 405:
    return f'{asked} is not answered: send {exc.headers["Allow"]} {request.url.path}'
  if isinstance(exc.__cause__, UnicodeDecodeError):  # invalid JSON is a validation error, described by _describe
    bad = exc.__cause__
    return (f'the request body is not valid UTF-8 JSON (byte 0x{bad.object[bad.start]:02x} at position {bad.start}: '
            f'{bad.reason}): send it encoded as UTF-8')
  return f'{asked}: {exc.detail}'


def _is_branch(part) -> bool:
  """Whether a location part names a branch of a union type (str, list[str]) rather than a field."""
  return isinstance(part, str) and (not part.isidentifier() or part in ('str', 'int', 'float', 'bool'))


def _is_json(content_type: str | None) -> bool:
  """Whether FastAPI reads a body of this Content-Type as JSON (application/json, application/*+json)."""
  kind = (content_type or '').split(';')[0].strip().lower()
  return kind == 'application/json' or (kind.startswith('application/') and kind.endswith('+json'))


def _describe(errors: list[dict], content_type: str | None) -> str:
  """pydantic's validation errors as a sentence: the first one; for a union, the error inside the
  branch that took the input's type (content: a list whose part is an image), else every branch's
  (stop: 5, 'Input should be a valid string or Input should be a valid array').
  content_type: the request's header, which decides whether its body was read as JSON at all."""
  path = lambda e: [x for x in e['loc'] if x != 'body']
  error, loc = errors[0], path(errors[0])
  if loc and _is_branch(loc[-1]):
    union = loc[:-1]
    tried = [e for e in errors if len(path(e)) > len(union) and path(e)[:len(union)] == union
             and _is_branch(path(e)[len(union)])]
    within = [e for e in tried if len(path(e)) > len(union) + 1 or not e['type'].endswith('_type')]
    if within:  # a branch took the input's JSON type (a list) and failed inside it: that failure is the one to tell
      error, loc = within[0], [x for x in path(within[0]) if not _is_branch(x)]
    else:
      error, loc = dict(error, msg=' or '.join(e['msg'] for e in tried)), union
  where = '.'.join(str(x) for x in loc)
  if error['type'] == 'json_invalid':
    return f'the request body is not valid JSON ({error.get("ctx", {}).get("error", error["msg"])})'
  if error['type'] == 'extra_forbidden':
    return f'unknown field {where!r}: this server takes OpenAI\'s fields (see the README\'s Serving section)'
  if error['type'] == 'missing':
    return f'field {where!r} is required' if where else 'the request body is empty: send a JSON object'
  if not where and not _is_json(content_type):  # the body was never parsed, so it is no object whatever it holds
    sent = f'its Content-Type is {content_type!r}' if content_type else 'it has no Content-Type header'
    return (f'the request body was not read as JSON: {sent}; send the header Content-Type: application/json '
            "(curl: -H 'Content-Type: application/json')")
  if not where:
    return f'the request body must be a JSON object ({error["msg"]})'
  return f'{where}: {error["msg"]}'


class _BodyLimit:
  """Refuses a body over the limit: by its Content-Length before reading it, or, sent chunked
  (no Content-Length), once the bytes read pass the limit; a chunked body within it is handed on
  whole. Plain ASGI: a BaseHTTPMiddleware would hide the client's disconnect from the endpoints."""

  def __init__(self, app, limit: int):
    self.app, self.limit = app, limit

  async def __call__(self, scope, receive, send):
    if scope['type'] != 'http':
      return await self.app(scope, receive, send)
    size = dict(scope.get('headers', ())).get(b'content-length')
    if size is not None:
      size = size.decode('latin-1')
      if not size.isdigit() or int(size) > self.limit:
        return await _error(400, f'the request body is {size} bytes; the limit is {self.limit}')(scope, receive, send)
    elif scope['method'] not in ('GET', 'HEAD', 'OPTIONS'):
      body = bytearray()
      while True:
        message = await receive()
        if message['type'] != 'http.request':
          return  # the client left before its body ended
        body += message.get('body', b'')
        if len(body) > self.limit:
          return await _error(400, f'the request body is over {self.limit} bytes (sent chunked); the limit is '
                                   f'{self.limit}')(scope, receive, send)
        if not message.get('more_body'):
          break
      receive = _replay(bytes(body), receive)
    await self.app(scope, receive, send)


def _replay(body: bytes, receive):
  """An ASGI receive that hands out `body` first, then whatever comes (the client's disconnect)."""
  pending = [{'type': 'http.request', 'body': body, 'more_body': False}]

  async def replayed():
    return pending.pop() if pending else await receive()

  return replayed


def has_chat_tokens(tokenizer) -> bool:
  """Whether the tokenizer has the chat template's special tokens: a base model imported with
  --chat_tokens=false has none, and is served plain completions only (and no tools)."""
  return all(tokenizer.has_special(token) for token in tokenizer_lib.SPECIAL_TOKENS)


def create_app(batcher: Batcher, tokenizer, model_id: str, *, max_messages: int = 64,
               max_body_bytes: int = 1 << 20) -> fastapi.FastAPI:
  """The app over a batcher (started and stopped with the app) whose engine serves model_id."""
  context = batcher.engine.cache_len
  serves_chat = has_chat_tokens(tokenizer)
  page = PAGE.read_text()

  async def lifespan(app):
    batcher.start()
    try:
      yield
    finally:  # also when cancelled: a second Ctrl-C skips the shutdown event, and the thread must
      batcher.close()  # not be inside XLA when the interpreter exits (it aborts)

  app = fastapi.FastAPI(title='llm', lifespan=lifespan)

  @app.exception_handler(exceptions.RequestValidationError)
  async def invalid(request, exc):
    return _error(400, _describe(exc.errors(), request.headers.get('content-type')))

  @app.exception_handler(ApiError)
  async def bad(request, exc):
    return _error(exc.status, str(exc), exc.kind)

  @app.exception_handler(HTTPException)
  async def refused(request, exc):
    return _error(exc.status_code, _refusal(request, exc), headers=exc.headers)

  app.add_middleware(_BodyLimit, limit=max_body_bytes)

  @app.get('/', response_class=responses.HTMLResponse)
  async def index():
    return page

  @app.get('/health')
  async def health():
    return {'status': 'ok', 'model': model_id, 'context': context, 'slots': batcher.max_slots,
            'running': batcher.active, 'waiting': batcher.queued, 'finished': dict(batcher.finished)}

  served = {'id': model_id, 'object': 'model', 'created': 0, 'owned_by': 'llm'}

  @app.get('/v1/models')
  async def models():
    return {'object': 'list', 'data': [served]}

  @app.get('/v1/models/{model:path}')  # path: another server's ids may hold a slash (org/name)
  async def model(model: str):
    check_model(model)
    return served

  def check_model(model: str | None):
    if model not in (None, model_id):
      raise ApiError(f'model {model!r} is not served here; GET /v1/models lists {model_id!r}', 404,
                     'not_found_error')

  def budget(prompt: list[int], asked: int | None, shorten: str, field: str = 'max_tokens') -> int:
    """The tokens the completion may have; shorten: how to make a prompt over the context fit;
    field: the request's field that asked for `asked`."""
    if len(prompt) >= context:
      raise ApiError(f'the prompt is {len(prompt)} tokens and this model\'s context is {context}: {shorten}')
    room = context - len(prompt)
    if asked is not None and asked > room:
      raise ApiError(f'this model\'s context is {context} tokens, and {len(prompt) + asked} were asked for '
                     f'({len(prompt)} in the prompt, {asked} in the completion): set {field} to at most '
                     f'{room}, or {shorten}')
    return room if asked is None else asked

  def chat_prompt(body: schema.ChatRequest, asked: int | None) -> tuple[list[int], int]:
    """(prompt ids, how many of the oldest messages fit_history dropped); asked: the completion's
    tokens asked for."""
    if not serves_chat:
      raise ApiError(f'model {model_id!r} has no chat template tokens (imported with --chat_tokens=false): send its '
                     'text to /v1/completions, or import it again with --chat_tokens=true and fine-tune it to chat')
    if len(body.messages) > max_messages and not body.fit_history:
      raise ApiError(f'{len(body.messages)} messages; at most {max_messages} are taken: drop the oldest (or set '
                     'fit_history)')
    messages = []
    for m in body.messages:
      role = 'system' if m.role == 'developer' else m.role
      messages.append({'role': role, 'content': parse_parts(m.text()) if role == 'assistant' else m.text()})
    try:
      if not body.fit_history:
        return chat_template.render_prompt(tokenizer, messages), 0
      system = next((i for i, m in enumerate(messages) if m['role'] != 'system'), len(messages))
      # Without max_tokens the reply is left a quarter of the context (a chat page sends none, and
      # a long history would otherwise leave it a few tokens); more than the context asked for is
      # left to budget() to refuse, naming the field.
      room = max(context // 4, chat_template.MIN_NEW_TOKENS) if asked is None else min(asked, context)
      kept, prompt = chat_template.fit_history(tokenizer, messages, system, context, room, max_messages)
    except ValueError as e:
      raise ApiError(f'messages: {e}') from None
    if len(kept) > max_messages:  # system messages, all kept, are over the limit
      raise ApiError(f'{len(kept)} messages after fit_history, {system} of them system messages; at most '
                     f'{max_messages} are taken')
    return prompt, len(messages) - len(kept)

  async def run(http: fastapi.Request, body, prompt: list[int], max_new: int, stop_ids, kind: str,
                headers: dict[str, str]):
    loop, events, parts = asyncio.get_running_loop(), asyncio.Queue(), []

    def emit(event):  # from the batcher's thread
      if 'text' in event and not body.stream:
        # A whole reply is sent at its end: its text is kept here, so the event loop wakes once per
        # request instead of once per decode pass (a wake-up per row per pass costs the decode
        # loop CPU time at 32 clients).
        parts.append(event['text'])
        return
      try:
        loop.call_soon_threadsafe(events.put_nowait, event)
      except RuntimeError:  # the event loop has closed: the server is shutting down
        pass

    seed = secrets.randbelow(2**31) if body.seed is None else body.seed
    request = Request(prompt, max_new, TextStream(tokenizer, body.stops(), stop_ids, incremental=bool(body.stream)), emit,
                      temperature=body.temperature, top_k=body.top_k, top_p=body.top_p, seed=seed, stop_ids=stop_ids)
    try:
      batcher.submit(request)
    except QueueFull as e:
      raise ApiError(f'the server is busy: {e}', 429, 'rate_limit_error') from None
    reply, received = _Reply(kind, model_id), _until_gone(http, request, events)
    if body.stream:
      include_usage = bool(body.stream_options and body.stream_options.include_usage)
      return responses.StreamingResponse(_sse(received, reply, include_usage), media_type='text/event-stream',
                                         headers={'Cache-Control': 'no-cache', **headers})
    async for event in received:  # only the last event: the text is in parts
      if 'error' in event:
        return _error(500, event['error'], 'server_error')
      return responses.JSONResponse(reply.whole(''.join(parts), event['finish'], event['usage']), headers=headers)

  @app.post('/v1/chat/completions')
  async def chat(body: schema.ChatRequest, http: fastapi.Request):
    check_model(body.model)
    field = 'max_completion_tokens' if body.max_completion_tokens else 'max_tokens'  # OpenAI's newer name wins
    # Tokenizing (up to a 1 MB body, and fit_history) off the event loop: the other streams go on.
    prompt, dropped = await asyncio.to_thread(chat_prompt, body, getattr(body, field))
    max_new = budget(prompt, getattr(body, field), 'shorten the messages, or set fit_history to drop the oldest',
                     field)
    headers = {'X-Messages-Dropped': str(dropped)} if body.fit_history else {}
    return await run(http, body, prompt, max_new, tuple(chat_template.turn_stop_ids(tokenizer)), 'chat',
                     headers)

  @app.post('/v1/completions')
  async def complete(body: schema.CompletionRequest, http: fastapi.Request):
    check_model(body.model)
    prompt = [tokenizer.bos_id] + await asyncio.to_thread(tokenizer.encode, body.prompt)
    max_new = budget(prompt, body.max_tokens, 'shorten the prompt')
    return await run(http, body, prompt, max_new, tuple(tokenizer.stop_ids), 'text', {})

  return app


class _Reply:
  """OpenAI's response and chunk objects for one request ('chat' or 'text' completion)."""

  def __init__(self, kind: str, model_id: str):
    self.kind, self.model = kind, model_id
    self.id = ('chatcmpl-' if kind == 'chat' else 'cmpl-') + secrets.token_hex(12)
    self.created = int(time.time())

  def _object(self, suffix: str, choices: list, usage=None) -> dict:
    obj = {'id': self.id, 'object': ('chat.completion' if self.kind == 'chat' else 'text_completion') + suffix,
           'created': self.created, 'model': self.model, 'choices': choices}
    if usage is not None:
      obj['usage'] = usage
    return obj

  def _choice(self, text: str | None, finish: str | None, delta: bool) -> dict:
    if self.kind == 'text':
      return {'index': 0, 'text': text or '', 'finish_reason': finish, 'logprobs': None}
    content = {} if text is None else {'content': text}
    if delta:
      return {'index': 0, 'delta': content, 'finish_reason': finish, 'logprobs': None}
    return {'index': 0, 'message': {'role': 'assistant', **content}, 'finish_reason': finish, 'logprobs': None}

  def whole(self, text: str, finish: str, usage: dict) -> dict:
    return self._object('', [self._choice(text, finish, False)], _usage(usage))

  def chunk(self, text: str | None, finish: str | None = None) -> dict:
    return self._object('.chunk' if self.kind == 'chat' else '', [self._choice(text, finish, True)])

  def opening(self) -> dict:
    """A chat stream's first chunk, which names the role."""
    return self._object('.chunk', [{'index': 0, 'delta': {'role': 'assistant', 'content': ''}, 'finish_reason': None,
                                    'logprobs': None}])

  def usage_chunk(self, usage: dict) -> dict:
    return self._object('.chunk' if self.kind == 'chat' else '', [], _usage(usage))


def _usage(usage: dict) -> dict:
  """OpenAI's token counts, and tool_calls: the calls run on the server for the reply (an addition)."""
  return {k: usage[k] for k in ('prompt_tokens', 'completion_tokens', 'total_tokens', 'tool_calls')}


async def _until_gone(http: fastapi.Request, request: Request, events: asyncio.Queue):
  """The request's events up to its last; if the client disconnects first (checked every half
  second), the request is cancelled and its row freed."""
  checked = time.monotonic()
  try:
    while True:
      try:
        event = await asyncio.wait_for(events.get(), 0.5)
      except asyncio.TimeoutError:
        event = None
      if time.monotonic() - checked > 0.5:
        if await http.is_disconnected():
          return
        checked = time.monotonic()
      if event is None:
        continue
      yield event
      if 'text' not in event:
        return
  finally:
    request.cancel()  # no-op for a finished request


async def _sse(received, reply: _Reply, include_usage: bool):
  """data: {chunk} lines, then data: [DONE]."""
  data = lambda obj: f'data: {json.dumps(obj)}\n\n'
  if reply.kind == 'chat':
    yield data(reply.opening())
  async for event in received:
    if 'error' in event:
      yield data({'error': {'message': event['error'], 'type': 'server_error', 'param': None, 'code': None}})
      return
    if 'text' in event:
      yield data(reply.chunk(event['text']))
    else:
      yield data(reply.chunk(None, event['finish']))
      if include_usage:
        yield data(reply.usage_chunk(event['usage']))
  yield 'data: [DONE]\n\n'
