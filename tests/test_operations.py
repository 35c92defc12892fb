"""Running the desk: IMAP over TLS, polling without IDLE, systemd notifications,
template overrides, the report, and the other ways an admin sets it up."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.builders import answer, mail, open_ticket
from tests.conftest import both_databases, wait_until
from tests.sandbox import Dovecot


@pytest.fixture(scope="module")
def tls_dovecot():
    with Dovecot(tls=True) as server:
        yield server


@pytest.fixture(scope="module")
def polling_dovecot():
    with Dovecot(idle=False) as server:
        yield server


def _use(desk, server, **imap):
    server.add_user(desk.user, "secret")
    desk.dovecot = server
    desk.write_config(imap={"host": server.host, "port": server.port, **imap})


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_imap_over_tls_with_a_private_ca(desk, tls_dovecot, mode):
    port = tls_dovecot.port if mode == "starttls" else tls_dovecot.ssl_port
    _use(desk, tls_dovecot, port=port, security=mode, ca_file=str(tls_dovecot.cert_path))
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
    desk.run()
    assert len(desk.tickets()) == 1


def test_an_untrusted_certificate_is_refused_with_a_clear_error(desk, tls_dovecot):
    _use(desk, tls_dovecot, port=tls_dovecot.ssl_port, security="ssl")
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
    code, out, err = desk.cli("run", "--once")
    assert code == 1 and desk.tickets() == []
    assert desk.inbound() == []  # nothing fetched, nothing lost: the mail waits on the server


def test_without_idle_the_daemon_polls(desk, polling_dovecot):
    _use(desk, polling_dovecot, poll_seconds=1)
    proc = desk.spawn("run")
    try:
        time.sleep(1.5)
        desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
        wait_until(lambda: desk.sent(to="jane@example.org"), 20, what="an acknowledgement by polling")
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode == 0


def test_systemd_hears_ready_status_and_watchdog(desk, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    proc = desk.spawn("run", env={"NOTIFY_SOCKET": path})
    heard = []
    try:
        while not (any("READY=1" in h for h in heard) and any("WATCHDOG=1" in h for h in heard)
                   and any("STATUS=" in h for h in heard)):
            heard.append(sock.recv(4096).decode())
    finally:
        proc.terminate()
        proc.wait(15)
        sock.close()
    assert proc.returncode == 0


def override_ack(desk, tmp_path, text: str) -> None:
    """The admin overrides the acknowledgement's text template with `text`; a printer jam comes in."""
    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / "ack.txt.j2").write_text(text)
    desk.write_config(desk={"templates_dir": str(overrides)})
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))


def test_a_template_is_overridden_by_a_file_of_the_same_name(desk, tmp_path):
    override_ack(desk, tmp_path, "Subject: We got it: {{ ticket.subject }}\n\nHi! {{ ref }} is logged. Hang on.\n")
    desk.run()
    (ack,) = desk.sent(to="jane@example.org")
    assert ack.subject == "[INC-1] We got it: Printer jam"  # the tag is always there
    assert "INC-1 is logged. Hang on." in ack.text
    assert "<html>" in ack.data.decode() or "text/html" in ack.data.decode()  # the shipped HTML part remains
    notice = desk.sent(to="alice@example.test")[0]
    assert "Assigned to you" in notice.subject  # other templates are the shipped ones


def test_a_broken_override_fails_its_mail_not_the_desk(desk, tmp_path):
    override_ack(desk, tmp_path, "Subject: ok\n\n{{ ticket.subject | no_such_filter }}\n")
    code, out, err = desk.cli("run", "--once")
    assert desk.tickets()[0]["status"] in ("new", "open")
    assert desk.sent(to="alice@example.test")  # the other mail goes out
    # `tickets show` names the failed mail by its subject; `--json` says why it has no text
    code, out, err = desk.cli("tickets", "show", "INC-1")
    assert code == 0, err
    assert "out  to jane@example.org [failed]  (ack)" in out  # and the history says why
    (ack,) = [m for m in desk.ticket("INC-1")["messages"] if m["kind"] == "ack"]
    assert ack["body"] == "(cannot render the ack template: TemplateAssertionError)"


def test_attachments_can_live_in_the_database(desk):
    desk.write_config(attachments={"store": "database"})
    data = b"hello attachment"
    desk.deliver(mail("a@example.org", "files", "see", attachments=[("a.txt", data, "text/plain")]))
    desk.run()
    (att,) = desk.ticket("INC-1")["messages"][0]["attachments"]
    assert att["filename"] == "a.txt" and att["size"] == len(data)
    from maildesk import store
    from maildesk.config import load_config

    store.open_database(load_config(desk.config_path).database.url)
    assert bytes(store.Blob.get_by_id(att["sha256"]).data) == data


