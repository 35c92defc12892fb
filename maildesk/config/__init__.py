"""The configuration: one TOML file read into frozen records (`record.Section`).

Every section of the file (docs/configuration.md) is a `Section` below; each field names its
TOML key, its default and how its value is checked. A problem anywhere becomes a
`ConfigError` whose lines each start with the key path (``imap.port: expected an
integer``), so that `maildesk check-config` can tell the admin exactly what to fix.

    cfg = load_config("/etc/maildesk/maildesk.toml")
    cfg.imap.port, cfg.sla_for("high", "Network/VPN").response_minutes
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..vocab import PRIORITIES
from .credentials import credentials_dir, secret_from
from .record import Section, fields, replace
from .sections import (
    DEFAULT_SLA,
    MAILBOX_SHARED_KEYS,
    Alerts,
    Assignment,
    Attachments,
    Bounces,
    BusinessHours,
    Category,
    Database,
    Desk,
    Escalation,
    Group,
    Imap,
    Kb,
    Lifecycle,
    Limits,
    Mailbox,
    Metrics,
    Priority,
    Reports,
    Roles,
    Security,
    SlaPolicy,
    Smtp,
    Survey,
    Technician,
    _build,
    _default_state_dir,
)
from .values import DEFAULT_MATRIX, ConfigError, Duration, parse_duration

__all__ = [
    "DEFAULT_MATRIX", "Alerts", "Assignment", "Attachments", "Bounces", "BusinessHours", "Category", "Config",
    "ConfigError", "Database", "Desk", "Duration", "Escalation", "Group", "Imap", "Kb", "Lifecycle", "Limits",
    "Mailbox", "Metrics", "Priority", "Reports", "Roles", "Security", "SlaPolicy", "Smtp", "Survey", "Technician",
    "check_consistency", "config_path",
    "load_config", "parse_config", "parse_duration",
]


class Config(Section):
    """The whole file: one field per section, each a section (or a tuple of them)."""

    desk: Desk
    database: Database
    imap: Mailbox  # the first of `mailboxes`
    smtp: Smtp
    groups: tuple[Group, ...] = ()
    technicians: tuple[Technician, ...] = ()
    roles: Roles = Roles()
    categories: tuple[Category, ...] = ()
    priority: Priority = Priority()
    sla: tuple[SlaPolicy, ...] = DEFAULT_SLA
    business_hours: BusinessHours = BusinessHours()
    escalation: Escalation = Escalation()
    assignment: Assignment = Assignment()
    security: Security = Security()
    lifecycle: Lifecycle = Lifecycle()
    survey: Survey = Survey()
    limits: Limits = Limits()
    alerts: Alerts = Alerts()
    reports: Reports = Reports()
    metrics: Metrics = Metrics()
    bounces: Bounces = Bounces()
    attachments: Attachments = Attachments()
    kb: Kb = Kb()
    # the mailboxes the desk reads, in their [[mailboxes]] order; `imap` is the first
    # (with [imap], the one mailbox it describes, named after its folder)
    mailboxes: tuple[Mailbox, ...] = ()
    mailboxes_listed: bool = False  # the config lists [[mailboxes]]; False: the [imap] shorthand
    path: Path | None = None

    # --- lookups the rest of the code asks for ---------------------------------

    def group(self, name: str | None) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)

    @property
    def default_group(self) -> str | None:
        if self.desk.default_group:
            return self.desk.default_group
        names = [g.name for g in self.groups if g.tier == 1] or [g.name for g in self.groups]
        return names[0] if names else None

    def technician(self, email: str | None) -> Technician | None:
        if not email:
            return None
        email = email.lower()
        return next((t for t in self.technicians if t.email == email), None)

    def members(self, group: str | None) -> list[Technician]:
        return [t for t in self.technicians if group in t.groups]

    def is_staff(self, email: str | None) -> bool:
        """Staff: the technicians, the groups' managers, the incident managers and the
        process owners (docs/mail.md, Commands). Staff mail is never a requester's, and
        a staff member's reply to a staff-only mail stays internal."""
        if not email:
            return False
        email = email.lower()
        return (self.technician(email) is not None or email in self.roles.incident_managers
                or email in self.roles.process_owners or any(g.manager == email for g in self.groups))

    def may_command(self, email: str | None, group: str | None) -> bool:
        """Who may run the technicians' commands on a ticket of `group`: the technicians,
        the incident managers and that group's manager (not process owners, nor the
        managers of other groups)."""
        if not email:
            return False
        email = email.lower()
        g = self.group(group)
        return (self.technician(email) is not None or email in self.roles.incident_managers
                or (g is not None and g.manager == email))

    def find_technician(self, who: str) -> Technician | None:
        """By address, by name, or by the local part of the address."""
        who = who.strip().lower()
        for t in self.technicians:
            if who in (t.email, (t.name or "").lower(), t.email.split("@")[0]):
                return t
        return None

    def category(self, name: str | None) -> Category | None:
        if not name:
            return None
        return next((c for c in self.categories if c.name.lower() == name.lower()), None)

    def category_escalation(self, name: str | None) -> str | None:
        """The group a category's tickets escalate to, inherited from its parent
        category; None: the group chain applies."""
        while name:
            c = self.category(name)
            if c is not None and c.escalates_to:
                return c.escalates_to
            name = name.rsplit("/", 1)[0] if "/" in name else None
        return None

    def category_group(self, name: str | None) -> str | None:
        """A category's group, inherited from its parent category, else the default."""
        return self.category_route(name) or self.default_group

    def category_route(self, name: str | None) -> str | None:
        """The group a category (or a parent of it) routes to, or None."""
        while name:
            c = self.category(name)
            if c and c.group:
                return c.group
            name = c.parent if c else None
        return None

    def sla_for(self, priority: str, category: str | None = None) -> SlaPolicy:
        """The most specific policy: same priority and this category (or a parent
        of it), else the priority's own row."""
        rows = [s for s in self.sla if s.priority == priority]
        cat = category
        while cat:
            for s in rows:
                if s.category and s.category.lower() == cat.lower():
                    return s
            cat = cat.rsplit("/", 1)[0] if "/" in cat else None
        return next(s for s in rows if not s.category)

    # --- mailboxes and the desk's own addresses ----------------------------------

    @functools.cached_property
    def desk_addresses(self) -> tuple[str, ...]:
        """Every address of the desk: `desk.address` and each mailbox's. None of them is
        ever a requester, participant or technician."""
        return tuple(dict.fromkeys([self.desk.address.lower(), *(m.address.lower() for m in self.mailboxes)]))

    def mailbox(self, name: str | None) -> Mailbox | None:
        return next((m for m in self.mailboxes if m.name == name), None) if name else None

    def address_of(self, mailbox: str | None) -> str:
        """The From of the desk's mail on a ticket of this mailbox; `desk.address` for
        mail that belongs to no ticket, or to a mailbox no longer configured."""
        box = self.mailbox(mailbox)
        return box.address if box else self.desk.address

    def home_mailbox(self, recipients: Iterable[str], fetched_from: str | None) -> Mailbox | None:
        """The mailbox a new ticket belongs to: the first in [[mailboxes]] order whose
        address the mail was written to (To/Cc), whichever copy was fetched first;
        else the one it was fetched from (Bcc, a forward, an alias)."""
        written_to = {a.lower() for a in recipients if a}
        return next((m for m in self.mailboxes if m.address in written_to), None) or self.mailbox(fetched_from)

    @property
    def secret_bytes(self) -> bytes | None:
        return self.security.secret.encode() if self.security.secret else None

    def attachment_dir(self) -> Path:
        return self.attachments.dir or (self.desk.state_dir / "attachments")


