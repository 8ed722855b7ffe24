"""The one error a checkpoint we cannot convert gives: a line naming the field and why."""


class UnsupportedCheckpoint(ValueError):
  pass


def refuse(field: str, value, why: str):
  raise UnsupportedCheckpoint(f'{field}={value!r} cannot be mapped: {why}')
