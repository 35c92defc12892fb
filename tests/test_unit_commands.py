"""maildesk.pipeline.commands: which lines are the command block, how each argument is
read and checked, and who may run what (DESIGN section 4, "Commands"). The mail these
lines come from is anyone's: every reader refuses what it cannot use, with a reason."""

from __future__ import annotations

import datetime as dt

import pytest

from maildesk.pipeline.commands import readers
from maildesk.pipeline.commands.readers import CommandError
from maildesk.pipeline.commands.table import COMMANDS, allowed_commands, may_run, split_block
from maildesk.pipeline.context import Context
from maildesk.store import Task
from tests.builders import ticket_row

NOW = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)

# --- the command block ----------------------------------------------------------------


@pytest.mark.parametrize("text,block,rest", [
    ("#status in-progress\n#priority high\nOn it.", ["#status in-progress", "#priority high"], "On it."),
    ("\n\n  #note  \nCall the vendor.\n", ["#note"], "Call the vendor."),  # blank lines before, spaces around
    ("#status on-hold\r\n#cc boss@example.org\r\n\r\nWaiting.\r\n", ["#status on-hold", "#cc boss@example.org"],
     "Waiting."),
    ("#help", ["#help"], ""),
    # the first other line ends the block, a blank one too
    ("#status in-progress\n\n#priority high", ["#status in-progress"], "#priority high"),
    ("Thanks!\n#close", [], "Thanks!\n#close"),
    # not commands: a heading, a number, a word that does not start with a letter
    ("# Heading\n#status open", [], "# Heading\n#status open"),
    ("#1 on the list", [], "#1 on the list"),
    ("#-x", [], "#-x"),
    ("", [], ""),
])
def test_the_command_block_is_the_command_lines_at_the_very_top(text, block, rest):
    assert split_block(text) == (block, rest)


def test_a_command_word_is_letters_and_hyphens_and_its_argument_the_rest_of_the_line():
    block, rest = split_block("#in-progress\n#Task order a drum @bob\t\n")
    assert block == ["#in-progress", "#Task order a drum @bob"] and rest == ""


# --- readers ------------------------------------------------------------------------------


@pytest.fixture
def ctx(runtime):
    """A message from alice, a technician, about an open printer ticket assigned to her."""
    rt = runtime()
    ticket = ticket_row(rt, NOW, assignee="alice@example.test")
    return Context(rt=rt, now=NOW, inbound=None, raw=b"", ticket=ticket, sender="alice@example.test",
                   role="staff", is_staff=True, authenticated=True)


def refused(read, ctx, arg) -> str:
    with pytest.raises(CommandError) as e:
        read(ctx, arg)
    return str(e.value)


def test_a_choice_ignores_case_and_spaces_and_names_the_choices_when_wrong(ctx):
    read = COMMANDS["status"].read
    assert read(ctx, "  In-Progress ") == "in-progress"
    assert refused(read, ctx, "resolved") == "needs a status: one of open, in-progress, on-hold"
    assert refused(COMMANDS["priority"].read, ctx, None) == "needs a priority: one of critical, high, medium, low"


def test_a_command_without_argument_takes_none(ctx):
    assert readers._none(ctx, "") is None
    assert refused(readers._none, ctx, "please") == "takes no argument"


@pytest.mark.parametrize("arg,email", [
    ("me", "alice@example.test"), ("ME", "alice@example.test"), ("bob", "bob@example.test"),
    ("@bob", "bob@example.test"), ("Carol", "carol@example.test"), ("BOB@example.test", "bob@example.test"),
])
def test_a_technician_is_named_by_me_name_local_part_or_address(ctx, arg, email):
    assert readers._technician(ctx, arg).email == email


def test_an_unknown_technician_or_a_me_from_a_non_technician_is_refused(ctx):
    assert refused(readers._technician, ctx, "mallory") == 'no technician called "mallory"'
    assert refused(readers._technician, ctx, "") == "needs a technician: a name, an address, or me"
    ctx.sender = "im@example.test"  # staff, but no technician
    assert refused(readers._technician, ctx, "me") == "im@example.test is not a technician, so 'me' names nobody"


