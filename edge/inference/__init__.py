"""Torch-free inference on bundle components: onnxruntime + tokenizers (and llama.cpp later)."""