_SECTIONS = {
    "desk": Desk, "database": Database, "imap": Imap, "smtp": Smtp, "roles": Roles,
    "priority": Priority, "business_hours": BusinessHours, "escalation": Escalation,
    "assignment": Assignment, "security": Security, "lifecycle": Lifecycle,
    "survey": Survey, "limits": Limits, "alerts": Alerts, "reports": Reports, "bounces": Bounces,
    "attachments": Attachments, "metrics": Metrics, "kb": Kb,
}
_ARRAYS = {"groups": Group, "technicians": Technician, "categories": Category, "sla": SlaPolicy,
           "mailboxes": Mailbox}


def config_path(explicit: str | None) -> Path:
    path = explicit or os.environ.get("MAILDESK_CONFIG") or "/etc/maildesk/maildesk.toml"
    return Path(path)


def load_config(path: str | os.PathLike, deep: bool = True) -> Config:
    """`deep=False` is for the commands that only read the database: it skips the
    checks that cost time (the holiday tables) and reads no IMAP or SMTP secret (a
    shell may have none of them), so those fields stay None."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such config file (give --config PATH or set MAILDESK_CONFIG)"]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the config file: {e.strerror}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not valid UTF-8"]) from None
    return parse_config(data, path, deep)


# The secrets of [imap] and [smtp], each from `key = "..."` or `key_file = ...`
# (credentials.py); they are left unread with deep=False.
MAIL_SECRETS = ("password", "oauth2_token", "oauth2_client_secret", "oauth2_refresh_token")


def parse_config(data: dict, path: Path | None = None, deep: bool = True) -> Config:
    errors: list[str] = []
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    original_security = set(data["security"]) if isinstance(data.get("security"), dict) else set()
    base = credentials_dir(data.get("desk"))
    secrets = {
        (section, key): secret_from(data.get(section), section, errors, base, key, read=deep)
        for section in ("imap", "smtp") for key in MAIL_SECRETS
    }
    secrets["security", "secret"] = secret_from(data.get("security"), "security", errors, base, "secret")
    parts: dict[str, Any] = {}
    for key in data:
        if key not in _SECTIONS and key not in _ARRAYS:
            errors.append(f"{key}: unknown section")
    mailboxes = _mailboxes(data, errors, base, deep)
    for key, cls in _SECTIONS.items():
        if key in data:
            parts[key] = _build(cls, data[key], key, errors)
        elif key in ("desk", "smtp") or (key == "imap" and mailboxes is None):
            errors.append(f"{key}: required section is missing" + (" (or list [[mailboxes]])" if key == "imap" else ""))
        elif key == "database":
            parts[key] = Database()
    for key, cls in _ARRAYS.items():
        if key not in data or key == "mailboxes":
            continue
        rows = data[key]
        if not isinstance(rows, list):
            errors.append(f"{key}: expected an array of tables ([[{key}]])")
            continue
        parts[key] = tuple(_build(cls, row, f"{key}[{i}]", errors) for i, row in enumerate(rows))
    if errors:
        raise ConfigError(errors)

    desk = parts["desk"]
    state_dir = desk.state_dir or _default_state_dir()
    parts["desk"] = replace(desk, state_dir=state_dir)
    db = parts["database"]
    if not db.url:
        parts["database"] = Database(url=f"sqlite:///{state_dir / 'maildesk.db'}")
    if mailboxes is None:  # [imap]: one mailbox, named after its folder, answering from desk.address
        imap = replace(parts["imap"], **{key: secrets["imap", key] for key in MAIL_SECRETS})
        shared = {f.name: getattr(imap, f.name) for f in fields(imap)}
        mailboxes = (Mailbox(**shared, name=imap.mailbox, address=parts["desk"].address),)
    else:
        parts["mailboxes_listed"] = True
    parts["mailboxes"] = mailboxes
    parts["imap"] = mailboxes[0]
    parts["smtp"] = replace(parts["smtp"], **{key: secrets["smtp", key] for key in MAIL_SECRETS})
    parts["security"] = replace(
        parts.get("security", Security()), secret=secrets["security", "secret"],
        secret_key="security.secret_file" if "secret_file" in original_security else "security.secret",
    )
    cfg = Config(**parts, path=path)
    check_consistency(cfg, deep)
    return cfg


def _mailboxes(data: dict, errors: list[str], base: tuple[Path, str], deep: bool) -> tuple[Mailbox, ...] | None:
    """The [[mailboxes]] tables, each with its secrets; None when the config has none.
    A later table takes the server keys it leaves out (MAILBOX_SHARED_KEYS) from the first."""
    rows = data.get("mailboxes")
    if rows is None:
        return None
    if "imap" in data:
        errors.append("imap: a config with [[mailboxes]] has no [imap] section; move its keys into [[mailboxes]]")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        errors.append("mailboxes: expected one or more tables ([[mailboxes]])")
        return ()
    shared = {k: v for k, v in rows[0].items() if k in MAILBOX_SHARED_KEYS}
    out = []
    for i, row in enumerate(rows):
        path = f"mailboxes[{i}]"
        row = shared | row
        secrets = {key: secret_from(row, path, errors, base, key, read=deep) for key in MAIL_SECRETS}
        box = _build(Mailbox, row, path, errors)
        if box is not None:
            out.append(replace(box, **secrets))
    return tuple(out)


def _check_mailboxes(cfg: Config, groups: list[str], errors: list[str], deep: bool) -> None:
    keyed = cfg.mailboxes_listed
    for i, box in enumerate(cfg.mailboxes):
        key = f"mailboxes[{i}]" if keyed else "imap"
        errors.extend(_check_oauth2(key, box, deep))
        if deep and box.auth == "password" and box.password is None:
            errors.append(f"{key}.password_file: required key is missing (or give {key}.password)")
        if not keyed:
            continue
        earlier = cfg.mailboxes[:i]
        if any(m.name == box.name for m in earlier):
            errors.append(f'{key}.name: mailbox "{box.name}" is defined twice')
        if any(m.address == box.address for m in earlier):
            errors.append(f"{key}.address: {box.address} is the address of another mailbox")
        if any((m.host, m.effective_port, m.username, m.mailbox) == (box.host, box.effective_port, box.username, box.mailbox)
               for m in earlier):
            errors.append(f"{key}.mailbox: the folder {box.mailbox!r} of {box.username} on {box.host} is read by another "
                          "mailbox already")
        if box.group and box.group not in groups:
            errors.append(f'{key}.group: unknown group "{box.group}"')
        if box.category and cfg.category(box.category) is None:
            errors.append(f'{key}.category: unknown category "{box.category}"')
    for i, t in enumerate(cfg.technicians):
        if t.email in cfg.desk_addresses:
            errors.append(f"technicians[{i}].email: {t.email} is an address of the desk itself")


def check_consistency(cfg: Config, deep: bool = True) -> None:
    """Problems that need more than one key to see."""
    errors = []
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", cfg.desk.ticket_prefix):
        errors.append("desk.ticket_prefix: use letters and digits only, such as \"INC\"")
    errors.extend(_check_oauth2("smtp", cfg.smtp, deep))
    if deep and cfg.smtp.username and cfg.smtp.auth == "password" and cfg.smtp.password is None:
        errors.append("smtp.password_file: required when smtp.username is set (or give smtp.password)")
    if "{id}" not in cfg.desk.bounce_address:
        errors.append('desk.bounce_address: must contain "{id}"')
    if cfg.database.url and not re.match(r"(sqlite|postgres(ql)?|postgresext)://", cfg.database.url):
        errors.append("database.url: expected sqlite:///PATH or postgresql://USER@HOST/DB")

    errors.extend(_check_trust(cfg, deep))
    names = [g.name for g in cfg.groups]
    _check_mailboxes(cfg, names, errors, deep)
    for i, g in enumerate(cfg.groups):
        if names.count(g.name) > 1 and names.index(g.name) != i:
            errors.append(f'groups[{i}].name: group "{g.name}" is defined twice')
        if g.escalates_to and g.escalates_to not in names:
            errors.append(f'groups[{i}].escalates_to: unknown group "{g.escalates_to}"')
        if g.escalates_to == g.name:
            errors.append(f"groups[{i}].escalates_to: a group cannot escalate to itself")
    errors.extend(_escalation_cycles(cfg))
    if cfg.desk.default_group and cfg.desk.default_group not in names:
        errors.append(f'desk.default_group: unknown group "{cfg.desk.default_group}"')
    emails = [t.email for t in cfg.technicians]
    for i, t in enumerate(cfg.technicians):
        if emails.count(t.email) > 1 and emails.index(t.email) != i:
            errors.append(f"technicians[{i}].email: {t.email} is listed twice")
        for name in t.groups:
            if name not in names:
                errors.append(f'technicians[{i}].groups: unknown group "{name}"')
    cats = [c.name.lower() for c in cfg.categories]
    for i, c in enumerate(cfg.categories):
        if c.group and c.group not in names:
            errors.append(f'categories[{i}].group: unknown group "{c.group}"')
        if c.escalates_to and c.escalates_to not in names:
            errors.append(f'categories[{i}].escalates_to: unknown group "{c.escalates_to}"')
        if cats.count(c.name.lower()) > 1 and cats.index(c.name.lower()) != i:
            errors.append(f'categories[{i}].name: category "{c.name}" is defined twice')
    for i, s in enumerate(cfg.sla):
        if s.category and s.category.lower() not in cats and s.category.lower() != "general":
            errors.append(f'sla[{i}].category: unknown category "{s.category}"')
        if s.resolution.total < s.response.total:
            errors.append(f"sla[{i}].resolution: shorter than the response target")
    for p in PRIORITIES:
        if not any(s.priority == p and not s.category for s in cfg.sla):
            errors.append(f'sla: no policy for priority "{p}" (add [[sla]] priority = "{p}")')
    bh = cfg.business_hours
    if bh.end != dt.time(0, 0) and bh.end <= bh.start:
        errors.append("business_hours.end: must be later than business_hours.start")
    if not bh.days:
        errors.append("business_hours.days: needs at least one working day")
    if bh.holidays_subdivision and not bh.holidays_country:
        errors.append("business_hours.holidays_subdivision: needs business_hours.holidays_country")
    if bh.holidays_country and deep:
        errors.extend(_check_holidays(bh.holidays_country, bh.holidays_subdivision))
    codes = cfg.lifecycle.closure_codes
    if not codes:
        errors.append("lifecycle.closure_codes: needs at least one code")
    if errors:
        raise ConfigError(errors)


# A signing secret shorter than this can be recovered from the desk's own Message-IDs.
MIN_SECRET_BYTES = 32


def _check_trust(cfg: Config, deep: bool) -> list[str]:
    """The signing secret, the templates folder, and no staff address that is the desk's."""
    errors = []
    secret = cfg.security.secret
    if secret is not None and (n := len(secret.encode())) < MIN_SECRET_BYTES:
        errors.append(f"{cfg.security.secret_key}: the signing secret is {n} byte{'' if n == 1 else 's'}, and must be at "
                      f"least {MIN_SECRET_BYTES} (a short one can be found from the desk's own Message-IDs); make one "
                      "with `head -c 32 /dev/urandom | base64`")
    folder = cfg.desk.templates_dir
    if deep and folder is not None and not folder.is_dir():
        errors.append(f"desk.templates_dir: {folder} is not a directory (leave the key out to use the shipped templates)")
    staff = [(f"technicians[{i}].email", t.email) for i, t in enumerate(cfg.technicians)]
    staff += [(f"groups[{i}].manager", g.manager) for i, g in enumerate(cfg.groups) if g.manager]
    staff += [(f"roles.incident_managers[{i}]", a) for i, a in enumerate(cfg.roles.incident_managers)]
    local, domain = cfg.desk.local_part.lower(), cfg.desk.domain.lower()
    for key, address in staff:
        mine, _, theirs = address.lower().rpartition("@")
        if theirs == domain and (mine == local or mine.startswith(local + "+")):
            errors.append(f"{key}: {address} is the desk's own address, and the desk never writes to itself "
                          "(name the person's own address)")
    return errors


