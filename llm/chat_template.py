"""Conversations <-> token ids, one renderer for training and for inference.

    [bos] <|system|> text <|end|> <|user|> text <|end|>
          <|assistant|> text <|tool_call|> calculator: 48/2 <|/tool_call|>
                        <|tool_result|> 24 <|/tool_result|> text <|end|> ...

Tool calls and their results live inside the assistant turn (as in nanochat): the model writes
the call, the engine runs the tool and force-feeds the result, the model goes on. The loss mask
is 1 exactly on what the assistant produces (its text, its tool calls with their delimiters, its
<|end|>) and 0 on everything the engine or the user supplies (bos, role tokens, system and user
text, tool results with their delimiters).

A message is {'role': 'system' | 'user' | 'assistant', 'content': str | list of parts}, where an
assistant's parts are {'type': 'text' | 'tool_call' | 'tool_result', 'text': str}.
"""
import itertools

from llm import tools

ROLES = ('system', 'user', 'assistant')
PART_TYPES = ('text', 'tool_call', 'tool_result')
# Longest tool result in tokens, delimiters included: the engine force-feeds a result from a
# queue this long, and training renders results cut the same way, so both see the same tokens.
MAX_TOOL_RESULT_TOKENS = 256
MIN_NEW_TOKENS = 16  # room fit_history leaves for the reply, at least (less only where less was asked)


# render / render_prompt as a Jinja chat template, for transformers' apply_chat_template and vLLM
# (the exporter writes it into tokenizer_config.json): the same ids for system, user and assistant
# messages, their content a string or parts, tool calls and results among them (not OpenAI's
# tool_calls field; its 'tool' role is refused in both). Three limits: render encodes each part on
# its own, the template's tokenizer all the text between two special tokens, so two text parts in
# a row may share a token there; a tool result past MAX_TOOL_RESULT_TOKENS is cut here only; a
# special token's string inside a message (a user writing '<|end|>') is its characters here and
# that special token there.
JINJA = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('message role ' ~ message['role'] ~ '; choose one of system, user, assistant') -}}"
    "{%- endif -%}"
    "{{- '<|' ~ message['role'] ~ '|>' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'tool_call' -%}{{- '<|tool_call|>' ~ part['text'] ~ '<|/tool_call|>' -}}"
    "{%- elif part['type'] == 'tool_result' -%}{{- '<|tool_result|>' ~ part['text'] ~ '<|/tool_result|>' -}}"
    "{%- else -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}")


def _parts(message) -> list[dict]:
  content = message['content']
  return [{'type': 'text', 'text': content}] if isinstance(content, str) else list(content)


def turn_stop_ids(tokenizer) -> list[int]:
  """The ids an assistant turn ends at: <|end|>, and the tokenizer's stop ids (eos; an imported
  model's own end-of-turn ids too, such as Llama 3's <|eot_id|>, which it may still write)."""
  return list(dict.fromkeys([tokenizer.special_id('<|end|>'), *tokenizer.stop_ids]))


