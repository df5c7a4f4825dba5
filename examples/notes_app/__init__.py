"""A notes app that embeds collab: its own users and sign-in, collab under ``/collab/``.

See README.md here; ``create_app(Config(...))`` builds the aiohttp application.
"""

from .app import Config, create_app

__all__ = ["Config", "create_app"]