def test_a_group_must_exist_and_the_refusal_lists_the_groups(ctx):
    assert readers._group(ctx, " network ") == "network"
    assert refused(readers._group, ctx, "printers") == 'no group called "printers" (groups: service-desk, network)'
    assert readers._optional_group(ctx, "") is None


def test_a_category_is_given_its_configured_spelling_and_general_is_always_there(ctx):
    assert readers._category(ctx, "network/vpn") == "Network/VPN"
    assert readers._category(ctx, "GENERAL") == "General"
    assert refused(readers._category, ctx, "Plumbing") == 'no category called "Plumbing"'


@pytest.mark.parametrize("arg", ["<Boss@Example.org>", "boss@example.org", " BOSS@EXAMPLE.ORG "])
def test_an_address_is_lower_cased_and_unbracketed(ctx, arg):
    assert readers._address(ctx, arg) == "boss@example.org"


@pytest.mark.parametrize("arg", ["boss", "boss@localhost", "a b@example.org", "<>", "x@@example.org", None,
                                 "boss@example.org\nBcc: victim@example.org"])
def test_anything_but_one_address_is_refused(ctx, arg):
    assert refused(readers._address, ctx, arg) == "needs a mail address"


def test_a_task_is_a_title_and_an_optional_technician_at_its_end(ctx):
    assert readers._task(ctx, "order a new drum") == ("order a new drum", None)
    title, tech = readers._task(ctx, "order a new drum @bob")
    assert title == "order a new drum" and tech.email == "bob@example.test"
    assert readers._task(ctx, "mail alice@example.test the manual") == ("mail alice@example.test the manual", None)
    assert len(readers._task(ctx, "x" * 800)[0]) == 500
    assert refused(readers._task, ctx, "call the vendor @mallory") == 'no technician called "mallory"'
    assert refused(readers._task, ctx, "").startswith("needs a title")


def test_a_task_number_names_an_open_task_of_this_ticket(ctx):
    Task.create(ticket=ctx.ticket, number=1, title="order a drum", created_at=NOW)
    Task.create(ticket=ctx.ticket, number=2, title="test print", done=True, created_at=NOW)
    assert readers._task_number(ctx, "#1").title == "order a drum"
    assert refused(readers._task_number, ctx, "2") == "task 2 is already done"
    assert refused(readers._task_number, ctx, "3") == "INC-1 has no task 3"
    assert refused(readers._task_number, ctx, "first") == "needs a task number, e.g. #done 2"


def test_a_closure_code_is_one_of_the_configured_and_open_tasks_block_it(ctx):
    assert readers._closure_code(ctx, " Fixed ") == "fixed"
    assert refused(readers._closure_code, ctx, "magic").startswith("needs a closure code: one of fixed, workaround")
    Task.create(ticket=ctx.ticket, number=1, title="order a drum", created_at=NOW)
    assert refused(readers._closure_code, ctx, "fixed") == (
        "INC-1 has open tasks: #1 order a drum (finish them with #done N first)")


def test_a_ticket_that_is_no_longer_active_cannot_be_resolved(ctx):
    ctx.ticket.status = "resolved"
    assert refused(readers._closure_code, ctx, "fixed") == "INC-1 is already resolved"


def test_a_link_names_another_ticket_that_is_a_major_incident(ctx):
    major = ticket_row(ctx.rt, NOW, subject="Printers down everywhere", is_major=True)
    plain = ticket_row(ctx.rt, NOW, subject="Mouse broken")
    assert readers._major_ref(ctx, f"[inc-{major.id}]").id == major.id
    assert refused(readers._major_ref, ctx, f"INC-{plain.id}") == (
        f"INC-{plain.id} is not a major incident (declare it with #major first)")
    assert refused(readers._major_ref, ctx, "INC-1") == "a ticket cannot be its own parent"
    assert refused(readers._major_ref, ctx, "INC-99") == "there is no ticket INC-99"
    assert refused(readers._major_ref, ctx, "42") == "needs a ticket reference such as INC-7"