def test_the_report_gives_kpis_overall_and_by_category_group_and_technician(desk):
    desk.deliver(mail("joe@example.org", "VPN down", "The vpn is down."))
    ack, notice = open_ticket(desk, subject="Printer jam", body="Tray 2.", now="2026-11-30T09:00:00+01:00")
    answer(desk, notice, "#resolve fixed\nCleared the jam.", now="2026-11-30T09:30:00+01:00")
    code, out, err = desk.cli("report", "--now", "2026-11-30T10:00:00+01:00", "--json")
    r = json.loads(out)
    assert r["opened"] == 2 and r["resolved"] == 1
    o = r["overall"]
    assert o["time_to_resolution"]["count"] == 1 and o["time_to_resolution"]["mean_minutes"] == 30.0
    assert o["first_contact_resolution_rate"] == 1.0 and o["sla_resolution_compliance"] == 1.0
    assert set(r["by_category"]) == {"Hardware", "Network/VPN"} and "alice@example.test" in r["by_technician"]
    assert r["backlog"]["open"] == {"high": 1} or sum(r["backlog"]["open"].values()) == 1
    code, text, err = desk.cli("report", "--now", "2026-11-30T10:00:00+01:00")
    assert code == 0 and "First-contact resolution" in text and "By technician" in text
    for window, now, opened in (
        (("--since", "2026-12-01"), "2026-12-02T10:00:00+01:00", 0),
        (("--until", "2026-11-29"), "2026-11-30T10:00:00+01:00", 0),
        (("--since", "2026-11-30", "--until", "2026-11-30"), "2026-11-30T10:00:00+01:00", 2),
    ):
        code, out, err = desk.cli("report", *window, "--json", "--now", now)
        assert json.loads(out)["opened"] == opened, window
    code, out, err = desk.cli("report", "--until", "30 Nov")
    assert code == 2 and "--until" in err


def test_tickets_list_filters_by_status_and_json_has_every_field(desk):
    desk.deliver(mail("jane@example.org", "Printer jam", "Tray 2."))
    desk.run(now="2026-11-30T09:00:00+01:00")  # winter: the desk's offset is +01:00 (not +02:00 in summer)
    (t,) = desk.tickets(status="open")
    assert desk.tickets(status="closed") == []
    for field in ("ref", "subject", "requester", "status", "category", "impact", "urgency", "priority", "group",
                  "assignee", "created_at", "response_due", "resolution_due", "first_response_at", "resolved_at",
                  "closed_at", "closure_code", "message_count", "parent"):
        assert field in t, field
    d = desk.ticket("INC-1")
    assert {"messages", "tasks", "events", "survey"} <= set(d)
    m = d["messages"][0]
    for field in ("direction", "message_id", "from", "to", "subject", "body", "internal", "created_at", "attachments"):
        assert field in m, field
    assert {"at", "actor", "kind", "detail"} <= set(d["events"][0])
    assert t["created_at"] == "2026-11-30T09:00:00+01:00"  # ISO-8601 with the desk's offset


def test_init_is_safe_to_run_again(desk):
    for _ in range(2):
        code, out, err = desk.cli("init")
        assert code == 0 and "already up to date" in out


@both_databases
def test_a_command_on_a_database_that_init_has_not_set_up_says_to_run_init_first(desk, tmp_path):
    """Every command asks whether the migrations are applied (store.pending_migrations);
    on a database without the desk's tables the answer is all of them."""
    import contextlib
    import io

    import tomli_w

    from maildesk.ops.cli import main
    from tests.builders import desk_config
    from tests.conftest import scratch_database

    config = tmp_path / "fresh.toml"

    def cli(*args: str) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            return main(["--config", str(config), *args]), err.getvalue()

    backend = "postgresql" if desk.db_url.startswith("postgresql") else "sqlite"
    with scratch_database(backend, tmp_path / "fresh" / "maildesk.db") as url:
        config.write_text(tomli_w.dumps(desk_config(state_dir=tmp_path / "fresh-state", db_url=url)))
        assert cli("tickets", "list") == (
            1, "maildesk: the database is not set up or not up to date: run `maildesk init` first\n")
        assert cli("init")[0] == 0
        assert cli("tickets", "list") == (0, "")
