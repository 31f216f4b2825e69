"""Dashboard logins (docs/dashboard.md, "Login"): an operator logs in with one of the API's tokens and gets a
signed session cookie; every form and every state-changing request made with that cookie carries a CSRF token.

The cookie is `NAME:EXPIRES:NONCE:MAC`, the MAC an HMAC-SHA256 under the coordinator's session key over the
token's name, its configured SHA-256, the expiry and the nonce. The role is read from the config at every
request, so a token taken out of the config (or given another hash) ends its sessions at once; the key is read
from `dashboard.secret_file` (made, 0600, when missing) or drawn anew at each start (then a restart logs
everybody out). The CSRF token is an HMAC of the nonce: tied to one session, checked in constant time. Failed
logins are limited per client address (`LoginThrottle`). Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from agent.errors import ConfigError
from agent.fleet.settings import ApiToken, hash_token

COOKIE = "edge_session"
_DIGITS = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class Login:
    """A valid session: the token it was opened with (its role as configured now), and its CSRF token."""

    token: ApiToken
    expires: float
    csrf: str


class Sessions:
    """Opens and checks session cookies against the configured tokens."""

    def __init__(self, tokens: Sequence[ApiToken], key: bytes, lifetime_s: float) -> None:
        self.tokens = {token.name: token for token in tokens}
        self.key = key
        self.lifetime_s = lifetime_s
        self.revoked: Dict[str, float] = {}  # nonce -> when its session would have expired

    def open(self, presented: str, now: Optional[float] = None) -> Optional[str]:
        """The cookie value for a session of the token `presented`, or None when no configured token matches."""
        digest = hash_token(presented.strip()).encode()
        for token in self.tokens.values():
            if hmac.compare_digest(token.sha256.encode(), digest):
                expires = int((time.time() if now is None else now) + self.lifetime_s)
                nonce = secrets.token_urlsafe(16)
                return f"{token.name}:{expires}:{nonce}:{self._mac(token, expires, nonce)}"
        return None

    def check(self, cookie: Optional[str], now: Optional[float] = None) -> Optional[Login]:
        """The session a cookie stands for, or None (absent, forged, expired, or its token no longer configured)."""
        parts = (cookie or "").split(":")
        if len(parts) != 4 or not _DIGITS.fullmatch(parts[1]):
            return None
        name, expires_text, nonce, mac = parts
        token = self.tokens.get(name)
        expires = int(expires_text)
        if token is None or not hmac.compare_digest(mac.encode(), self._mac(token, expires, nonce).encode()):
            return None
        moment = time.time() if now is None else now
        if expires <= moment or nonce in self.revoked:
            return None
        return Login(token, float(expires), self._sign(f"csrf|{nonce}"))

    def revoke(self, cookie: str, now: Optional[float] = None) -> None:
        """End a session before its expiry (a logout): its nonce is refused from now on, by this process (the
        list lives in memory until the session would have expired; docs/dashboard.md says what that means)."""
        login = self.check(cookie, now)
        if login is None:
            return
        moment = time.time() if now is None else now
        self.revoked = {nonce: expires for nonce, expires in self.revoked.items() if expires > moment}
        self.revoked[cookie.split(":")[2]] = login.expires

    def _mac(self, token: ApiToken, expires: int, nonce: str) -> str:
        return self._sign(f"session|{token.name}|{token.sha256}|{expires}|{nonce}")

    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def csrf_ok(login: Login, presented: Optional[str]) -> bool:
    """Whether a form's or a header's CSRF token is the session's own."""
    return presented is not None and hmac.compare_digest(login.csrf.encode(), presented.encode())


def session_key(secret_file: str) -> bytes:
    """The key sessions are signed with: from `secret_file` (made with a random key, mode 0600, when missing),
    or a random one for this process when no file is configured."""
    if not secret_file:
        return secrets.token_bytes(32)
    path = Path(secret_file)
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
        key = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"dashboard.secret_file: {path}: {error.strerror or error}") from None
    if len(key) < 32:
        raise ConfigError(f"dashboard.secret_file: {path} holds fewer than 32 characters")
    return key.encode("utf-8")


class LoginThrottle:
    """At most `limit` failed logins per client address within `window_s`; then it must wait."""

    def __init__(self, limit: int = 10, window_s: float = 300.0) -> None:
        self.limit, self.window_s = limit, window_s
        self.failures: Dict[str, List[float]] = {}

    def blocked(self, address: str, now: Optional[float] = None) -> bool:
        """Whether this address has used up its failed attempts for now."""
        return len(self._recent(address, time.monotonic() if now is None else now)) >= self.limit

    def failed(self, address: str, now: Optional[float] = None) -> None:
        """Count one failed login from this address."""
        moment = time.monotonic() if now is None else now
        self.failures[address] = self._recent(address, moment) + [moment]
        if len(self.failures) > 10_000:  # an address flood: forget the oldest
            self.failures.pop(next(iter(self.failures)))

    def _recent(self, address: str, now: float) -> List[float]:
        return [moment for moment in self.failures.get(address, []) if now - moment < self.window_s]