def test_reopen_needs_a_resolved_ticket_within_the_window(ctx):
    assert refused(readers._reopenable, ctx, "") == "INC-1 is open, not resolved or closed"
    ctx.ticket.status, ctx.ticket.resolved_at = "resolved", NOW - dt.timedelta(days=7)
    assert readers._reopenable(ctx, "") is None  # the window (7d) includes its last moment
    ctx.ticket.resolved_at -= dt.timedelta(seconds=1)
    assert refused(readers._reopenable, ctx, "").startswith("INC-1 is past the reopen window (7 days)")


def test_close_is_refused_only_on_a_ticket_already_closed_or_cancelled(ctx):
    assert readers._closable(ctx, "") is None
    for status in ("closed", "cancelled"):
        ctx.ticket.status = status
        assert refused(readers._closable, ctx, "") == f"INC-1 is already {status}"


# --- who may run what -----------------------------------------------------------------------


def test_technician_commands_need_staff_and_authentication(ctx):
    assert may_run(ctx, COMMANDS["priority"]) is None
    ctx.authenticated, ctx.auth_reason = False, "no Authentication-Results header from a trusted server"
    assert may_run(ctx, COMMANDS["priority"]) == (
        "you are not authenticated: no Authentication-Results header from a trusted server")
    assert may_run(ctx, COMMANDS["help"]) is None  # anyone, authenticated or not


def test_a_requester_may_close_and_reopen_their_own_ticket_and_nothing_of_the_staff(ctx):
    ctx.sender, ctx.role, ctx.is_staff = "jane@example.org", "requester", False
    ctx.verified, ctx.verified_reason = True, "answers desk mail sent to jane@example.org"
    assert may_run(ctx, COMMANDS["priority"]) == "only technicians may use it"
    assert may_run(ctx, COMMANDS["close"]) is None
    assert {c.name for c in allowed_commands(ctx)} == {"help", "close", "reopen", "status"}


def test_a_stranger_may_ask_for_help_only(ctx):
    ctx.sender, ctx.role, ctx.is_staff = "mallory@evil.example", "stranger", False
    assert may_run(ctx, COMMANDS["close"]) == "only the requester of INC-1 may use it"
    assert [c.name for c in allowed_commands(ctx)] == ["help", "status"]  # #status answers nothing of others' tickets


def test_staff_are_offered_every_command(ctx):
    assert [c.name for c in allowed_commands(ctx)] == [*COMMANDS, "status"]  # and the #status query


def test_the_manager_of_the_tickets_group_may_run_technician_commands_and_other_managers_may_not(ctx):
    ctx.sender, ctx.is_staff = "lead@example.test", ctx.cfg.is_staff("lead@example.test")
    assert ctx.is_staff and ctx.ticket.group == "service-desk"
    assert may_run(ctx, COMMANDS["priority"]) is None  # lead manages service-desk
    ctx.sender = "netlead@example.test"  # manages network, not this ticket's group
    assert ctx.cfg.is_staff(ctx.sender)
    assert may_run(ctx, COMMANDS["priority"]) == (
        "only technicians, incident managers and the manager of INC-1's group may use it")
    assert "priority" not in {c.name for c in allowed_commands(ctx)}


def test_a_process_owner_is_staff_but_runs_no_technician_command(runtime):
    rt = runtime(roles={"incident_managers": ["im@example.test"], "process_owners": ["owner@example.test"]})
    ticket = ticket_row(rt, NOW, assignee="alice@example.test")
    c = Context(rt=rt, now=NOW, inbound=None, raw=b"", ticket=ticket, sender="owner@example.test",
                role="staff", is_staff=rt.cfg.is_staff("owner@example.test"), authenticated=True)
    assert c.is_staff
    assert may_run(c, COMMANDS["resolve"]) == (
        "only technicians, incident managers and the manager of INC-1's group may use it")
