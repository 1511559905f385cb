"""Chat messages for the local LLM: system prompt, store facts, grounding and recent turns."""

from __future__ import annotations

import re

# Chat-template control markers (`<|im_start|>`, `<|eot_id|>`, `<s>`, …): a customer must not be able to
# type a role switch, because the engine tokenizes the rendered prompt with special tokens enabled.
_CONTROL_MARKERS = re.compile(r"<\|[^|<>]{1,40}\|>|</?s>")


def defuse(text: str) -> str:
    return _CONTROL_MARKERS.sub(" ", text)


def build_messages(
    system_prompt: str,
    variables: dict[str, str],
    grounding: list[tuple[str, str]],
    history: list[tuple[str, str]],
    query: str,
) -> list[dict[str, str]]:
    facts = "\n".join(f"- {name}: {value}" for name, value in variables.items())
    knowledge = "\n".join(f"- ({label}) {text}" for label, text in grounding)
    system = system_prompt
    if facts:
        system += f"\n\nStore information:\n{facts}"
    if knowledge:
        system += f"\n\nRelevant answers from the store's knowledge:\n{knowledge}"
    messages = [{"role": "system", "content": system}]
    for past_query, past_answer in history:
        messages.append({"role": "user", "content": defuse(past_query)})
        messages.append({"role": "assistant", "content": defuse(past_answer)})
    messages.append({"role": "user", "content": defuse(query)})
    return messages
