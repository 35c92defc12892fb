"""maildesk.config: every problem is a line that starts with the key to fix, all of them
at once; and the lookups the rest of the desk asks the config for (DESIGN section 3)."""

from __future__ import annotations

import pytest

from maildesk.config import DEFAULT_MATRIX, ConfigError, load_config, parse_config, parse_duration
from tests.builders import minimal_config

SLA = [{"priority": p, "response": "1h", "resolution": "8h"} for p in ("critical", "high", "medium", "low")]


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    return e.value.problems


@pytest.mark.parametrize("change,key", [
    # sections and keys
    ({"mailbox": {"name": "x"}}, "mailbox"),
    ({"desk": {"adress": "helpdesk@example.test"}}, "desk.adress"),
    ({"desk": {}}, "desk.address"),
    ({"imap": None}, "imap"),
    ({"groups": {"name": "service-desk"}}, "groups"),
    ({"limits": "none"}, "limits"),
    # values
    ({"desk": {"address": "not an address"}}, "desk.address"),
    ({"desk": {"address": "helpdesk@example.test", "timezone": "Mars/Olympus"}}, "desk.timezone"),
    ({"imap": {"host": "i", "username": "u", "password": "p", "port": "993"}}, "imap.port"),
    ({"imap": {"host": "i", "username": "u", "password": "p", "security": "tls"}}, "imap.security"),
    ({"imap": {"host": "i", "username": "u", "password": 42}}, "imap.password"),
    ({"imap": {"host": "i", "username": "u", "password": "p", "password_file": "/x"}}, "imap.password_file"),
    ({"imap": {"host": "i", "username": "u"}}, "imap.password_file"),
    ({"smtp": {"host": "s", "retry_first": "soon"}}, "smtp.retry_first"),
    ({"limits": {"max_parts": 0}}, "limits.max_parts"),
    ({"assignment": {"strategy": "random"}}, "assignment.strategy"),
    ({"priority": {"matrix": {"high": {"high": "urgent"}}}}, "priority.matrix.high.high"),
    ({"priority": {"matrix": {"high": {"high": "critical", "medium": "high"}, "medium": DEFAULT_MATRIX["medium"],
                              "low": DEFAULT_MATRIX["low"]}}}, "priority.matrix.high.low"),
    ({"priority": {"matrix": {"high": DEFAULT_MATRIX["high"], "medium": DEFAULT_MATRIX["medium"]}}}, "priority.matrix.low"),
    # what it takes more than one key to see
    ({"desk": {"address": "helpdesk@example.test", "ticket_prefix": "INC-"}}, "desk.ticket_prefix"),
    ({"desk": {"address": "helpdesk@example.test", "bounce_address": "bounces@example.test"}}, "desk.bounce_address"),
    ({"desk": {"address": "helpdesk@example.test", "default_group": "nobody"}}, "desk.default_group"),
    ({"database": {"url": "mysql://db/desk"}}, "database.url"),
    ({"groups": [{"name": "a", "escalates_to": "b"}]}, "groups[0].escalates_to"),
    ({"groups": [{"name": "a", "escalates_to": "a"}]}, "groups[0].escalates_to"),
    ({"groups": [{"name": "a"}, {"name": "a"}]}, "groups[1].name"),
    ({"technicians": [{"email": "t@example.test", "groups": ["nobody"]}]}, "technicians[0].groups"),
    ({"technicians": [{"email": "t@example.test"}, {"email": "T@example.test"}]}, "technicians[1].email"),
    ({"categories": [{"name": "Network", "group": "nobody"}]}, "categories[0].group"),
    ({"lifecycle": {"closure_codes": []}}, "lifecycle.closure_codes"),
    ({"business_hours": {"days": []}}, "business_hours.days"),
    ({"business_hours": {"holidays_subdivision": "BY"}}, "business_hours.holidays_subdivision"),
    ({"business_hours": {"holidays_country": "DE", "holidays_subdivision": "ZZ"}}, "business_hours.holidays_subdivision"),
    # the SLA and its calendar
    ({"sla": [{"priority": "high", "response": "1h", "resolution": "8h"}]}, "sla"),
    ({"sla": [{"priority": "high", "response": "soon", "resolution": "8h"}]}, "sla[0].response"),
    ({"sla": [*SLA, {"priority": "high", "response": "1h", "resolution": "8h", "category": "VPN"}]}, "sla[4].category"),
    ({"sla": [*SLA[:3], {"priority": "low", "response": "2d", "resolution": "1d"}]}, "sla[3].resolution"),
    ({"business_hours": {"start": "25:00"}}, "business_hours.start"),
    ({"business_hours": {"start": "17:00", "end": "09:00"}}, "business_hours.end"),
    ({"business_hours": {"holidays_country": "XX"}}, "business_hours.holidays_country"),
    ({"escalation": {"warn_at": 2}}, "escalation.warn_at"),
])
def test_each_config_error_names_its_key(change, key):
    data = minimal_config()
    for section, value in change.items():
        if value is None:
            del data[section]
        else:
            data[section] = value
    found = problems(data)
    assert any(p.startswith(key + ":") for p in found), found


def test_every_problem_of_a_section_is_reported_at_once():
    found = problems(minimal_config(imap={"host": "", "port": 0, "colour": "blue"}, smtp={"host": "s", "ports": 25}))
    assert {p.split(":")[0] for p in found} >= {"imap.host", "imap.port", "imap.colour", "imap.username", "smtp.ports"}


