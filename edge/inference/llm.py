"""One llama.cpp context, owned by one worker thread that serves a bounded FIFO of chat generations.

llama-cpp-python's own server keeps one model in a global and cuts the running stream short when a
new request arrives. A kiosk answer must never be cut because another customer asked something, so
here requests run to completion one after another, and the queue bound turns overload into a fast
`QueueFull` (HTTP 503 + Retry-After) instead of unbounded latency. Consecutive turns of one
conversation share their prompt prefix, which `Llama.generate(reset=True)` keeps in the KV cache.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import jinja2
import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from edge.errors import BadInput

logger = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "cancelled", "timeout", "error"]


# KV cache element types: q8_0 halves the cache (about 23 MB at 2,048 tokens for SmolLM2-135M);
# llama.cpp quantizes the V cache only with flash attention. See bench/serve.py for speed and RSS.
KV_CACHE_TYPES: dict[str, dict[str, Any]] = {
    "f16": {},
    "q8_0": {"type_k": llama_cpp.GGML_TYPE_Q8_0, "type_v": llama_cpp.GGML_TYPE_Q8_0, "flash_attn": True},
}


class LlmError(Exception):
    """llama.cpp failed, or the engine is not running."""


class Draining(LlmError):
    """The box is shutting down: the running answer finishes, nothing new starts. Ask again shortly."""


class InvalidRequest(LlmError, BadInput):
    """The messages cannot be rendered by the chat template, do not fit the context, or a parameter is invalid.

    A client's fault: the API renders it as a 400 in the family's envelope."""

    def __init__(self, message: str, param: str = "messages") -> None:
        super().__init__(message, param=param)


class QueueFull(LlmError):
    """`max_queue` requests are already waiting; `retry_after` is a whole-second estimate of a free slot."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the LLM queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


def token_bytes(vocab: llama_cpp.llama_vocab_p, token: int) -> bytes:
    """The bytes of one token. llama-cpp-python's detokenize returns b"" for pieces over 32 bytes."""
    size = 64
    while True:
        buffer = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
        if n >= 0:
            return buffer.raw[:n]
        size = -n


# Tokens that llama.cpp's tokenizer picks out of raw text as one id: control tokens (with special parsing,
# which the rendered chat template needs), unknown, and user-defined ones (always).
SPECIAL_ATTRS = (
    llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
)


def special_tokens(vocab: llama_cpp.llama_vocab_p) -> dict[int, str]:
    """The loaded model's own special tokens (id → text), read from its vocabulary's token attributes.

    User-defined tokens that are whitespace (some vocabularies add runs of spaces) are plain text."""
    found = {}
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        attr = llama_cpp.llama_vocab_get_attr(vocab, token)
        if attr & SPECIAL_ATTRS:
            text = llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8", errors="replace")
            if text.strip() and not (attr & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED and any(c.isspace() for c in text)):
                found[token] = text
    return found


class Neutraliser:
    """Blanks every special token's text out of message content, so that text from a customer, the
    history or the grounding can never become a role switch (`<|im_end|><|im_start|>system …`): the only
    control tokens of a prompt are those its chat template writes. Repeated until nothing is left,
    because blanking one marker may join the halves of another."""

    def __init__(self, texts: list[str]) -> None:
        alternatives = sorted(set(texts), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        while True:
            cleaned = self._pattern.sub(" ", text)
            if cleaned == text:
                return cleaned
            text = cleaned


def stop_cut(text: str, stops: list[str]) -> int | None:
    """Where the earliest complete stop string starts, if any."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters might begin a stop string, and so must not be streamed yet."""
    return max((n for s in stops for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])), default=0)


