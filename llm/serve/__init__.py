"""Serving a run over HTTP: python -m llm.serve --workdir=DIR [--host=127.0.0.1] [--port=8000]

app.py is the OpenAI-compatible API and the chat page (static/index.html), schema.py its request
bodies, batcher.py the continuous-batching loop over the engine, text.py ids -> streamed text.
"""
