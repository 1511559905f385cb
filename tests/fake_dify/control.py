"""The fake's own control API under `/_fake/` (not Dify's; no auth; loopback only).

For tests that drive a live fake over HTTP, and for demos with curl:
  GET/DELETE /_fake/journal[?method=&path=]     the request journal
  GET/POST/DELETE /_fake/faults, DELETE /_fake/faults/{id}   the fault schedule (JSON rules)
  POST /_fake/mutations {"op": ..., ...}        edit central (see `mutations.MUTATIONS`)
  POST /_fake/clock {"advance": s, "skew": s}   move or skew the server clock
  GET /_fake/state                              keys, apps, datasets and counts
  GET /_fake/chat                               chat requests received, and each conversation's queries
  GET/PATCH /_fake/config                       the fake's settings (`FakeDifyConfig`), changeable live
  GET /_fake/snapshot                           every row, as JSON (`snapshot.restore` reads it back)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_dify.errors import DifyError
from tests.fake_dify.mutations import MUTATIONS, apply_mutation
from tests.fake_dify.snapshot import snapshot

if TYPE_CHECKING:
    from tests.fake_dify.app import FakeDify


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("a JSON object is expected")
    return data


def build(fake: FakeDify) -> Starlette:
    async def journal(request: Request) -> Response:
        if request.method == "DELETE":
            fake.journal.clear()
            return Response(status_code=204)
        entries = fake.journal.entries(request.query_params.get("method"), request.query_params.get("path"))
        return JSONResponse({"data": [e.as_dict() for e in entries]})

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            fake.faults.clear()
            return Response(status_code=204)
        if request.method == "GET":
            return JSONResponse({"data": [r.spec for r in fake.faults.rules()]})
        try:
            rule = fake.faults.add(await _json(request))
        except (TypeError, ValueError) as exc:
            return _error(str(exc))
        return JSONResponse(rule.spec, status_code=201)

    async def fault(request: Request) -> Response:
        try:
            fake.faults.remove(request.path_params["rule_id"])
        except KeyError:
            return _error("no such fault", 404)
        return Response(status_code=204)

    async def mutations(request: Request) -> Response:
        try:
            result = apply_mutation(fake.state, await _json(request))
        except KeyError as exc:
            return _error(f"not found: {exc.args[0] if exc.args else exc} (ops: {', '.join(MUTATIONS)})", 404)
        except DifyError as exc:
            return _error(exc.message, exc.status)
        except (TypeError, ValueError) as exc:
            return _error(str(exc))
        return JSONResponse({"result": result})

    async def clock(request: Request) -> Response:
        try:
            body = await _json(request)
            if "advance" in body:
                fake.state.clock.advance(float(body["advance"]))
            if "skew" in body:
                fake.state.clock.skew = float(body["skew"])
        except (TypeError, ValueError) as exc:
            return _error(str(exc))
        return JSONResponse({"now": fake.state.clock.now(), "skew": fake.state.clock.skew})

    async def state(request: Request) -> Response:
        return JSONResponse(fake.state.summary())

    async def chat(request: Request) -> Response:
        requests = fake.journal.count("POST", "/v1/chat-messages")
        return JSONResponse({"requests": requests, "conversations": fake.state.chat_queries()})

    async def config(request: Request) -> Response:
        if request.method == "PATCH":
            try:
                fake.configure(**await _json(request))
            except (TypeError, ValueError) as exc:
                return _error(str(exc))
        return JSONResponse(asdict(fake.config))

    async def dump(request: Request) -> Response:
        return JSONResponse(snapshot(fake.state))

    return Starlette(
        routes=[
            Route("/_fake/journal", journal, methods=["GET", "DELETE"]),
            Route("/_fake/faults", faults, methods=["GET", "POST", "DELETE"]),
            Route("/_fake/faults/{rule_id}", fault, methods=["DELETE"]),
            Route("/_fake/mutations", mutations, methods=["POST"]),
            Route("/_fake/clock", clock, methods=["POST"]),
            Route("/_fake/state", state, methods=["GET"]),
            Route("/_fake/snapshot", dump, methods=["GET"]),
            Route("/_fake/chat", chat, methods=["GET"]),
            Route("/_fake/config", config, methods=["GET", "PATCH"]),
        ]
    )
