"""OAuth2 that renews itself, against real servers: a token and introspection
endpoint on loopback that issues tokens living a few seconds, Dovecot's own `oauth2`
passdb validating the IMAP logins against it, and an aiosmtpd sink whose XOAUTH2
asks the same endpoint. The desk must renew its tokens and keep fetching and sending
across several expiries, and renew at once when a server refuses a token."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.conftest import mail, wait_until
from tests.sandbox import LOOPBACK, Dovecot, SmtpSink, _SinkHandler, free_port

LIFETIME = 4  # seconds an access token lives


class TokenEndpoint:
    """RFC 6749 token endpoint (refresh_token and client_credentials grants) and RFC
    7662 introspection, on a loopback port. Refresh tokens rotate at every use."""

    def __init__(self, lifetime: float = LIFETIME):
        self.lifetime = lifetime
        self.clients: dict[str, dict] = {}  # client_id -> {"secret", "user", "refresh"}
        self.tokens: dict[str, tuple[str, str, float]] = {}  # token -> (client_id, user, expires_at)
        self.issued: dict[str, int] = {}
        self.refused: list[str] = []  # introspections of unknown, revoked or expired tokens
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                status, body = endpoint.answer(self.path, form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer((LOOPBACK, free_port()), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add_client(self, client_id: str, secret: str | None, user: str, refresh: str | None = None) -> None:
        self.clients[client_id] = {"secret": secret, "user": user, "refresh": refresh}

    def answer(self, path: str, form: dict) -> tuple[int, dict]:
        with self.lock:
            if path == "/introspect":
                entry = self.tokens.get(form.get("token", ""))
                if entry is None or entry[2] <= time.time():
                    self.refused.append(form.get("token", ""))
                    return 200, {"active": False}
                return 200, {"active": True, "username": entry[1], "client_id": entry[0], "exp": int(entry[2])}
            client = self.clients.get(form.get("client_id", ""))
            if path != "/token" or client is None or form.get("client_secret") != client["secret"]:
                return 401, {"error": "invalid_client"}
            answer = {}
            if form.get("grant_type") == "refresh_token":
                if form.get("refresh_token") != client["refresh"]:
                    return 400, {"error": "invalid_grant"}
                client["refresh"] = answer["refresh_token"] = "rt-" + secrets.token_hex(8)
            elif form.get("grant_type") != "client_credentials" or not form.get("scope"):
                return 400, {"error": "unsupported_grant_type"}
            token = "at-" + secrets.token_urlsafe(24)
            self.tokens[token] = (form["client_id"], client["user"], time.time() + self.lifetime)
            self.issued[form["client_id"]] = self.issued.get(form["client_id"], 0) + 1
            return 200, {**answer, "access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}

    def revoke_all(self) -> None:
        with self.lock:
            self.tokens.clear()

    def introspect(self, token: str) -> dict:
        data = urllib.parse.urlencode({"token": token}).encode()
        with urllib.request.urlopen(self.url + "/introspect", data, timeout=5) as response:
            return json.loads(response.read())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class OAuthDovecot(Dovecot):
    """The sandbox's Dovecot, with XOAUTH2/OAUTHBEARER validated by its oauth2 passdb
    against the endpoint's introspection (plain logins stay for the test's APPENDs)."""

    def __init__(self, introspection_url: str):
        self.introspection_url = introspection_url
        super().__init__()

    def _config(self) -> str:
        oauth2 = self.root / "dovecot-oauth2.conf.ext"
        oauth2.write_text(f"introspection_mode = post\nintrospection_url = {self.introspection_url}\n"
                          "force_introspection = yes\nusername_attribute = username\n"
                          "active_attribute = active\nactive_value = true\n")
        config = super()._config()
        config = config.replace("auth_mechanisms = plain login", "auth_mechanisms = plain login xoauth2 oauthbearer")
        return config.replace("passdb {\n  driver = passwd-file\n", "passdb {\n  driver = passwd-file\n"
                              "  mechanisms = plain login\n", 1) + (
            f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {oauth2}\n}}\n")


class OAuthSink(SmtpSink):
    """The sandbox's SMTP sink, taking XOAUTH2 only, each token checked by the endpoint."""

    def __init__(self, endpoint: TokenEndpoint):
        super().__init__()
        self.endpoint = endpoint
        self.refusals = 0

    def start(self) -> OAuthSink:
        sink = self

        class Handler(_SinkHandler):
            async def auth_XOAUTH2(self, server, args):
                if len(args) == 2:
                    response = args[1].encode()
                else:
                    response = await server.challenge_auth("", encode_to_b64=False)
                try:
                    fields = dict(part.split("=", 1) for part in base64.b64decode(response).decode().split("\x01")
                                  if "=" in part)
                    user, token = fields["user"], fields["auth"].removeprefix("Bearer ")
                except (ValueError, KeyError, UnicodeDecodeError):
                    return AuthResult(success=False, handled=False, message="501 5.5.2 malformed XOAUTH2 response")
                answer = await asyncio.get_running_loop().run_in_executor(None, sink.endpoint.introspect, token)
                if not answer.get("active") or answer.get("username") != user:
                    sink.refusals += 1
                    return AuthResult(success=False, handled=False, message="535 5.7.8 token invalid or expired")
                return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))

        self._controller = Controller(Handler(self), hostname=self.host, port=self.port,
                                      server_hostname="sink.localhost", ready_timeout=5.0, decode_data=False,
                                      auth_require_tls=False)
        self._controller.start()
        self._ports_fixed = True
        return self


@pytest.fixture(scope="module")
def endpoint():
    e = TokenEndpoint()
    yield e
    e.close()


