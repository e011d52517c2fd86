"""API keys for `retina-seg-serve --api-keys FILE`: the key file, the ASGI layer that checks
`Authorization: Bearer <key>`, and `retina-seg-serve-key NAME --file FILE`, which makes a key and prints it once.

The file holds one `name:sha256-hex` line per key (blank lines and `#` comments allowed), never the key
itself. A key is 32 random bytes (`secrets.token_urlsafe`, 256 bits), so its plain SHA-256 cannot be reversed
or guessed from a list: a salt or a slow hash defends low-entropy passwords, not random keys. A presented key is
hashed and compared with every stored hash in constant time (`hmac.compare_digest`), all of them, whichever
matches. A key's name is what the access log and `/metrics` show; the key never appears in a log, a metric or an
error message. Revoke a key by deleting its line and restarting the server.

Answers: no key (or not a Bearer one) HTTP 401 `UNAUTHENTICATED`; a key the file does not hold HTTP 403
`PERMISSION_DENIED`; both one line in MLflow's error shape. `/ping` and `/health` stay open for load balancers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Dict, Iterable

from retina_seg.errors import USER_ERROR, UserError
from retina_seg.serve.exchange import FORBIDDEN, UNAUTHENTICATED, current
from retina_seg.serve.guard import read_body, refuse

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DIGEST = re.compile(r"[0-9a-f]{64}")
PREFIX = "rsk_"  # makes a leaked key recognisable to secret scanners
CHALLENGE = (b"www-authenticate", b'Bearer realm="retina-seg"')


class KeyFileError(UserError):
    """A key file that cannot be used; the message names the file and the line, never a line's content."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys(path: Path) -> Dict[str, str]:
    """name -> SHA-256 hex of its key, from the key file at `path`."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"--api-keys {path}: cannot be read ({type(exc).__name__})") from None
    keys: Dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, stored = line.partition(":")
        if not NAME.fullmatch(name) or not DIGEST.fullmatch(stored):
            raise KeyFileError(f"--api-keys {path}: line {number} is not 'name:<64 hex digits of SHA-256>' "
                               "(make keys with retina-seg-serve-key NAME --file FILE)")
        if name in keys:
            raise KeyFileError(f"--api-keys {path}: line {number} repeats the key name '{name}'")
        keys[name] = stored
    if not keys:
        raise KeyFileError(f"--api-keys {path}: holds no key (make one with retina-seg-serve-key NAME --file {path})")
    return keys


def name_of(key: str, keys: Dict[str, str]) -> str | None:
    """The name of `key` in `keys`, compared with every stored hash in constant time; None if none matches."""
    presented, found = digest(key), None
    for name, stored in keys.items():
        if hmac.compare_digest(presented, stored):
            found = name
    return found


def bearer(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of the first `Authorization: Bearer <token>` header, or None."""
    value = next((v for k, v in headers if k == b"authorization"), None)
    if value is None:
        return None
    scheme, _, token = value.decode("latin-1").strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


class ApiKeys:
    """ASGI layer: requests to a path in `protected` need a key from `keys`; every other request passes.
    A refused request's body is read to its end without being kept (within `timeout` seconds), so that every
    client gets the answer rather than a reset connection."""

    def __init__(self, app, keys: Dict[str, str], protected: Iterable[str], timeout: float):
        self.app = app
        self.keys = keys
        self.protected = frozenset(protected)
        self.timeout = timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.protected:
            await self.app(scope, receive, send)
            return
        token = bearer(scope["headers"])
        name = None if token is None else name_of(token, self.keys)
        if name is not None:
            exchange = current()
            if exchange is not None:
                exchange.key = name
            await self.app(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.timeout):
                await read_body(receive, 0)
        except TimeoutError:
            pass
        if token is None:
            await refuse(send, 401, "UNAUTHENTICATED", f"{scope['path']} needs an API key: send the header "
                         "'Authorization: Bearer <key>'", UNAUTHENTICATED, (CHALLENGE,))
        else:
            await refuse(send, 403, "PERMISSION_DENIED", "the API key is not one this server accepts", FORBIDDEN)


def add_key(name: str, path: Path) -> str:
    """Make a new key named `name`, append its hash to the key file at `path` (created readable by its owner
    only) and return the key: the only time it exists outside its user's hands."""
    if not NAME.fullmatch(name):
        raise KeyFileError(f"key name {name!r}: expected 1-64 letters, digits, '.', '_' or '-', starting with a "
                           "letter or digit")
    if not path.parent.is_dir():
        raise KeyFileError(f"--file {path}: folder '{path.parent}' does not exist")
    existing = read_keys(path) if path.is_file() and path.read_text().strip() else {}
    if name in existing:
        raise KeyFileError(f"--file {path}: already holds a key named '{name}' (delete its line to replace it)")
    key = PREFIX + secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a") as file:
        file.write(f"{name}:{digest(key)}\n")
    return key


def main() -> None:
    """`retina-seg-serve-key NAME --file FILE`: the key on stdout (alone, for scripts), what was done on stderr."""
    parser = argparse.ArgumentParser(prog="retina-seg-serve-key", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="who or what the key is for, e.g. clinic-a (shown in the access log)")
    parser.add_argument("--file", required=True, type=Path, help="the key file retina-seg-serve --api-keys reads")
    args = parser.parse_args()
    try:
        key = add_key(args.name, args.file)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(USER_ERROR)
    print(key)
    print(f"added key '{args.name}' to {args.file} (only its SHA-256 is stored: this is the one time the key is "
          "shown)", file=sys.stderr)