def test_the_error_message_is_one_line_per_problem():
    with pytest.raises(ConfigError) as e:
        parse_config(minimal_config(desk={}, limits={"max_parts": 0}))
    assert str(e.value).splitlines() == e.value.problems and len(e.value.problems) == 2


def test_load_config_names_the_file_when_it_is_missing_not_toml_or_not_utf8(tmp_path):
    path = tmp_path / "maildesk.toml"
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(path)
    path.write_text("[desk\naddress = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML") as e:
        load_config(path)
    assert e.value.problems[0].startswith(f"{path}:")
    path.write_bytes(b'[desk]\nname = "B\xfcro"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(path)


def test_a_password_file_is_read_stripped_and_an_unreadable_one_named(tmp_path):
    secret = tmp_path / "imap"
    secret.write_text("s3cret\n")
    cfg = parse_config(minimal_config(imap={"host": "i", "username": "u", "password_file": str(secret)}))
    assert cfg.imap.password == "s3cret"
    found = problems(minimal_config(imap={"host": "i", "username": "u", "password_file": str(tmp_path / "none")}))
    assert any(p.startswith("imap.password_file: cannot read") for p in found), found


# --- values ---------------------------------------------------------------------------


@pytest.mark.parametrize("text,days,seconds", [
    ("15m", 0, 900), ("4h", 0, 14400), ("3d", 3, 0), ("1d4h", 1, 14400), ("30s", 0, 30), (" 2h 30m ", 0, 9000),
])
def test_a_duration_keeps_days_apart_from_the_time_below_a_day(text, days, seconds):
    d = parse_duration(text)
    assert (d.days, d.seconds, d.text) == (days, seconds, text.strip())


def test_a_day_of_a_duration_is_a_working_day_in_a_business_calendar():
    assert parse_duration("1d2h").minutes(day_minutes=480) == 600
    assert parse_duration("1d2h").minutes() == 24 * 60 + 120


@pytest.mark.parametrize("text", ["", "15", "m", "1w", "-1h", "1.5h", "soon", 15])
def test_anything_else_is_no_duration(text):
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


# --- lookups --------------------------------------------------------------------------


@pytest.fixture
def cfg():
    return parse_config(minimal_config(
        groups=[{"name": "service-desk", "tier": 1}, {"name": "network", "tier": 2}],
        technicians=[{"email": "Alice@Example.test", "name": "Alice", "groups": ["service-desk"]},
                     {"email": "carol@example.test", "name": "Carol Net", "groups": ["network"]}],
        roles={"incident_managers": ["im@example.test"]},
        categories=[{"name": "Network", "group": "network"}, {"name": "Network/VPN"}, {"name": "Hardware"}],
        sla=[*SLA, {"priority": "high", "response": "15m", "resolution": "2h", "category": "Network"}],
    ))


def test_the_default_group_is_the_first_of_tier_one(cfg):
    assert cfg.default_group == "service-desk"


def test_a_sub_category_routes_to_its_parents_group_and_an_unrouted_one_to_the_default(cfg):
    assert cfg.category_group("Network/VPN") == "network"
    assert cfg.category_group("Hardware") == cfg.category_group("General") == "service-desk"


def test_the_sla_policy_of_a_category_applies_to_its_sub_categories_and_only_at_its_priority(cfg):
    assert cfg.sla_for("high", "Network/VPN").response.text == "15m"
    assert cfg.sla_for("high", "network").response.text == "15m"  # category names ignore case
    assert cfg.sla_for("high", "Hardware").response.text == "1h"
    assert cfg.sla_for("medium", "Network").response.text == "1h"


def test_a_technician_is_found_by_address_name_or_local_part_ignoring_case(cfg):
    assert cfg.technician("ALICE@example.test").name == "Alice"
    for who in ("alice@example.test", "alice", "ALICE", "carol net"):
        assert cfg.find_technician(who) is not None, who
    assert cfg.find_technician("mallory") is None and cfg.technician(None) is None


def test_staff_are_the_technicians_and_the_incident_managers(cfg):
    assert cfg.is_staff("carol@example.test") and cfg.is_staff("IM@example.test")
    assert not cfg.is_staff("jane@example.org") and not cfg.is_staff("")


def test_a_configuration_section_is_a_frozen_keyword_record_compared_by_its_fields():
    """config.record.Section: what a frozen, keyword-only dataclass gives, without the
    import-time cost of one (every command's start)."""
    from typing import ClassVar

    import pytest

    from maildesk.config.record import Section, field, fields, replace

    class Box(Section):
        KIND: ClassVar[str] = "box"
        name: str = field()
        size: int = 3
        tags: list = field(default_factory=list)

    class Crate(Box):
        lid: bool = False

    box = Box(name="a")
    assert (box.name, box.size, box.tags, Box.KIND) == ("a", 3, [], "box")
    assert [f.name for f in fields(Crate)] == ["name", "size", "tags", "lid"]
    assert box == Box(name="a", tags=[]) and box != Box(name="b") and box != Crate(name="a")
    assert repr(box) == "Box(name='a', size=3, tags=[])"
    assert Box(name="a").tags is not box.tags  # a factory's value each time
    with pytest.raises(AttributeError, match="frozen"):
        box.size = 4  # type: ignore[misc]
    with pytest.raises(TypeError, match="missing required keyword argument: 'name'"):
        Box()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Box(name="a", colour="red")  # type: ignore[call-arg]
    assert replace(box, size=5) == Box(name="a", size=5) and box.size == 3
    assert hash(Crate(name="a", tags=())) == hash(Crate(name="a", tags=()))
