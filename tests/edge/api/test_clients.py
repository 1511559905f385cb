"""End to end on a real uvicorn on loopback, driven by the official `openai` and `dify-client` packages."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.edge.api.conftest import AUTH, KEY, LiveServer

pytestmark = pytest.mark.slow
CANCEL = "I want to cancel my order"


def test_openai_client_assistant_and_plain_model(live_server: LiveServer) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=KEY, max_retries=0)
    ids = [model.id for model in client.models.list().data]
    assert ids[0] == "kiosk-assistant" and len(ids) == 2
    reply = client.chat.completions.create(model="kiosk-assistant", messages=[{"role": "user", "content": CANCEL}])
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(
        model="kiosk-assistant", messages=[{"role": "user", "content": CANCEL}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert text == reply.choices[0].message.content
    plain = client.chat.completions.create(
        model=ids[1], messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in plain if chunk.choices]
    assert "".join(pieces).strip()


def test_openai_errors_keep_openai_shape(live_server: LiveServer) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["code"] == "not_found"  # the client unwraps {"error": {...}}
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="kiosk-assistant", messages=[])
    assert bad.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="app-wrong-key-123456", max_retries=0).models.list()


def test_dify_client_blocking_and_streaming(live_server: LiveServer) -> None:
    from dify_client import ChatClient

    client = ChatClient(KEY)
    client.base_url = f"{live_server.url}/v1"
    blocking = client.create_chat_message(inputs={}, query=CANCEL, user="kiosk-7")
    blocking.raise_for_status()
    conversation = blocking.json()["conversation_id"]
    streaming = client.create_chat_message(
        inputs={},
        query="how long does delivery take",
        user="kiosk-7",
        response_mode="streaming",
        conversation_id=conversation,
    )
    events = [json.loads(line[6:]) for line in streaming.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert events[-1]["event"] == "message_end" and events[0]["conversation_id"] == conversation
    history = client.get_conversation_messages("kiosk-7", conversation_id=conversation).json()
    assert len(history["data"]) == 2
    assert client.message_feedback(history["data"][1]["id"], "like", "kiosk-7").json() == {"result": "success"}


def test_four_concurrent_llm_streams_all_complete(live_server: LiveServer) -> None:
    """Plain-model streams share one llama.cpp context: queued, never interrupted."""

    async def one(client: httpx.AsyncClient, model: str, n: int) -> tuple[str, str]:
        body = {
            "model": model,
            "stream": True,
            "max_tokens": 12,
            "messages": [{"role": "user", "content": f"Count to {n}."}],
        }
        text, finish = [], None
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    choice = chunk["choices"][0]
                    text.append(choice["delta"].get("content") or "")
                    finish = choice["finish_reason"] or finish
        return "".join(text), str(finish)

    async def main() -> list[tuple[str, str]]:
        async with httpx.AsyncClient(base_url=live_server.url, timeout=120) as client:
            model = (await client.get("/v1/models", headers=AUTH)).json()["data"][1]["id"]
            return await asyncio.gather(*(one(client, model, n) for n in range(3, 7)))

    results = asyncio.run(main())
    assert len(results) == 4
    for text, finish in results:
        assert text.strip() and finish in ("stop", "length")
