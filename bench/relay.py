"""The bench's ceiling: an aiohttp relay that forwards frames without any CRDT work.

    python bench/relay.py --port 9000

Clients connect to ``ws://HOST:PORT/ws/{doc}`` like to collab.  A sync
step 1 is answered with an empty step 2 (the relay has no document), a
step 2 or an update is forwarded to every other client of the document as
an update, awareness as it is.  No state is kept, so a late joiner gets
nothing: the relay only bounds what fan-out through aiohttp can cost.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import WSMsgType, web

EMPTY_STEP2 = bytes([0, 1, 2, 0, 0])
EMPTY_UPDATE_FRAMES = {bytes([0, 1, 2, 0, 0]), bytes([0, 2, 2, 0, 0])}
ROOMS = web.AppKey("rooms", dict[str, set[web.WebSocketResponse]])


async def handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
    await ws.prepare(request)
    rooms = request.app[ROOMS]
    name = request.match_info["doc"]
    room = rooms.setdefault(name, set())
    room.add(ws)
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.BINARY:
                continue
            frame: bytes = msg.data
            if frame[:2] == b"\x00\x00":  # sync step 1
                await ws.send_bytes(EMPTY_STEP2)
                continue
            if frame[:2] == b"\x00\x01":  # step 2: forward it as an update
                if frame in EMPTY_UPDATE_FRAMES:
                    continue
                frame = b"\x00\x02" + frame[2:]
            for other in room:
                if other is not ws:
                    await other.send_bytes(frame)
    finally:
        room.discard(ws)
        if not room:
            del rooms[name]
    return ws


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app[ROOMS] = {}
    app.router.add_get("/ws/{doc:.+}", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"relay serving ws://{host}:{port}/ws/{{doc}}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