class Generation:
    """Handle on one queued or running request: stream it, wait for it, or cancel it."""

    def __init__(
        self, prompt: list[int], max_tokens: int, temperature: float, stop: list[str], withdraw: Callable[[], bool]
    ) -> None:
        self.prompt, self.max_tokens, self.temperature, self.stop = prompt, max_tokens, temperature, stop
        self._withdraw = withdraw
        self._cond = threading.Condition()
        self._chunks: list[str] = []
        self._done = False
        self._error: LlmError | None = None
        self._wakers: list[Callable[[], None]] = []
        self._cancel = threading.Event()
        self._submitted = time.monotonic()
        self.finish_reason: FinishReason | None = None
        self.prompt_tokens = len(prompt)
        self.cached_tokens = 0  # prompt tokens llama.cpp did not have to evaluate (KV prefix reuse)
        self.completion_tokens = 0
        self.queue_wait_s = 0.0
        self.first_token_s: float | None = None  # from the start of processing to the first sampled token
        self.tokens_per_s = 0.0  # decode speed after the first token

    @property
    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Stop at the next token, or leave the queue at once if not started yet."""
        self._cancel.set()
        if self._withdraw():
            self.queue_wait_s = time.monotonic() - self._submitted
            self._finish("cancelled")

    def chunks(self) -> Iterator[str]:
        """Text deltas as they are generated (blocking: for threads); raises `LlmError` if llama.cpp failed."""
        seen = 0
        while True:
            with self._cond:
                while not self._done and len(self._chunks) == seen:
                    self._cond.wait()
                new, done = self._chunks[seen:], self._done
            seen += len(new)
            yield from new
            if done:
                self._raise_if_failed()
                return

    async def achunks(self) -> AsyncIterator[str]:
        """Text deltas for asyncio code; the worker wakes the loop, so the loop never blocks."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notify() -> None:
            with contextlib.suppress(RuntimeError):  # the consumer's loop is already closed
                loop.call_soon_threadsafe(wake.set)

        with self._cond:
            self._wakers.append(notify)
        try:
            seen = 0
            while True:
                wake.clear()
                with self._cond:
                    new, done = self._chunks[seen:], self._done
                seen += len(new)
                for chunk in new:
                    yield chunk
                if done:
                    break
                await wake.wait()
        finally:
            with self._cond:
                self._wakers.remove(notify)
        self._raise_if_failed()

    def result(self, timeout: float | None = None) -> str:
        """The full text once finished; raises `LlmError` if llama.cpp failed, `TimeoutError` on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError(f"generation not finished after {timeout} s")
        self._raise_if_failed()
        return "".join(self._chunks)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _emit(self, text: str) -> None:
        """Worker side: publish a text delta."""
        self._publish(lambda: self._chunks.append(text))

    def _finish(self, reason: FinishReason, error: LlmError | None = None) -> None:
        """Worker side: publish the end of the stream (idempotent)."""

        def end() -> None:
            if not self._done:
                self.finish_reason, self._error, self._done = reason, error, True

        self._publish(end)

    def _publish(self, change: Callable[[], None]) -> None:
        with self._cond:
            change()
            self._cond.notify_all()
            wakers = list(self._wakers)
        for wake in wakers:
            wake()


class LlmEngine:
    """A GGUF chat model served one request at a time from a bounded queue; see the module docstring."""

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 2048,
        n_threads: int = 1,
        n_batch: int = 512,
        max_queue: int = 8,
        time_budget_s: float = 30.0,
        kv_cache: str = "f16",
        gpu_layers: int = 0,
        reuse_prefix: bool = True,
        llama_factory: Callable[..., llama_cpp.Llama] = llama_cpp.Llama,
    ) -> None:
        if kv_cache not in KV_CACHE_TYPES:
            raise LlmError(f"kv_cache must be one of {', '.join(KV_CACHE_TYPES)}; got {kv_cache!r}")
        self.model_path = Path(model_path)
        self.model_id = self.model_path.stem
        self.n_ctx, self.n_threads, self.n_batch = n_ctx, n_threads, n_batch
        self.max_queue, self.time_budget_s = max_queue, time_budget_s
        self._factory = llama_factory
        self.kv_cache = kv_cache
        self.gpu_layers = gpu_layers
        # Reusing the KV cache of a shared prompt prefix saves most of a follow-up's prompt time, but
        # llama.cpp evaluates the rest in a batch of another shape, and on CPU builds whose kernels
        # differ by batch shape the same prompt can then yield a different (equally likely) answer.
        # Off: every prompt is evaluated whole, and one prompt always gives one answer.
        self.reuse_prefix = reuse_prefix
        self._lock = threading.Condition()
        self._pending: deque[Generation] = deque()
        self._running: Generation | None = None
        self._closing = False
        self._draining: str | None = None
        self._llm: llama_cpp.Llama | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._neutralise = Neutraliser([])
        self.special_tokens: dict[int, str] = {}
        self._thread: threading.Thread | None = None
        self._service_s = 1.0  # moving average of one generation's duration, for Retry-After

    def start(self) -> None:
        """Load the model in the caller's thread (errors surface here), then start the worker."""
        if self._thread is not None:
            raise LlmError("the engine was already started")
        try:
            llm = self._factory(
                str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_batch=self.n_batch,
                n_gpu_layers=self.gpu_layers,
                verbose=False,
                **KV_CACHE_TYPES[self.kv_cache],
            )
        except (ValueError, OSError) as exc:
            raise LlmError(f"cannot load {self.model_path}: {exc}") from exc
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            llm.close()
            raise LlmError(f"{self.model_path} has no chat template in its GGUF metadata")
        vocab = llama_cpp.llama_model_get_vocab(llm.model)

        def text(token: int) -> str:
            return llama_cpp.llama_vocab_get_text(vocab, token).decode() if token >= 0 else ""

        self._formatter = Jinja2ChatFormatter(
            template, eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos())
        )
        self.special_tokens = special_tokens(vocab)
        self._neutralise = Neutraliser(list(self.special_tokens.values()))
        self._llm = llm
        self._thread = threading.Thread(target=self._serve, args=(llm,), name=f"llm-{self.model_id}", daemon=True)
        self._thread.start()

    def drain(
        self, deadline_s: float, reason: str = "the assistant is restarting; please ask again in a moment"
    ) -> None:
        """Shutdown has begun: refuse new requests at once, keep serving the queue, and at `deadline_s`
        (set before the server's own grace period ends) end whatever is still queued or running with
        `Draining`, so those clients get an error they can act on rather than a cut connection."""
        with self._lock:
            self._draining = reason
        timer = threading.Timer(deadline_s, self._expire, args=(reason,))
        timer.daemon = True
        timer.start()

    def _expire(self, reason: str) -> None:
        with self._lock:
            pending, self._pending = list(self._pending), deque()
            running = self._running
        for gen in [*pending, *([running] if running is not None else [])]:
            gen._finish("error", Draining(reason))
            gen._cancel.set()

    def close(self) -> None:
        """Cancel queued and running work, join the worker, free the model."""
        with self._lock:
            self._closing = True
            pending, self._pending = list(self._pending), deque()
            if self._running is not None:
                self._running._cancel.set()
            self._lock.notify_all()
        for gen in pending:
            gen._cancel.set()
            gen._finish("cancelled")
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()

    def submit(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Generation:
        """Queue a chat request. Raises `QueueFull`, `InvalidRequest`, or `LlmError` if not running."""
        if max_tokens < 1 or temperature < 0:
            raise InvalidRequest("max_tokens must be >= 1 and temperature >= 0", param="max_tokens")
        prompt = self.prompt(messages, max_tokens=max_tokens)
        room = self.n_ctx - len(prompt)
        gen = Generation(prompt, min(max_tokens, room), temperature, list(stop or []), lambda: self._withdraw(gen))
        with self._lock:
            if self._closing:
                raise LlmError("the engine is closed")
            if self._draining is not None:
                raise Draining(self._draining)
            if len(self._pending) >= self.max_queue:
                raise QueueFull(max(1, math.ceil(self._service_s)))
            self._pending.append(gen)
            self._lock.notify_all()
        return gen

    def prompt(self, messages: list[dict[str, str]], *, max_tokens: int = 256) -> list[int]:
        """The prompt tokens of `messages`: special tokens blanked out of every message's content, then the
        oldest turns dropped until the prompt leaves room for the answer (`max_tokens`, at most half the
        context). Leading system messages and the last message are always kept; when they alone do not
        fit the context, `InvalidRequest` (a 400: the client's question or prompt is too long)."""
        if self._formatter is None:
            raise LlmError("the engine is not started")
        messages = [{**m, "content": self._neutralise(m["content"])} if m.get("content") else m for m in messages]
        pinned = next((i for i, m in enumerate(messages[:-1]) if m.get("role") != "system"), len(messages) - 1)
        head, turns, last = messages[:pinned], messages[pinned:-1], messages[-1:]
        # Cut only before a user message, so what remains never opens with an answer to a dropped question.
        cuts = [i for i, m in enumerate(turns) if m.get("role") != "assistant"] + [len(turns)]
        reserve = min(max_tokens, self.n_ctx // 2)
        tokens = self._render([*head, *turns, *last])
        if len(tokens) + reserve > self.n_ctx and turns:
            low, high = 0, len(cuts) - 1  # binary search for the fewest dropped turns that fit
            best = self._render([*head, *last])
            while low < high:
                middle = (low + high) // 2
                candidate = self._render([*head, *turns[cuts[middle] :], *last])
                if len(candidate) + reserve <= self.n_ctx:
                    best, high = candidate, middle
                else:
                    low = middle + 1
            logger.info("dropped %d of %d earlier messages to fit the context", cuts[low], len(turns))
            tokens = best
        if len(tokens) >= self.n_ctx:
            raise InvalidRequest(
                f"the prompt has {len(tokens)} tokens without any earlier turn; the context holds {self.n_ctx}"
            )
        return tokens

    def _render(self, messages: list[dict[str, str]]) -> list[int]:
        assert self._formatter is not None
        try:
            text = self._formatter(messages=messages).prompt  # type: ignore[arg-type]
        except (ValueError, TypeError, jinja2.TemplateError) as exc:
            raise InvalidRequest(f"the chat template rejected the messages: {exc}") from exc
        return self._tokenize(text.encode("utf-8", errors="replace"), special=True)

    def count_tokens(self, text: str) -> int:
        """Tokens of plain text (no special tokens), without touching the worker's context.

        Tokenizing only reads the vocabulary, which llama.cpp never mutates after loading (its own
        server tokenizes on HTTP threads while decoding), so no trip through the queue is needed.
        """
        return len(self._tokenize(text.encode("utf-8", errors="replace"), special=False))

    def queue_depth(self) -> int:
        with self._lock:
            return len(self._pending)

    def busy(self) -> bool:
        with self._lock:
            return self._running is not None

    def _tokenize(self, data: bytes, *, special: bool) -> list[int]:
        with self._lock:  # held so that close() cannot free the model mid-call
            if self._llm is None:
                raise LlmError("the engine is not running")
            return self._llm.tokenize(data, add_bos=False, special=special)

    def _withdraw(self, gen: Generation) -> bool:
        with self._lock:
            if gen in self._pending:
                self._pending.remove(gen)
                return True
            return False

    def _serve(self, llm: llama_cpp.Llama) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._pending or self._closing)
                if self._closing:
                    return
                gen = self._running = self._pending.popleft()
            started = time.monotonic()
            try:
                self._generate(llm, gen, started)
            except Exception as exc:  # a llama.cpp failure must reach the caller and must not kill the worker
                logger.exception("llama.cpp failed during a generation")
                llm.reset()  # the KV cache may no longer match input_ids
                gen._finish("error", LlmError(f"llama.cpp failed: {exc}"))
            with self._lock:
                self._running = None
                self._service_s = 0.7 * self._service_s + 0.3 * (time.monotonic() - started)

    def _generate(self, llm: llama_cpp.Llama, gen: Generation, started: float) -> None:
        gen.queue_wait_s = started - gen._submitted
        if gen._cancel.is_set():
            gen._finish("cancelled")
            return
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, sent, cut = "", 0, None
        reason: FinishReason = "length"
        first = time.monotonic()
        llama_cpp.llama_perf_context_reset(llm.ctx)
        if not self.reuse_prefix:
            llm.reset()
        tokens = llm.generate(gen.prompt, temp=gen.temperature, reset=True)
        try:
            for token in tokens:
                if gen.first_token_s is None:
                    first = time.monotonic()
                    gen.first_token_s = first - started
                    evaluated = (
                        llama_cpp.llama_perf_context(llm.ctx).n_p_eval or 1
                    )  # a 1-token decode may count as n_eval
                    gen.cached_tokens = max(0, gen.prompt_tokens - evaluated)
                if gen._cancel.is_set():
                    reason = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    reason = "stop"
                    break
                gen.completion_tokens += 1
                text += decoder.decode(token_bytes(vocab, token))
                cut = stop_cut(text, gen.stop)
                if cut is not None:
                    text, reason = text[:cut], "stop"
                    break
                safe = len(text) - held_back(text, gen.stop)
                if safe > sent:
                    gen._emit(text[sent:safe])
                    sent = safe
                if gen.completion_tokens >= gen.max_tokens:
                    break
                if time.monotonic() - started > self.time_budget_s:
                    reason = "timeout"
                    break
        finally:
            tokens.close()
        if cut is None:  # flush a trailing incomplete UTF-8 sequence as U+FFFD
            text += decoder.decode(b"", final=True)
        if len(text) > sent:
            gen._emit(text[sent:])
        elapsed = time.monotonic() - first
        gen.tokens_per_s = (gen.completion_tokens - 1) / elapsed if gen.completion_tokens > 1 and elapsed > 0 else 0.0
        gen._finish(reason)
