"""The box's own pages (the kiosk page, the staff page): their files, headers and cache rules.

Every asset is a file of `edge/ui/` shipped with the package; a page names no other host, and its
Content-Security-Policy forbids the browser to reach one. Assets are read once at start-up (a few
kilobytes), and a page links them as `<prefix><name>?v=<hash>` so they can be cached for good yet
change with an upgrade.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from fastapi import Request, Response

from edge.api.errors import NotFound

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8", ".js": "text/javascript"}
# The page may reach the box and nothing else; `data:` only for the empty favicon.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    version: str

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def load_assets(page: str, prefix: str, names: tuple[str, ...]) -> dict[str, Asset]:
    """`page` and the files it links under `prefix` (`names`), each under its hash; the page's links
    carry those hashes (a link to a file not in `names` fails here, at start-up)."""
    folder = resources.files("edge") / "ui"
    assets: dict[str, Asset] = {}
    for name in (page, *names):
        body = (folder / name).read_bytes()
        content_type = CONTENT_TYPES[name[name.rindex(".") :]]
        assets[name] = Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16])
    html = assets[page]
    link = re.escape(prefix.encode())
    linked = re.sub(
        rb'"' + link + rb'([\w.-]+)"',
        lambda m: b'"%s%s?v=%s"' % (prefix.encode(), m.group(1), assets[m.group(1).decode()].version.encode()),
        html.body,
    )
    assets[page] = Asset(linked, html.content_type, html.version)
    return assets


def page_response(asset: Asset) -> Response:
    """A page itself: never cached (each load may set a new session)."""
    return Response(
        asset.body, media_type=asset.content_type, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"}
    )


def asset_response(
    assets: dict[str, Asset], name: str, page: str, request: Request, version: str | None, missing: str
) -> Response:
    """One linked file. Linked with its own hash: cache for good. Anything else: revalidate (a 304 is a
    few bytes). The page itself is not served as an asset: 404 `missing`, as for any other name."""
    asset = assets.get(name)
    if asset is None or name == page:
        raise NotFound(missing)
    cache = "public, max-age=31536000, immutable" if version == asset.version else "no-cache"
    headers = {**SECURITY_HEADERS, "Cache-Control": cache, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)
