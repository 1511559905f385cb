"""Chat messages for the local LLM: system prompt, store facts, grounding and recent turns."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Common chat-template markers (`<|im_start|>`, `<|eot_id|>`, `<s>`, …), blanked from every text that is
# not the operator's. This is only a model-independent first pass: the guarantee that no text becomes a
# role switch is `LlmEngine`'s, which blanks every special token of the loaded model's own vocabulary
# (SmolLM2's `<filename>`, `<jupyter_code>`, … too) from all message content before rendering.
_CONTROL_MARKERS = re.compile(r"<\|[^|<>]{1,40}\|>|</?s>")


def defuse(text: str) -> str:
    return _CONTROL_MARKERS.sub(" ", text)


def build_messages(
    system_prompt: str,
    variables: dict[str, str],
    grounding: Sequence[str],
    history: list[tuple[str, str]],
    query: str,
    few_shot: Sequence[tuple[str, str]] = (),
) -> list[dict[str, str]]:
    """Stable parts first (system prompt, store facts, past turns), the per-question grounding last.

    llama.cpp reuses the KV cache only for an identical prefix; grounding in the system message
    changed it on every turn whose likely intents differed, so every turn re-read the whole history.
    """
    facts = "\n".join(f"- {name}: {value}" for name, value in variables.items())
    system = system_prompt + (f"\n\nStore information:\n{facts}" if facts else "")
    messages = [{"role": "system", "content": system}]
    for past_query, past_answer in [*few_shot, *history]:
        messages.append({"role": "user", "content": defuse(past_query)})
        messages.append({"role": "assistant", "content": defuse(past_answer)})
    question = defuse(query)
    if grounding:
        knowledge = "\n".join(f"- {defuse(text)}" for text in grounding)
        question = f"Relevant answers from the store's knowledge:\n{knowledge}\n\nCustomer question: {question}"
    messages.append({"role": "user", "content": question})
    return messages
