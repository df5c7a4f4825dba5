"""pycrdt-websocket served the way its documentation shows: ASGIServer under Hypercorn.

    bench/.venv-peers/bin/python bench/peers/pycrdt_websocket_server.py --port 9000

Runs in its own virtualenv (``bench/.venv-peers``, made by the bench's
setup), never in collab's.  The room is the URL path, so ``/ws/{doc}``
works as it does for collab.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from hypercorn import Config
from hypercorn.asyncio import serve
from pycrdt.websocket import ASGIServer, WebsocketServer


async def main(host: str, port: int) -> None:
    websocket_server = WebsocketServer()
    app = ASGIServer(websocket_server)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.websocket_max_message_size = 64 * 1024 * 1024
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with websocket_server:
        print(f"pycrdt-websocket serving ws://{host}:{port}/", flush=True)
        await serve(app, config, mode="asgi", shutdown_trigger=stop.wait)  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
