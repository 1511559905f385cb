"""The endpoints that need no key: the interactive docs are off unless asked for (they load their scripts
from a CDN, blank on an offline box), and README.md lists exactly the routes that are open."""

from __future__ import annotations

import re
from pathlib import Path

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Route

from edge.api.deps import app_key, chat_caller
from edge.app import create_app
from edge.settings import Settings
from tests.conftest import ROOT

KEYED = {app_key, chat_caller}


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    # No lifespan runs here (the client is not entered): nothing of the bundle is loaded.
    return Settings(bundle_dir=tmp_path / "no-bundle", data_dir=tmp_path / "data", **overrides)


def flat_routes(app: FastAPI) -> list[BaseRoute]:
    """Every route of the app, through included routers (FastAPI 0.16x keeps them nested)."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    return [context.route for context in iterate(app.routes)] if iterate else list(app.routes)


def open_routes(app: FastAPI) -> set[str]:
    """`METHOD /path` of every route that takes neither an app key nor a kiosk session."""

    def calls(dependant: Dependant) -> set[object]:
        found = {dependant.call}
        for sub in dependant.dependencies:
            found |= calls(sub)
        return found

    routes = set()
    for route in flat_routes(app):
        if isinstance(route, APIRoute) and calls(route.dependant) & KEYED:
            continue
        if isinstance(route, Route):
            routes |= {f"{method} {route.path}" for method in route.methods or () if method != "HEAD"}
    return routes


def documented_open_routes() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^\*\*Open endpoints\*\*(.*?)(?:\n\n)", readme, flags=re.MULTILINE | re.DOTALL)
    assert match, "README.md has no **Open endpoints** paragraph"
    return set(re.findall(r"`((?:GET|POST|PUT|PATCH|DELETE) /[^`\s]*)`", match.group(1)))


def test_the_docs_pages_are_off_by_default(tmp_path: Path) -> None:
    client = TestClient(create_app(settings_for(tmp_path)))
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"  # Dify's shape, like any unknown path
    assert client.get("/openapi.json").json()["info"]["title"] == "kiosk-edge"


def test_the_docs_pages_can_be_turned_on(tmp_path: Path) -> None:
    client = TestClient(create_app(settings_for(tmp_path, api_docs=True)))
    for path in ("/docs", "/redoc"):
        response = client.get(path)
        assert response.status_code == 200 and "/openapi.json" in response.text, path


@pytest.mark.parametrize("api_docs", [False, True])
def test_the_readme_lists_exactly_the_open_endpoints(tmp_path: Path, api_docs: bool) -> None:
    """A route added without a key shows up here until README.md says it is open."""
    documented = documented_open_routes()
    found = open_routes(create_app(settings_for(tmp_path, api_docs=api_docs)))
    docs_pages = {"GET /docs", "GET /docs/oauth2-redirect", "GET /redoc"}
    assert found == documented - (set() if api_docs else docs_pages)
    assert "GET /openapi.json" in found and "GET /metrics" in found and "GET /healthz" in found
