"""The one settings object of the runtime: env vars `KIOSK_<NAME>` map 1:1 to its fields."""

from __future__ import annotations

import ipaddress
import json
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge.language import DEFAULT_LANGUAGE, LANGUAGES
from edge.pin import is_pin_digest

PLACEHOLDER_MARKERS = ("change-me", "changeme", "placeholder", "example")
JSON_FORMS = {list: 'a JSON list, e.g. ["first", "second"]', dict: 'a JSON object, e.g. {"name": "value"}'}
PLAIN_TEXT_FOR_EVERY_LANGUAGE = ("opening_statement", "handoff_message", "decline_message", "central_broke_message")


def json_container(annotation: Any) -> type | None:
    """`list` or `dict` when a setting's values are written as JSON (lists, tuples, objects), else None."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        found = {json_container(arg) for arg in get_args(annotation)} - {None}
        return found.pop() if len(found) == 1 else None
    if annotation in (list, tuple, set, dict) or origin in (list, tuple, set, dict):
        return dict if dict in (annotation, origin) else list
    return None


def describe_errors(exc: ValidationError) -> str:
    """One line for the operator: each bad setting by name and env var, and what is wrong (never its value)."""
    problems = []
    for error in exc.errors(include_url=False):
        cause = (error.get("ctx") or {}).get("error")
        message = str(cause) if error["type"] == "value_error" and cause is not None else error["msg"]
        if error["loc"]:
            name, *inside = (str(part) for part in error["loc"])
            where = f" at [{']['.join(inside)}]" if inside else ""
            message = f"invalid setting {name} (KIOSK_{name.upper()}){where}: {message}"
        problems.append(message)
    return "; ".join(problems)


class Settings(BaseSettings):
    """Effective configuration of a box, passed down explicitly (never read from globals)."""

    # JSON values are decoded by `_decode_json` below, which names the setting and the form it expects;
    # pydantic-settings' own decoding fails on a plain value with a traceback that names neither.
    model_config = SettingsConfigDict(
        env_prefix="KIOSK_", extra="forbid", enable_decoding=False, hide_input_in_errors=True
    )

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
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the box answers to (JSON list; `*.example.com` matches subdomains, `*` any). "
        "IP addresses and names without a dot (`localhost`, a LAN host name) are always accepted: kiosks reach "
        "the box by its address (on k3s `http://<node address>:30080/`). A request for another Host gets 421 "
        "`misdirected_request`, so a DNS-rebinding page cannot talk to the box from a shopper's browser.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (JSON list, CIDR) of a TLS proxy in front of the box. Only from them "
        "are `X-Forwarded-Proto` (https: the kiosk cookie is `Secure`) and `X-Forwarded-For` (the client address "
        "rate limits use) believed. Empty: no proxy; the headers are ignored.",
    )
    api_docs: bool = Field(
        default=False,
        description="Serve the interactive API docs at /docs and /redoc. Off by default: those pages load their "
        "scripts from a CDN, blank on an offline box. `/openapi.json` is always served.",
    )

    # --- kiosk page ---------------------------------------------------------------------------
    ui_enabled: bool = Field(
        default=True,
        description="Serve the kiosk chat page at `/` and accept its same-origin session cookie on the chat "
        "routes. Off: `/` is 404 and only app keys are accepted.",
    )
    ui_idle_reset_s: float = Field(
        default=90.0,
        ge=1,
        le=3600,
        description="Seconds without a touch after which the kiosk page clears the conversation and starts "
        "a new session, so the next shopper never sees the previous one's questions.",
    )
    ui_handoff_wait_s: float = Field(
        default=300.0,
        ge=1,
        le=3600,
        description="Seconds without a touch the kiosk page waits, instead of the idle reset, while the "
        "shopper's call for staff is open or claimed: someone waiting for a colleague stands still, and a "
        "reset would take their call off the staff page. Never shorter than the idle reset.",
    )
    ui_language: Literal["en", "zh"] = Field(
        default="en", description="Language the kiosk page starts in, and returns to at every idle reset."
    )
    central_max_age_s: float = Field(
        default=600.0,
        gt=0,
        description="A sync-agent record of central's connectivity older than this is not trusted: the kiosk "
        "page then shows no online/offline indicator (central unknown).",
    )

    # --- assistant ----------------------------------------------------------------------------
    app_name: str = Field(default="Store assistant", description="Name shown by GET /v1/info.")
    opening_statement: dict[str, str] = Field(
        default_factory=lambda: {
            "en": "Hello! Ask me about the store, your orders, deliveries, refunds or your account.",
            "zh": "您好！关于本店、订单、配送、退款或账户的问题，都可以问我。",
        },
        description='Shown by GET /v1/parameters, per language (JSON object `{"en": …, "zh": …}`; a plain '
        "string serves every language).",
    )
    suggested_questions: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "en": ["What are your opening hours?", "Where is my refund?", "How do I cancel my order?"],
            "zh": ["你们几点关门？", "我的退款什么时候到账？", "怎么取消订单？"],
        },
        description="Tappable questions shown by GET /v1/parameters, per language (JSON object of lists; a plain "
        "list serves every language).",
    )
    store_variables: dict[str, str | dict[str, str]] = Field(
        default_factory=lambda: {
            "Store Name": {"en": "our store", "zh": "本店"},
            "Opening Hours": {"en": "from 9:00 to 20:00", "zh": "9:00至20:00"},
        },
        description="Values for the {{Slot}} placeholders of answers: a string for every language, or an object "
        "per language. An answer whose slot has no value in the shopper's language is never shown (the box "
        "hands off); `edge config` and the start-up log list the slots the answers use and the settings lack.",
    )
    curated_answers_csv: Path = Field(
        default=Path("models/data/answers/answers.csv"),
        description="CSV `label,language,question,answer` (or the older `label,answer`, read as English) seeding "
        "the bank of verbatim answers on first start; a label's answer in each language.",
    )
    knowledge_seed_csvs: list[Path] = Field(
        default_factory=list,
        description="CSVs `question,answer` seeding local knowledge on first start, one document each "
        "(the sync agent replaces them with central Dify's datasets). Missing files are skipped.",
    )
    match_min_score: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="Least cosine between a question and one of central's annotations or Q&A segments for its "
        "answer to be given verbatim. Empty: the bundle's calibrated value (report.md, 'Calibration').",
    )
    intent_min_confidence: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Least intent confidence for a curated answer. Empty: the bundle's threshold, calibrated per "
        "language on held-out questions that include near-domain ones the box cannot answer.",
    )
    llm_check: bool = Field(
        default=True,
        description="Check each generated sentence before the shopper sees it: every number, time, price and "
        "name must appear in the grounding, the conversation or the store's settings, else the box hands off. "
        "Off: tokens stream as generated, unchecked (only for a model the chain trusts).",
    )
    llm_languages: list[str] = Field(
        default_factory=lambda: ["en"],
        description="Languages the local LLM may answer in (SmolLM2 writes no Chinese: Chinese answers are "
        "verbatim). A chain's own multilingual GGUF may add `zh`.",
    )
    followup_turns: int = Field(
        default=2,
        ge=0,
        le=5,
        description='Earlier questions read together with one the box cannot place on its own ("how long is it '
        'free for?" after "is there parking?").',
    )
    retrieval_top_k: int = Field(default=2, ge=0, le=20, description="Knowledge segments that ground one LLM answer.")
    retrieval_min_score: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="Least cosine similarity between question and passage for the passage to ground the LLM. "
        "Empty: the bundle's calibrated value (see bench/retrieval.py for how in-scope and out-of-scope "
        "questions score).",
    )
    retrieval_text_weight: float = Field(
        default=0.25,
        ge=0,
        le=4,
        description="Weight of the full-text (FTS5) ranking against the vector ranking (1) in the fused order. "
        "Paraphrases favour vectors; exact rare words (product codes) need full text. See bench/retrieval.py.",
    )
    knowledge_refresh_s: float = Field(
        default=2.0,
        gt=0,
        description="How often the server looks for knowledge and annotations the sync agent changed.",
    )
    grounding_chars_per_source: int = Field(
        default=600, ge=50, description="Longest text of one source in the LLM prompt (cut at a word)."
    )
    grounding_chars: int = Field(
        default=1200,
        ge=50,
        description="Most grounding text in one prompt: every character delays the first token.",
    )
    history_turns: int = Field(default=5, ge=0, le=50, description="Past turns the LLM sees.")
    llm_floor: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Least probability of an intent, short of the confidence a verbatim answer needs, for its "
        "answer to ground the LLM (1: never; the small default LLM paraphrases a wrong intent fluently). "
        "Knowledge passages ground it whatever this says.",
    )
    system_prompt: str = Field(
        default="You are the customer-service assistant of a retail store. Answer in one or two short, "
        "polite sentences, using only the store information given. If you are not sure, offer to call a "
        "staff member.",
        description="System prompt of the local LLM.",
    )
    few_shot: list[tuple[str, str]] = Field(
        default_factory=lambda: [
            (
                "Relevant answers from the store's knowledge:\n"
                "- Q: Can I pay by card?\nA: We accept all major cards.\n\n"
                "Customer question: do you take visa",
                "Yes, we accept Visa and all other major cards.",
            )
        ],
        description="Example (question, answer) turns shown to the LLM after the system prompt, as JSON pairs.",
    )
    handoff_message: dict[str, str] = Field(
        default_factory=lambda: {
            "en": "I'm not sure I can answer that well. Let me call a colleague to help you.",
            "zh": "这个问题我可能答不准确，我请店员来帮您。",
        },
        description="Answer given when the box hands the shopper to staff, per language.",
    )
    decline_message: dict[str, str] = Field(
        default_factory=lambda: {
            "en": "Sorry, I can only help with questions about this store and your orders. "
            "A colleague can help you with anything else.",
            "zh": "抱歉，我只能回答与本店和您的订单有关的问题。其他问题请咨询店员。",
        },
        description="Answer to a question plainly outside what a store assistant does (weather, poems, …), "
        "per language.",
    )
    cache_size: int = Field(default=2000, ge=0, description="Hot-answer cache entries (0 disables it).")
    cache_ttl_s: float = Field(default=600.0, ge=0, description="Hot-answer cache lifetime in seconds.")

    # --- LLM ------------------------------------------------------------------------------------
    llm_threads: int = Field(default=1, ge=1, le=64, description="llama.cpp threads (one leaves a core for HTTP).")
    llm_context: int = Field(default=2048, ge=256, description="llama.cpp context length.")
    llm_max_queue: int = Field(default=8, ge=1, description="Waiting LLM requests before 503.")
    llm_time_budget_s: float = Field(default=30.0, gt=0, description="Longest a generation may run.")
    llm_kv_cache: Literal["f16", "q8_0"] = Field(
        default="q8_0",
        description="Element type of llama.cpp's KV cache: q8_0 halves its memory (uses flash attention; slower "
        "on long prompts, which matters little now that the LLM only grounds passages). f16: faster follow-ups.",
    )
    llm_max_tokens: int = Field(default=160, ge=1, description="Most tokens in one LLM answer.")
    llm_gpu_layers: int = Field(
        default=0,
        ge=-1,
        description="Layers llama.cpp offloads to a GPU (-1: all; Jetson with a CUDA build). 0 on CPU-only boxes.",
    )

    # --- sync with central Dify (`edge sync`) -----------------------------------------------------
    central_url: str = Field(
        default="", description="Central Dify's service API, e.g. https://dify.example.com/v1 (empty: sync off)."
    )
    central_app_key: SecretStr | None = Field(
        default=None, description="App key of the central chat app: parameters and annotations are pulled with it."
    )
    central_dataset_key: SecretStr | None = Field(
        default=None, description="Knowledge (dataset) key: the knowledge bases are pulled with it."
    )
    central_dataset_ids: list[str] = Field(
        default_factory=list, description="Knowledge bases to mirror (JSON list of ids; empty: every one the key sees)."
    )
    central_ingest_key: SecretStr | None = Field(
        default=None,
        description="App key of the ingest workflow app that receives one run per finished conversation.",
    )
    central_transcripts_dataset_id: str = Field(
        default="",
        description="Without an ingest key: push each conversation as a document of this knowledge base "
        "(with KIOSK_CENTRAL_DATASET_KEY) instead of a workflow run.",
    )
    store_id: str = Field(default="store-1", min_length=1, description="This store's id in pushed records.")
    kiosk_id: str = Field(default="kiosk-1", min_length=1, description="This box's id in pushed records.")
    sync_interval_s: float = Field(default=60.0, gt=0, description="Seconds between sync passes while online.")
    sync_idle_s: float = Field(
        default=300.0, ge=0, description="A conversation is pushed once it has had no turn for this long."
    )
    sync_timeout_s: float = Field(default=15.0, gt=0, description="Timeout of one call to central.")
    sync_probe_timeout_s: float = Field(default=3.0, gt=0, description="Timeout of the connectivity probe.")
    sync_backoff_max_s: float = Field(
        default=600.0, gt=0, description="Longest wait between attempts while central is unreachable."
    )
    sync_max_attempts: int = Field(
        default=12, ge=1, description="Failed sends of one record before its turns are parked for an operator."
    )
    sync_settle_s: float = Field(
        default=60.0,
        ge=0,
        description="After a send to central whose answer was lost, how long its run may take to be listed: "
        "until then the record is waited for, never sent again.",
    )

    # --- store staff: hand-offs, the staff page and alerts (issue #14) ------------------------------
    staff_pin_digest: SecretStr | None = Field(
        default=None,
        description="Digest of the store's staff PIN or key, made by `edge staff-pin` (the PIN itself is never "
        "stored). Unset: the staff page at /staff says it is off. Changing it signs every staff page out.",
    )
    staff_session_hours: float = Field(
        default=12.0,
        gt=0,
        le=168,
        description="How long a staff sign-in lasts (a shift) before the PIN is asked again.",
    )
    staff_signin_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Wrong PINs one device may try per KIOSK_STAFF_SIGNIN_WINDOW_S before it must wait; four times "
        "as many from all devices together lock sign-in for everyone until the window passes.",
    )
    staff_signin_window_s: float = Field(
        default=300.0, gt=0, le=86400, description="The window KIOSK_STAFF_SIGNIN_ATTEMPTS counts wrong PINs in."
    )
    staff_remind_after_s: float = Field(
        default=60.0,
        ge=5,
        le=3600,
        description="An open hand-off nobody has claimed for this long flashes and sounds on the staff page.",
    )
    staff_alerts: bool = Field(
        default=False,
        description="Queue a webhook alert for every new hand-off (the sync agent sends it to "
        "KIOSK_STAFF_WEBHOOK_URL). Set it on the runtime; the URL belongs to the sync agent's Secret.",
    )
    staff_webhook_url: SecretStr | None = Field(
        default=None,
        description="Where the sync agent POSTs hand-off alerts (JSON), e.g. a chat group's incoming webhook. "
        "Its query often holds the group's key: keep it in the sync agent's Secret.",
    )
    staff_webhook_format: Literal["generic", "wecom", "dingtalk", "feishu", "slack"] = Field(
        default="generic",
        description="The JSON shape the webhook expects: generic ({text, handoff}), wecom or dingtalk "
        "({msgtype: text, text: {content}}), feishu ({msg_type: text, content: {text}}), slack ({text}).",
    )
    staff_webhook_include_question: bool = Field(
        default=False,
        description="Put the shopper's question in the alert. Off by default: the webhook usually leaves the "
        "store for a third-party chat service.",
    )
    staff_page_url: str | None = Field(
        default=None,
        description="The staff page's address on the store network as a tablet opens it, e.g. "
        "http://192.168.1.20:8080/staff: the alerts link to it. Unset, they say `/staff` (the box cannot tell "
        "which of its addresses the staff's devices reach).",
    )
    store_timezone: str = Field(
        default="UTC",
        description="The store's time zone (IANA name, e.g. Asia/Shanghai): the time written in webhook alerts. "
        "The staff page shows times in its own device's zone.",
    )
    staff_alert_max_age_s: float = Field(
        default=1800.0,
        gt=0,
        description="An alert not delivered within this long after its hand-off opened is dropped, not sent "
        "late; so is one whose hand-off was claimed, closed or abandoned before it went out.",
    )
    handoff_hold_s: float = Field(
        default=1800.0,
        ge=0,
        description="A conversation with an open or claimed hand-off is pushed to central once the hand-off "
        "ends, or after this long, so its record carries the claim and close times.",
    )

    # --- live escalation to central (issue #13) --------------------------------------------------
    escalate: bool = Field(
        default=False,
        description="Forward questions the box would hand off (or give to its LLM, see KIOSK_ESCALATE_ON) to "
        "central's chat app live, while central is reachable, and relay its answer; any failure falls back to "
        "the local answer in the same request. Off: nothing leaves the store while a shopper waits. On: the "
        "question, the shopper's language and the conversation's earlier local turns go to central.",
    )
    escalate_on: Literal["handoff", "llm", "both", "all"] = Field(
        default="handoff",
        description="Which local outcomes escalate: `handoff` (the box would call staff), `llm` (it would "
        "generate locally), `both`, or `all` (both, and the questions it would decline as outside what it "
        "knows). A hand-off the shopper asked for with the staff button never does.",
    )
    central_chat_key: SecretStr | None = Field(
        default=None,
        description="App key of central's chat app that answers escalated questions (its own key, not the "
        "sync agent's). Only the runtime holds it, and only when KIOSK_ESCALATE is on.",
    )
    escalate_first_byte_s: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="Longest wait for the first answer text from central before answering locally instead.",
    )
    escalate_idle_s: float = Field(
        default=15.0,
        gt=0,
        le=120,
        description="Longest silence (pings included) in central's stream once it has started, before the box "
        "says the connection broke and finishes locally (Dify pings every 10 s).",
    )
    escalate_reachable_s: float = Field(
        default=300.0,
        gt=0,
        description="Central counts as reachable when the newer of the sync agent's last probe and the box's own "
        "last call succeeded within this many seconds. The agent seeing central offline stops escalation until "
        "it (or the box) sees central again; with no recent signal (no sync agent), one question per breaker "
        "cool-down tries.",
    )
    escalate_handoff_needs_sources: bool = Field(
        default=True,
        description="A question the box would hand off is answered by central only when central's answer cites "
        "its knowledge or an annotation (`retriever_resources` / `annotation_reply` in `message_end`); otherwise "
        "the shopper reads central's words and is still handed to a colleague. Needs \"Citations and "
        "Attributions\" on in central's app; turn off only if central's model alone is trusted to answer.",
    )
    escalate_breaker_failures: int = Field(
        default=3,
        ge=1,
        description="Consecutive failed escalations after which the box stops asking central for a while.",
    )
    escalate_breaker_cooldown_s: float = Field(
        default=60.0,
        gt=0,
        description="How long the box stops asking central after repeated failures; then one question probes it.",
    )
    central_broke_message: dict[str, str] = Field(
        default_factory=lambda: {
            "en": "\n\n(The connection to our central service broke; here is what I can tell you locally:)\n\n",
            "zh": "\n\n（与总部服务的连接中断了；以下是本机能提供的答复：）\n\n",
        },
        description="Said when central's answer stops half-way, before the local answer or hand-off, per language.",
    )

    # --- retention and disk -----------------------------------------------------------------------
    retention_days: int = Field(
        default=90,
        ge=0,
        description="Conversations central already holds (every turn and feedback pushed) are deleted this many "
        "days after their last turn, by the sync agent, and their space reclaimed. Unpushed ones are never "
        "deleted. 0: keep everything.",
    )
    disk_warn_free_mb: int = Field(
        default=512,
        ge=0,
        description="Free space on the data volume under which `/readyz` carries a warning (the box stays ready); "
        "when the volume is full, turns are answered 503 `storage_full`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _decode_json(cls, values: Any) -> Any:
        """JSON-valued settings given as text (env vars, the env file) are decoded here, before any field
        validator, or refused in one line that names the setting and the form it expects."""
        if not isinstance(values, dict):
            return values
        decoded = dict(values)
        for name, value in values.items():
            field = cls.model_fields.get(name)
            container = json_container(field.annotation) if field is not None else None
            if container is None or not isinstance(value, str):
                continue
            try:
                decoded[name] = json.loads(value)
            except ValueError:
                decoded[name] = None
            if not isinstance(decoded[name], (list, dict)):  # the field's own validation judges the JSON
                if name not in PLAIN_TEXT_FOR_EVERY_LANGUAGE:
                    raise ValueError(
                        f"invalid setting {name} (KIOSK_{name.upper()}): expected {JSON_FORMS[container]}, "
                        "not a plain value"
                    )
                text = decoded[name]
                decoded[name] = text if isinstance(text, str) else value  # plain text serves every language
        return decoded

    @field_validator("opening_statement", "handoff_message", "decline_message", "central_broke_message", mode="before")
    @classmethod
    def _text_for_every_language(cls, value: object) -> object:
        """A plain string serves every language (older settings files hold one)."""
        return {language: value for language in LANGUAGES} if isinstance(value, str) else value

    @field_validator("suggested_questions", mode="before")
    @classmethod
    def _questions_for_every_language(cls, value: object) -> object:
        return {language: value for language in LANGUAGES} if isinstance(value, list) else value

    def text(self, name: str, language: str) -> str:
        """One of the per-language messages in `language`, else in English."""
        messages: dict[str, str] = getattr(self, name)
        return messages.get(language) or messages.get(DEFAULT_LANGUAGE) or next(iter(messages.values()), "")

    @field_validator("staff_webhook_url")
    @classmethod
    def _webhook_is_http(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None:
            return url
        parts = urlsplit(url.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the webhook URL must be an http:// or https:// URL with a host")
        if any(marker in url.get_secret_value().lower() for marker in PLACEHOLDER_MARKERS):
            raise ValueError("the webhook URL must be the real one, not a placeholder")
        return url

    @field_validator("staff_page_url")
    @classmethod
    def _staff_page_is_http(cls, url: str | None) -> str | None:
        if url is None or not url.strip():
            return None
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the staff page URL must be an http:// or https:// URL with a host")
        return url.strip()

    @field_validator("store_timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Asia/Shanghai or UTC") from None
        return name

    @field_validator("staff_pin_digest")
    @classmethod
    def _digest_is_ours(cls, digest: SecretStr | None) -> SecretStr | None:
        """A plain PIN pasted where the digest goes would never match: refuse it at start."""
        if digest is not None and not is_pin_digest(digest.get_secret_value()):
            raise ValueError("expected a digest made by `edge staff-pin` (pbkdf2_sha256$...), not the PIN itself")
        return digest

    @field_validator("central_app_key", "central_dataset_key", "central_ingest_key", "central_chat_key")
    @classmethod
    def _refuse_placeholder_central_keys(cls, key: SecretStr | None) -> SecretStr | None:
        """A placeholder left in a Secret would only show up as 401s and a stopped stream: refuse it at start."""
        if key is not None and any(marker in key.get_secret_value().lower() for marker in PLACEHOLDER_MARKERS):
            raise ValueError("central keys must be the real keys from Dify, not a placeholder")
        return key

    @model_validator(mode="after")
    def _escalation_needs_central(self) -> Settings:
        """Escalation on without central's URL and chat key could only ever fall back: refuse it at start."""
        if self.escalate and (not self.central_url or self.central_chat_key is None):
            raise ValueError("KIOSK_ESCALATE needs KIOSK_CENTRAL_URL and KIOSK_CENTRAL_CHAT_KEY")
        return self

    @field_validator("app_keys")
    @classmethod
    def _refuse_placeholder_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            value = key.get_secret_value()
            if len(value) < 12 or any(marker in value.lower() for marker in PLACEHOLDER_MARKERS):
                raise ValueError("app keys must be real secrets (12+ characters, not a placeholder)")
        return keys

    @field_validator("allowed_hosts")
    @classmethod
    def _lowercase_hosts(cls, hosts: list[str]) -> list[str]:
        return [host.strip().lower().rstrip(".") for host in hosts if host.strip()]

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            ipaddress.ip_network(proxy, strict=False)  # ValueError: "… does not appear to be an IPv4 or IPv6 network"
        return proxies

    @property
    def database_path(self) -> Path:
        return self.data_dir / "kiosk.sqlite3"
