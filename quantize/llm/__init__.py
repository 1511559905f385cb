"""The LLM half of the build side: Hugging Face checkpoints ⇄ GGUF, k-quants, measurement, choice."""
