"""WebSocket close codes shared by the server and the Python client.

Standard codes come from RFC 6455; application codes (4xxx) mirror the HTTP
status a web developer would expect for the same situation.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Every close code collab sends, and what it means for the client."""

    NORMAL = 1000
    #: Server shutting down or restarting: reconnect (possibly elsewhere).
    GOING_AWAY = 1001
    #: Malformed, truncated or unknown Yjs message.
    PROTOCOL_ERROR = 1002
    #: A text frame: the Yjs protocol is binary only.
    UNSUPPORTED_DATA = 1003
    #: A well-formed message whose update or awareness payload was refused.
    INVALID_DATA = 1007
    #: A message above the configured maximum size.
    MESSAGE_TOO_BIG = 1009
    #: The document's stored data is corrupt: it cannot be opened.
    INTERNAL_ERROR = 1011
    #: The connection could not keep up with its document and was dropped.
    TRY_AGAIN_LATER = 1013
    #: The connection broke a policy other codes do not name.
    POLICY_VIOLATION = 1008
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    #: The document was deleted while the connection was open.
    NOT_FOUND = 4404
    TIMEOUT = 4408
    #: HTTP fallback only: the session is gone (expired, or the frames it missed
    #: were dropped): open a new one, which resyncs.
    SESSION_EXPIRED = 4410
    #: An update would grow the document past ``--max-doc-size``.
    DOCUMENT_TOO_LARGE = 4413
    #: The connection sent faster than ``--rate-messages`` / ``--rate-bytes``.
    RATE_LIMITED = 4429

    @classmethod
    def is_fatal(cls, code: int | None) -> bool:
        """Whether reconnecting after this close would only fail again.

        Bad input, auth failures and a deleted document are final; everything
        else (shutdown, overload, a dropped network) is worth a retry.
        """
        return code in _FATAL


_FATAL = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.INVALID_DATA,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.INTERNAL_ERROR,
        CloseCode.UNAUTHORIZED,
        CloseCode.FORBIDDEN,
        CloseCode.NOT_FOUND,
        CloseCode.DOCUMENT_TOO_LARGE,
    }
)
