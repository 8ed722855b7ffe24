"""OpenAI's request bodies for chat and plain completions, as pydantic models.

Unknown fields are refused (extra='forbid'), so a misspelt knob is a 400 naming it rather than
silently ignored, and so are values of the wrong JSON type (strict): max_tokens true or 5.0,
temperature "0" (an integer is taken where a number is asked for). Fields of OpenAI's schema that this server cannot honour accept only their
neutral value (n=1, presence_penalty=0, frequency_penalty=0, logprobs=false, echo=false), so
clients that send the defaults explicitly work. null, where OpenAI's schema allows it, means the
default. top_k is an addition (as vLLM has it), and so is a chat's fit_history.
"""
import json
import re
from typing import Annotated, Literal

import pydantic
from pydantic import Field
from pydantic_core import PydanticCustomError

# A stop string's length: the text is searched for each one, and the tail that may begin one held
# back, on the batcher's thread for every row each pass; a few hundred characters is ample for any
# real stop (OpenAI documents no per-string limit).
MAX_STOP_CHARS = 500
# JSON's \ud800 escapes let a string hold half of a surrogate pair, a character with no UTF-8 form,
# which the tokenizer cannot encode; a paired one was read as the character it stands for.
_SURROGATE = re.compile('[\ud800-\udfff]')


def _utf8(text: str) -> str:
  if (found := _SURROGATE.search(text)):
    raise PydanticCustomError('unpaired_surrogate', 'the text contains an unpaired surrogate, U+{code} (not valid UTF-8)',
                              {'code': f'{ord(found.group()):04X}'})
  return text


# Fields OpenAI's schema lets be null, meaning their default (max_tokens: 16 for a completion, the
# rest of the context for a chat).
_NULL_IS_DEFAULT = ('max_tokens', 'temperature', 'top_p', 'n', 'stream', 'presence_penalty', 'frequency_penalty',
                    'logprobs', 'echo')


def _only(neutral, lacks: str):
  """A field of OpenAI's for what this server lacks: only its neutral value is taken, anything else
  refused saying what the server does not do (lacks) and what to send."""
  def neutral_only(value):
    if value != neutral or isinstance(value, bool) != isinstance(neutral, bool):  # True == 1, but is no count
      raise PydanticCustomError('unsupported', 'this server does not {lacks}; send {neutral} or leave it out',
                                {'lacks': lacks, 'neutral': json.dumps(neutral)})
    return value

  return Annotated[Literal[neutral], pydantic.BeforeValidator(neutral_only)]


class _Strict(pydantic.BaseModel):
  model_config = pydantic.ConfigDict(extra='forbid', strict=True)


class TextPart(_Strict):
  type: Literal['text']
  text: str

  @pydantic.field_validator('type', mode='before')
  @classmethod
  def _text_only(cls, kind):
    if kind != 'text':
      raise PydanticCustomError('part_type', 'a content part of type {kind} is not taken: only {"type": "text"} '
                                'parts are (this model reads no images, audio or files)', {'kind': repr(kind)})
    return kind


class Message(_Strict):
  role: Literal['system', 'developer', 'user', 'assistant']  # developer: OpenAI's newer name for system
  content: str | list[TextPart]
  name: str | None = None

  @pydantic.field_validator('content')
  @classmethod
  def _content_is_utf8(cls, content):
    _utf8(content if isinstance(content, str) else ''.join(p.text for p in content))
    return content

  def text(self) -> str:
    return self.content if isinstance(self.content, str) else ''.join(p.text for p in self.content)


class StreamOptions(_Strict):
  include_usage: bool = False  # a last chunk with the token counts


class _Sampling(_Strict):
  model: str | None = None  # the served model's id (GET /v1/models); omitted means that one
  max_tokens: int | None = Field(None, ge=1)
  # Python's JSON reads NaN and Infinity: refused as such, not as out of range
  temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)  # 0 is greedy
  top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
  top_k: int = Field(0, ge=0, lt=2**31)  # 0: off; the batch holds it as int32
  stop: str | Annotated[list[str], Field(max_length=4)] | None = None  # the text ends before the first one
  seed: int | None = Field(None, ge=0, lt=2**32)  # None: a random one
  stream: bool = False
  stream_options: StreamOptions | None = None
  n: _only(1, 'make more than one choice') = 1
  presence_penalty: _only(0, 'apply penalties') = 0
  frequency_penalty: _only(0, 'apply penalties') = 0
  user: str | None = None

  @pydantic.model_validator(mode='before')
  @classmethod
  def _null_is_the_default(cls, body):
    if isinstance(body, dict):
      return {k: v for k, v in body.items() if not (v is None and k in _NULL_IS_DEFAULT)}
    return body

  @pydantic.field_validator('stop')
  @classmethod
  def _stops_within_limit(cls, stop):
    for s in [stop] if isinstance(stop, str) else stop or []:
      if len(s) > MAX_STOP_CHARS:
        raise PydanticCustomError('stop_too_long', 'a stop string is {length} characters; the limit is {limit}',
                                  {'length': len(s), 'limit': MAX_STOP_CHARS})
    return stop

  def stops(self) -> list[str]:
    return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(_Sampling):
  messages: list[Message] = Field(min_length=1)
  max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens
  logprobs: _only(False, 'return logprobs') = False
  # Drop the oldest exchanges after the system messages until the rest fit the context, leaving
  # room for max_tokens (else a quarter of the context), and the message limit, as llm.chat keeps
  # its history; the response's X-Messages-Dropped header says how many messages went.
  fit_history: bool = False


class CompletionRequest(_Sampling):
  prompt: Annotated[str, pydantic.AfterValidator(_utf8)]
  max_tokens: int = Field(16, ge=1)  # OpenAI's default for completions
  logprobs: _only(None, 'return logprobs') = None  # here how many alternatives to list per token
  echo: _only(False, 'echo the prompt') = False
