"""The aiosignalr (PyPI) baseline for signalbox-bench: the same hub and publish API as bench-target.

Hub at /hubs/bench (JSON and MessagePack over WebSockets, skipNegotiation), HS256 JWT from the
`access_token` query parameter (verified here with hmac; its `sub` becomes the user id), a
`JoinGroup` method, and POST /broadcast, /group, /publish (user) sending the `Msg` client method
with the arguments [t, phase, seq, pad] like bench-target does.

Run: python aiosignalr_server.py --port 0 --secret SECRET   (prints "Now listening on: http://...")
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import resource
import sys
import time

from aiohttp import web
from aiosignalr.server import Hub, ServerOptions, SignalRServer
from aiosignalr.server.aiohttp_server import build_aiohttp_app

SECRET = b""


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_jwt(token: str) -> str | None:
    try:
        header, payload, signature = token.split(".")
        expected = hmac.new(SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, b64url_decode(signature)):
            return None
        claims = json.loads(b64url_decode(payload))
        if json.loads(b64url_decode(header)).get("alg") != "HS256":
            return None
        if claims.get("exp", 0) + 30 < time.time():
            return None
        return claims.get("sub")
    except (ValueError, KeyError):
        return None


class BenchHub(Hub):
    async def on_connected(self) -> None:
        user = verify_jwt(self.context.query_string.get("access_token", ""))
        if user is None:
            await self.context.close(1008, "Unauthorized")
            return
        self.context.user_id = user

    async def JoinGroup(self, group: str) -> None:  # noqa: N802 (SignalR method name)
        await self.groups.add(group)


def main() -> None:
    global SECRET
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    SECRET = args.secret.encode()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    server = SignalRServer(BenchHub, options=ServerOptions())
    lifetime = server.lifetime

    async def body(request: web.Request) -> tuple[dict, tuple]:
        data = await request.json()
        return data, (data["t"], data["phase"], data["seq"], data.get("pad", ""))

    async def broadcast(request: web.Request) -> web.Response:
        _, msg = await body(request)
        await lifetime.send_all("Msg", msg)
        return web.Response(status=202)

    async def group(request: web.Request) -> web.Response:
        data, msg = await body(request)
        await lifetime.send_group(data["group"], "Msg", msg)
        return web.Response(status=202)

    async def publish(request: web.Request) -> web.Response:
        data, msg = await body(request)
        await lifetime.send_user(data["user"], "Msg", msg)
        return web.Response(status=202)

    async def run() -> None:
        app = build_aiohttp_app(server, path="/hubs/bench")
        server._path = "/hubs/bench"
        app.router.add_post("/broadcast", broadcast)
        app.router.add_post("/group", group)
        app.router.add_post("/publish", publish)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, backlog=4096)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(f"Now listening on: http://{host}:{port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
