"""Password hashes with the standard library's scrypt (no new dependency).

A hash is stored as ``scrypt$n$r$p$salt$digest`` (base64), so its cost can be
raised later without breaking old hashes.  Hashing takes tens of
milliseconds of CPU on purpose: callers run it in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

#: scrypt cost (RFC 7914: N=2**14, r=8, p=1 is the interactive-login recommendation).
N, R, P = 2**14, 8, 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return "$".join(
        ["scrypt", str(N), str(R), str(P), _b64(salt), _b64(digest)],
    )


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``, in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


#: Compared against when the user does not exist, so a wrong name costs as
#: long as a wrong password (no user enumeration by timing).
DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
