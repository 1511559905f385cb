"""The one settings object of the runtime: env vars `KIOSK_<NAME>` map 1:1 to its fields."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Effective configuration of a box, passed down explicitly (never read from globals)."""

    model_config = SettingsConfigDict(env_prefix="KIOSK_", extra="forbid")

    bundle_dir: Path = Field(default=Path("models/default"), description="Directory of the model bundle to serve.")
    data_dir: Path = Field(default=Path("data"), description="Where the box keeps SQLite and state.")
    intent_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="onnxruntime intra-op threads per intent query. One: two threads collapse when "
        "the LLM competes for the cores (see bench/intent.py, 'under load').",
    )
    intent_workers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Concurrent batch-1 intent runs. Queries are never batched together, so one "
        "customer's answer cannot depend on another's (dynamic INT8 is not batch-invariant).",
    )
    embedder_threads: int = Field(default=1, ge=1, le=64, description="onnxruntime threads of the embedder.")
    verify_bundle: bool = Field(default=True, description="Check every bundle file's sha256 before loading it.")