@pytest.fixture(scope="module")
def oauth_dovecot(endpoint):
    with OAuthDovecot(endpoint.url + "/introspect") as server:
        yield server


@pytest.fixture(scope="module")
def oauth_sink(endpoint):
    with OAuthSink(endpoint) as sink:
        yield sink


@pytest.fixture
def oauth_desk(desk, endpoint, oauth_dovecot, oauth_sink, tmp_path):
    """The desk on OAuth2 for both servers: IMAP with a refresh token (delegated),
    SMTP with the client-credentials grant; the secrets are credential files."""
    oauth_dovecot.add_user(desk.user, "plain-for-the-tests-appends")
    desk.dovecot, desk.smtp = oauth_dovecot, oauth_sink
    oauth_sink.reset()
    endpoint.add_client(f"imap-{desk.user}", "imap-client-secret", desk.user, refresh="rt-first")
    endpoint.add_client(f"smtp-{desk.user}", "smtp-client-secret", "helpdesk@example.test")
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name, value in (("imap-client-secret", "imap-client-secret"), ("imap-refresh-token", "rt-first"),
                        ("smtp-client-secret", "smtp-client-secret")):
        (creds / name).write_text(value + "\n")
    desk.write_config(
        desk={"credentials_dir": str(creds)},
        imap={"host": oauth_dovecot.host, "port": oauth_dovecot.port, "password": None, "auth": "oauth2",
              "oauth2_token_url": endpoint.url + "/token", "oauth2_client_id": f"imap-{desk.user}",
              "oauth2_client_secret_file": "imap-client-secret", "oauth2_refresh_token_file": "imap-refresh-token"},
        smtp={"host": oauth_sink.host, "port": oauth_sink.port, "username": "helpdesk@example.test", "auth": "oauth2",
              "oauth2_token_url": endpoint.url + "/token", "oauth2_client_id": f"smtp-{desk.user}",
              "oauth2_client_secret_file": "smtp-client-secret", "oauth2_scope": "https://smtp.example.test/.default"},
    )
    desk.imap_client, desk.smtp_client = f"imap-{desk.user}", f"smtp-{desk.user}"
    return desk


def test_the_desk_renews_its_tokens_and_keeps_fetching_and_sending_across_expiries(oauth_desk, endpoint):
    desk = oauth_desk
    proc = desk.spawn("run")
    started = time.monotonic()
    try:
        for n in range(4):  # one mail per token lifetime and more: three expiries at least
            desk.deliver(mail(f"user{n}@example.org", f"Printer {n} jammed", "Tray 2."))
            wait_until(lambda n=n: desk.sent(to=f"user{n}@example.org"), 30, what=f"the acknowledgement of mail {n}")
            time.sleep(LIFETIME + 1)
        assert proc.poll() is None
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    log = err.decode()
    assert proc.returncode == 0, log[-3000:]
    elapsed = time.monotonic() - started
    assert elapsed > 3 * LIFETIME
    assert len(desk.tickets()) == 4
    # renewed before each expiry, for both servers: each token was still valid when used
    assert endpoint.issued[desk.imap_client] >= 4 and endpoint.issued[desk.smtp_client] >= 4
    assert desk.smtp.refusals == 0 and "refused the OAuth2 token" not in log
    assert {m.auth_login for m in desk.sent()} == {"helpdesk@example.test"}
    assert "obtained an OAuth2 access token" in log and "at-" not in log and "rt-" not in log  # no token in the log


def test_a_refused_token_is_renewed_at_once_for_imap_and_smtp(oauth_desk, endpoint):
    desk = oauth_desk
    endpoint.lifetime = 3600  # so only the refusal can make the desk ask again
    try:
        desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
        desk.run()
        assert desk.sent(to="jane@example.org")
        before = dict(endpoint.issued)
        endpoint.revoke_all()  # e.g. the admin revoked the app's sessions
        from maildesk import store
        from maildesk.config import load_config
        from maildesk.mailin.mailbox import MailboxSession
        from maildesk.mailout.smtp import Connections
        from maildesk.service.mailprocess import access_tokens

        # what a new fetch and send process starts from: the refresh token the endpoint
        # rotated to (kept in the database), and then a token the servers refuse
        cfg = load_config(desk.config_path)
        store.open_database(cfg.database.url)
        imap_tokens, smtp_tokens = access_tokens(cfg.imap, "imap"), access_tokens(cfg.smtp, "smtp")
        for tokens in (imap_tokens, smtp_tokens):
            tokens._token, tokens._expires_at, tokens._issued_at = "at-revoked", time.time() + 3600, time.time()
        session = MailboxSession(cfg.imap, imap_tokens).connect()
        session.close()
        connections = Connections(cfg.smtp, tokens=smtp_tokens)
        client = connections.run(connections.take())
        assert client.is_connected
        connections.give_back(client)
        connections.close()
        assert endpoint.issued[desk.imap_client] == before[desk.imap_client] + 1
        assert endpoint.issued[desk.smtp_client] == before[desk.smtp_client] + 1
        assert "at-revoked" in endpoint.refused
    finally:
        endpoint.lifetime = LIFETIME


def test_a_token_endpoint_that_refuses_is_an_error_that_names_the_key(oauth_desk, endpoint):
    desk = oauth_desk
    (desk.tmp / "credentials" / "imap-client-secret").write_text("wrong\n")
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
    code, out, err = desk.cli("run", "--once")
    assert code == 1 and desk.inbound() == []  # nothing fetched, nothing lost
    code, out, err = desk.cli("status", "--json")
    error = json.loads(out)["last_fetch_error"]
    assert error.startswith("imap.oauth2_token_url: the token endpoint refused to issue a token: invalid_client")
