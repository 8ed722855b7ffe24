"""Hugging Face checkpoints in and out: GPT-2, Llama-style and Qwen3 models (python -m llm.hf).

importer.py    HF directory -> run; parameters placed shard by shard onto the mesh
exporter.py    run -> HF directory that transformers' from_pretrained loads
two_files.py   run -> float16 parameters + numpy_sampler.py, a numpy-only greedy decoder
gpt2.py, llama.py, architectures.py   config fields and tensor layouts, both ways; which applies
weights.py     safetensors read as memory maps (bfloat16 included), written with safetensors
tokenizer.py   the model's own tokenizer (the `tokenizers` package) behind llm.tokenizer's interface
sentencepiece_json.py   a SentencePiece tokenizer.model (a Llama's, or our runs') as an exact tokenizer.json
params.py      our parameter tree as flat per-layer paths; errors.py  the one-line refusal
"""