def render(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
  """A whole conversation -> (ids, loss_mask) of equal length: bos, then each message rendered on
  its own (render_message), so a conversation's length is 1 + its messages' lengths."""
  ids, mask = [tokenizer.bos_id], [0]
  for message in messages:
    message_ids, message_mask = render_message(tokenizer, message)
    ids += message_ids
    mask += message_mask
  return ids, mask


def render_message(tokenizer, message: dict) -> tuple[list[int], list[int]]:
  """One message -> (ids, loss_mask): its role token, its parts, <|end|>."""
  sp = tokenizer.special_id
  ids, mask = [], []

  def add(new_ids, trained: bool):
    ids.extend(new_ids)
    mask.extend([int(trained)] * len(new_ids))

  role = message.get('role')
  if role not in ROLES:
    raise ValueError(f'message role {role!r}; choose one of {ROLES}')
  is_assistant = role == 'assistant'
  add([sp(f'<|{role}|>')], False)
  for part in _parts(message):
    kind = part.get('type')
    if kind not in PART_TYPES or (kind != 'text' and not is_assistant):
      raise ValueError(f'a {role} message cannot hold a part of type {kind!r}')
    if kind == 'text':
      add(tokenizer.encode(part['text']), is_assistant)
    elif kind == 'tool_call':
      add([sp('<|tool_call|>')] + tokenizer.encode(part['text']) + [sp('<|/tool_call|>')], True)
    else:
      add(tool_result_ids(tokenizer, part['text']), False)
  add([sp('<|end|>')], is_assistant)
  return ids, mask


def trained_text_bytes(message: dict) -> int:
  """UTF-8 bytes of the text render_message trains on in message: an assistant's text and tool-call
  parts (the special tokens around them stand for no text). What bits per byte divides by."""
  if message.get('role') != 'assistant':
    return 0
  return sum(len(part['text'].encode()) for part in _parts(message) if part.get('type') in ('text', 'tool_call'))


def tool_result_ids(tokenizer, text: str) -> list[int]:
  """<|tool_result|> text <|/tool_result|>, the text cut to MAX_TOOL_RESULT_TOKENS in all with a
  visible marker (llm.tools.TRUNCATED) before its last line where it is longer: the one place
  results are cut, for the engine and for training alike."""
  sp = tokenizer.special_id
  body = tokenizer.encode(text)
  room = MAX_TOOL_RESULT_TOKENS - 2
  if len(body) > room:
    head, last_line = tools.split_last_line(text)
    body = tools.cut_keeping_last_line(tokenizer.encode(head), tokenizer.encode(last_line), room,
                                       tokenizer.encode(tools.TRUNCATED))
  return [sp('<|tool_result|>')] + body + [sp('<|/tool_result|>')]


def render_prompt(tokenizer, messages: list[dict]) -> list[int]:
  """The conversation so far plus the assistant role token: what the engine continues."""
  _check_asks(messages)
  return _prompt(tokenizer, [render_message(tokenizer, m)[0] for m in messages])


def _check_asks(messages: list[dict]):
  if messages and messages[-1]['role'] == 'assistant':
    raise ValueError('the prompt must end with a user (or system) turn, not an assistant turn')


def _prompt(tokenizer, rendered: list[list[int]]) -> list[int]:
  """render_prompt's ids from each message's render_message ids."""
  return [tokenizer.bos_id, *itertools.chain.from_iterable(rendered), tokenizer.special_id('<|assistant|>')]


def fit_history(tokenizer, messages: list[dict], keep: int, context: int, room: int = MIN_NEW_TOKENS,
                max_messages: int | None = None) -> tuple[list[dict], list[int]]:
  """(messages, prompt ids): the oldest exchanges after the first `keep` messages (the system
  turn) dropped, a user turn with the assistant's reply to it, until at most max_messages are left
  (counted first: no rendering for them) and the prompt leaves `room` tokens of the context free.
  The last message, the one just asked, always stays, leaving the reply less than `room` where it
  alone is that long: when it leaves less than min(room, MIN_NEW_TOKENS), ValueError says so.
  llm.chat keeps its history with this, and the server a request's with fit_history."""
  _check_asks(messages)
  messages = list(messages)

  def oldest_exchange_end() -> int:
    """Where the oldest exchange after the kept messages ends: its reply goes with a user turn, so
    a history starts with a user turn."""
    return keep + (2 if messages[keep + 1]['role'] == 'assistant' else 1)

  while max_messages is not None and len(messages) > max(max_messages, keep + 1):
    del messages[keep:oldest_exchange_end()]
  # Each message rendered once: a prompt is bos, the messages, <|assistant|>, and its length goes
  # down by what each dropped message added (rendering the rest again per drop is quadratic).
  rendered = [render_message(tokenizer, m)[0] for m in messages]
  length = 2 + sum(map(len, rendered))
  while length + room > context and len(messages) - keep > 1:
    end = oldest_exchange_end()
    length -= sum(map(len, rendered[keep:end]))
    del messages[keep:end], rendered[keep:end]
  prompt = _prompt(tokenizer, rendered)
  least = min(room, MIN_NEW_TOKENS)
  if len(prompt) + least > context:
    raise ValueError(f'the message is {len(prompt)} tokens with the template, and this model\'s context is '
                     f'{context} with {least} kept for the reply: shorten it')
  return messages, prompt


def parse_assistant(tokenizer, ids: list[int]) -> list[dict]:
  """Generated assistant ids (after <|assistant|>) -> parts, stopping at <|end|>."""
  sp = tokenizer.special_id
  delimiters = {sp('<|tool_call|>'): ('tool_call', sp('<|/tool_call|>')),
                sp('<|tool_result|>'): ('tool_result', sp('<|/tool_result|>'))}
  parts, kind, buf, closer = [], 'text', [], None

  def flush():
    if buf:
      parts.append({'type': kind, 'text': tokenizer.decode(buf)})
    buf.clear()

  for t in ids:
    if t == sp('<|end|>'):
      break
    if kind == 'text' and t in delimiters:
      flush()
      kind, closer = delimiters[t]
    elif t == closer:
      flush()
      kind, closer = 'text', None
    else:
      buf.append(t)
  flush()
  return parts
