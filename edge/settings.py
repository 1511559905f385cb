"""The one settings object of the runtime: env vars `KIOSK_<NAME>` map 1:1 to its fields."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_MARKERS = ("change-me", "changeme", "placeholder", "example")


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

    # --- server -----------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address `edge serve` listens on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port `edge serve` listens on.")
    app_keys: list[SecretStr] = Field(
        default_factory=list,
        description="App API keys kiosks send as `Authorization: Bearer <key>` (JSON list). Stored hashed.",
    )
    max_body_bytes: int = Field(default=65536, ge=1024, description="Largest accepted request body.")
    max_query_chars: int = Field(default=2000, ge=16, description="Longest accepted customer question.")
    rate_limit_per_s: float = Field(default=20.0, gt=0, description="Token-bucket refill rate per app key.")
    rate_limit_burst: int = Field(default=40, ge=1, description="Token-bucket size per app key.")

    # --- assistant ----------------------------------------------------------------------------
    app_name: str = Field(default="Store assistant", description="Name shown by GET /v1/info.")
    opening_statement: str = Field(
        default="Hello! I can help with orders, deliveries, refunds and your account.",
        description="Shown by GET /v1/parameters.",
    )
    suggested_questions: list[str] = Field(
        default_factory=lambda: [
            "Where is my refund?",
            "Can I change my delivery address?",
            "How do I cancel my order?",
        ],
        description="Tappable questions shown by GET /v1/parameters.",
    )
    store_variables: dict[str, str] = Field(
        default_factory=lambda: {"Store Name": "our store", "Opening Hours": "9:00-20:00"},
        description="Values for {{Slot}} placeholders in curated answers.",
    )
    curated_answers_csv: Path = Field(
        default=Path("models/data/bitext_retail/intent_responses.csv"),
        description="CSV `label,answer` seeding curated answers on first start.",
    )
    history_turns: int = Field(default=5, ge=0, le=50, description="Past turns the LLM sees.")
    llm_floor: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Below this intent confidence nothing is relevant enough: hand off to staff.",
    )
    system_prompt: str = Field(
        default="You are the customer-service assistant of a retail store. Answer in one or two short, "
        "polite sentences, using only the store information given. If you are not sure, offer to call a "
        "staff member.",
        description="System prompt of the local LLM.",
    )
    handoff_message: str = Field(
        default="I'm not sure I can answer that well. Let me call a colleague to help you.",
        description="Answer given when the box hands the customer to staff.",
    )
    cache_size: int = Field(default=2000, ge=0, description="Hot-answer cache entries (0 disables it).")
    cache_ttl_s: float = Field(default=600.0, ge=0, description="Hot-answer cache lifetime in seconds.")

    # --- LLM ------------------------------------------------------------------------------------
    llm_threads: int = Field(default=1, ge=1, le=64, description="llama.cpp threads (one leaves a core for HTTP).")
    llm_context: int = Field(default=2048, ge=256, description="llama.cpp context length.")
    llm_max_queue: int = Field(default=8, ge=1, description="Waiting LLM requests before 503.")
    llm_time_budget_s: float = Field(default=30.0, gt=0, description="Longest a generation may run.")
    llm_max_tokens: int = Field(default=160, ge=1, description="Most tokens in one LLM answer.")

    @field_validator("app_keys")
    @classmethod
    def _refuse_placeholder_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            value = key.get_secret_value()
            if len(value) < 12 or any(marker in value.lower() for marker in PLACEHOLDER_MARKERS):
                raise ValueError("app keys must be real secrets (12+ characters, not a placeholder)")
        return keys

    @property
    def database_path(self) -> Path:
        return self.data_dir / "kiosk.sqlite3"
