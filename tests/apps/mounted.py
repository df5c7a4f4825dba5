"""A parent aiohttp application with collab mounted under /collab/ (run by the tests).

usage: python -m tests.apps.mounted PORT STORE_URL
"""

from __future__ import annotations

import sys

from aiohttp import web

import collab


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"app": "parent", "collab_running": SERVER.running})


SERVER = collab.Server(collab.Settings(store=sys.argv[2]), frontend=False)


def main() -> None:
    app = web.Application()
    app.router.add_get("/hello", hello)
    app.add_subapp("/collab/", SERVER.app)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