def _escalation_cycles(cfg: Config) -> list[str]:
    """Groups that escalate round in a circle: a breached ticket would go round for ever."""
    target = {g.name: g.escalates_to for g in cfg.groups if g.escalates_to and g.escalates_to != g.name}
    index = {g.name: i for i, g in reversed(list(enumerate(cfg.groups)))}
    errors, seen = [], set()
    for start in target:
        path, name = [start], target[start]
        while name in target and name not in path:
            path.append(name)
            name = target[name]
        if name in path and frozenset(path[path.index(name):]) not in seen:
            cycle = path[path.index(name):]
            seen.add(frozenset(cycle))
            errors.append(f"groups[{index[cycle[0]]}].escalates_to: the groups escalate in a circle "
                          f"({' -> '.join(cycle + [cycle[0]])}); end the chain at a group without escalates_to")
    return errors


def _check_oauth2(key: str, conf: Imap | Smtp, deep: bool) -> list[str]:
    """auth = "oauth2": a static token, or a token endpoint with its client and a
    refresh token or a scope (docs/configuration.md, OAuth2). The secrets are checked only
    when they were read (deep)."""
    errors = []
    renewing = conf.oauth2_token_url is not None
    if conf.auth != "oauth2":
        if renewing or conf.oauth2_client_id or conf.oauth2_scope:
            errors.append(f'{key}.auth: set auth = "oauth2" to use the {key}.oauth2_* keys')
        return errors
    if key == "smtp" and not conf.username:
        errors.append('smtp.username: required when smtp.auth = "oauth2" (the account the token is for)')
    if not renewing:
        if conf.oauth2_client_id or conf.oauth2_scope:
            errors.append(f"{key}.oauth2_token_url: required with {key}.oauth2_client_id and {key}.oauth2_scope")
        elif deep and not conf.oauth2_token:
            errors.append(f'{key}.oauth2_token_url: required when {key}.auth = "oauth2" '
                          f"(or give {key}.oauth2_token_file, a token you renew by other means)")
        return errors
    if not conf.oauth2_client_id:
        errors.append(f"{key}.oauth2_client_id: required with {key}.oauth2_token_url")
    if not deep:
        return errors
    if conf.oauth2_token:
        errors.append(f"{key}.oauth2_token_file: give either {key}.oauth2_token_file or {key}.oauth2_token_url, not both")
    if conf.oauth2_refresh_token is None and not conf.oauth2_scope:
        errors.append(f"{key}.oauth2_refresh_token_file: required with {key}.oauth2_token_url "
                      f"(or give {key}.oauth2_scope for the client-credentials grant)")
    if conf.oauth2_refresh_token is None and conf.oauth2_client_secret is None:
        errors.append(f"{key}.oauth2_client_secret_file: required for the client-credentials grant "
                      f"({key}.oauth2_scope without {key}.oauth2_refresh_token_file)")
    return errors


def _check_holidays(country: str, subdivision: str | None) -> list[str]:
    import holidays

    # holidays raises NotImplementedError for an unknown country and for an unknown
    # subdivision of a known one alike: the country is asked about alone first
    try:
        holidays.country_holidays(country, years=2026)
    except NotImplementedError:
        return [f'business_hours.holidays_country: unknown country "{country}"']
    if subdivision:
        try:
            holidays.country_holidays(country, subdiv=subdivision, years=2026)
        except NotImplementedError:
            return [f'business_hours.holidays_subdivision: unknown subdivision "{subdivision}" of "{country}"']
    return []
