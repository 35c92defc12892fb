"""OAuth2 access tokens for the mail sessions (docs/configuration.md, `auth = "oauth2"`).

The fetch process logs in to IMAP and the send process to SMTP with XOAUTH2; each
holds one `AccessTokens` for its account, which asks the token endpoint for a token
(with the refresh token, or the client-credentials grant with `oauth2_scope`),
renews it before it expires, and again at once when the server refused it. The
HTTP exchange is authlib's (`authlib.integrations.requests_client`).

    tokens = AccessTokens.for_config(cfg.imap, "imap")   # None unless auth = "oauth2"
    client.oauth2_login(cfg.imap.username, tokens.current())
    tokens.renew_at()     # when a session logged in now should log in again
    tokens.refused()      # the server said no: the next current() is a new token

A session stays logged in after its token expires on most servers, but not on all
(Exchange Online ends IMAP sessions with "AccessTokenExpired"), so the mail processes
log in again, with a fresh token, before the token of their session expires.

With a static `oauth2_token_file` (renewed by other means) `current()` is that token.
A refresh token the endpoint rotates goes to `on_rotate` (the mail processes keep it
in the database, service/mailprocess.py `access_tokens`), since the credential file
cannot be written by the service and the old token may no longer work. Tokens,
secrets and refresh tokens never reach the log.
"""

from __future__ import annotations

import logging
import threading
import time

from .errors import MaildeskError

log = logging.getLogger(__name__)

DEFAULT_LIFETIME = 3600.0  # when the endpoint does not say (RFC 6749 5.1: expires_in is recommended)
MAX_MARGIN = 300.0  # renew at most five minutes early


class TokenError(MaildeskError):
    """The token endpoint gave no token; the message names what to check."""


class AccessTokens:
    def __init__(self, conf, where: str, clock=time.time):
        self.conf, self.where, self.clock = conf, where, clock
        self._lock = threading.Lock()  # the send process asks from several connections at once
        self._token: str | None = conf.oauth2_token if not conf.oauth2_token_url else None
        self._expires_at: float | None = None  # None: unknown (a static token)
        self._issued_at = 0.0
        self._refresh_token: str | None = conf.oauth2_refresh_token
        self.on_rotate = lambda refresh_token: None  # the endpoint issued a new refresh token
        self.renewals = 0

    @classmethod
    def for_config(cls, conf, where: str) -> AccessTokens | None:
        return cls(conf, where) if conf.auth == "oauth2" else None

    @property
    def renews_itself(self) -> bool:
        return self.conf.oauth2_token_url is not None

    def current(self) -> str:
        """A token that is not about to expire: the one held, or a new one."""
        with self._lock:
            if self._token is None or (self.renews_itself and self.clock() >= self._renew_time()):
                self._fetch()
            assert self._token is not None  # _fetch sets it or raises TokenError
            return self._token

    def use_refresh_token(self, refresh_token: str) -> None:
        """Renew with this refresh token (one the endpoint rotated to) instead of the
        one the config gave."""
        self._refresh_token = refresh_token

    def expires_at(self) -> float | None:
        return self._expires_at

    def renew_at(self) -> float | None:
        """When a session that logged in with the current token should log in again
        (None: never, for a static token)."""
        return self._renew_time() if self.renews_itself and self._expires_at is not None else None

    def refused(self, token: str) -> bool:
        """The server refused `token`; True if a new one is worth a try (the next
        `current()` fetches it)."""
        if not self.renews_itself:
            return False
        with self._lock:
            if self._token == token:
                self._token = None
        return True

    def _renew_time(self) -> float:
        if self._expires_at is None:
            return float("inf")
        lifetime = self._expires_at - self._issued_at
        return self._expires_at - min(MAX_MARGIN, max(0.5, lifetime / 4))

    def _fetch(self) -> None:
        """One exchange with the token endpoint (under the lock)."""
        from authlib.common.errors import AuthlibBaseError
        from authlib.integrations.requests_client import OAuth2Session
        from requests import RequestException

        c = self.conf
        session = OAuth2Session(
            client_id=c.oauth2_client_id, client_secret=c.oauth2_client_secret, scope=c.oauth2_scope,
            token_endpoint_auth_method="client_secret_post" if c.oauth2_client_secret else "none",
        )
        asked = self.clock()
        try:
            if self._refresh_token:
                token = session.refresh_token(c.oauth2_token_url, refresh_token=self._refresh_token, timeout=30)
            else:
                token = session.fetch_token(c.oauth2_token_url, grant_type="client_credentials", timeout=30)
        except AuthlibBaseError as e:
            # e.error is the endpoint's code (invalid_grant, invalid_client, ...); its description may echo input
            raise TokenError(f"{self.where}.oauth2_token_url: the token endpoint refused to issue a token: "
                             f"{getattr(e, 'error', None) or type(e).__name__} (check {self.where}.oauth2_client_id "
                             f"and the client secret and refresh token files)") from None
        except (RequestException, ValueError) as e:
            raise TokenError(f"{self.where}.oauth2_token_url: no token from {c.oauth2_token_url}: "
                             f"{type(e).__name__}") from None
        finally:
            session.close()
        access = token.get("access_token")
        if not isinstance(access, str) or not access:
            raise TokenError(f"{self.where}.oauth2_token_url: the endpoint's answer holds no access_token")
        try:
            lifetime = float(token.get("expires_in") or DEFAULT_LIFETIME)
        except (TypeError, ValueError):
            lifetime = DEFAULT_LIFETIME
        rotated = token.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != self._refresh_token:
            self._refresh_token = rotated  # the old one may stop working
            self.on_rotate(rotated)
        self._token, self._issued_at, self._expires_at = access, asked, asked + max(1.0, lifetime)
        self.renewals += 1
        log.info("%s: obtained an OAuth2 access token for %s, valid %.0f s", self.where, c.username, lifetime)
