"""Which `Host` the box answers to, and which proxy it believes about the scheme and the client.

**Hosts (DNS rebinding).** A page on `http://evil.example:30080/` whose name an attacker re-points at the
box's address reaches the box from a shopper's browser as a same-origin page: its `Origin` and `Host`
agree (`evil.example:30080`), so the kiosk's origin check alone cannot tell it apart. Its `Host` is the
attacker's name, though, and that is what is refused here, on every route. Accepted without listing:
IP addresses (how kiosks reach the box: `http://<node address>:30080/`; a rebinding page never names one)
and names without a dot (`localhost`, a LAN host name: no name in public DNS lacks one). Anything else
must be in `KIOSK_ALLOWED_HOSTS`; a request for another host gets 421 `misdirected_request` in its API
family's shape. A request with no `Host` at all (HTTP/1.0) is not a browser's and passes.

**Trusted proxies.** Only when the connection comes from a `KIOSK_TRUSTED_PROXIES` address are
`X-Forwarded-Proto` (so a kiosk served over TLS at the proxy gets a `Secure` cookie) and the last
`X-Forwarded-For` hop (the shopper's address, which the kiosk's rate limit uses) believed.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from edge.api.errors import OPENAI_PATHS, ApiError, envelope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class MisdirectedRequest(ApiError):
    # werkzeug's MisdirectedRequest, snake-cased as Dify's envelope does for framework errors
    status, code, openai_type = 421, "misdirected_request", "invalid_request_error"


def host_name(host: str) -> str | None:
    """The name of a `Host` value without its port, lower-cased; None when it is not a host at all."""
    host = host.strip().lower()
    if host.startswith("["):  # [v6]:port
        name, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        name, colon, port = host.partition(":")
        if colon and not (port.isdigit() and port.isascii()):
            return None
    name = name.rstrip(".")
    if not name or not name.isascii() or any(c.isspace() or c in "/\\@?#" for c in name):
        return None
    return name


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(name: str, allowed: Iterable[str]) -> bool:
    """IP addresses and dotless names always; otherwise an exact entry, a `*.suffix` entry, or `*`."""
    if _is_ip(name) or "." not in name:
        return True
    for entry in allowed:
        if entry == "*" or entry == name or (entry.startswith("*.") and name.endswith(entry[1:])):
            return True
    return False


def networks(proxies: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _in(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class HostCheck:
    """ASGI middleware: refuse other hosts (421), and apply a trusted proxy's forwarded scheme and client."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = (), trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = tuple(allowed_hosts)
        self.trusted = networks(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for key, value in scope.get("headers") or []:
            headers.setdefault(key, value)  # the first of each, as Starlette's `request.headers.get`
        host = headers.get(b"host")
        if host is not None:
            name = host_name(host.decode("latin-1"))
            if name is None or not host_allowed(name, self.allowed):
                await self._refuse(scope, send, host.decode("latin-1"))
                return
        client = scope.get("client")
        if self.trusted and client and _in(client[0], self.trusted):
            scope = self._forwarded(scope, headers, client)
        await self.app(scope, receive, send)

    def _forwarded(self, scope: Scope, headers: dict[bytes, bytes], client: tuple[str, int]) -> Scope:
        scope = dict(scope)
        proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            scope["scheme"] = proto if scope["type"] == "http" else {"http": "ws", "https": "wss"}[proto]
        hops = [hop.strip() for hop in headers.get(b"x-forwarded-for", b"").decode("latin-1").split(",")]
        # The proxy appends the address it saw; hops before it are whatever the client claimed.
        for hop in reversed(hops):
            if not _is_ip(hop):
                break
            if not _in(hop, self.trusted):
                scope["client"] = (hop, 0)
                break
        return scope

    async def _refuse(self, scope: Scope, send: Send, host: str) -> None:
        if scope["type"] == "websocket":  # before the handshake: the server answers 403
            await send({"type": "websocket.close", "code": 1008})
            return
        error = MisdirectedRequest(
            f"This box does not answer to the host {host[:100]!r}; if kiosks reach it by that name, "
            "add the name to KIOSK_ALLOWED_HOSTS."
        )
        body = json.dumps(envelope(error, str(scope.get("path", "")).startswith(OPENAI_PATHS))).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
