"""The project's own documentation, kept true: every key of the config schema is in
docs/configuration.md with the default the code has, and the docs point only at files
a user of the project has.

docs/configuration.md has one `## [section]` (or `## [[array]]`) heading per section
and, under it, a table whose rows read

    | `key` | default | meaning |

where the default is a TOML value in backticks (read with the field's own converter
and compared with the dataclass default), `*required*`, or `*unset*` followed by what
happens then. A row that describes what the code does not have yet starts its meaning
with `<!-- pending: BRANCH -->` (a whole section: the marker alone on a line under its
heading); once the key is in the schema the marker must go, so that whoever merges the
branch checks the row against the code.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from maildesk import config as config_pkg
from maildesk.config.record import MISSING, Field, fields

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "configuration.md"

HEADING = re.compile(r"^##\s+`(\[\[?)([a-z_]+)\]\]?`\s*$")
ROW = re.compile(r"^\|\s*`([a-z0-9_]+)`\s*\|(.*)\|(.*)\|\s*$")
PENDING = re.compile(r"<!--\s*pending:[^>]*-->")
REQUIRED, UNSET = "*required*", "*unset*"


@dataclasses.dataclass
class Row:
    section: str
    key: str
    default: str
    pending: bool
    line: int


def _documented() -> dict[tuple[str, str], Row]:
    rows: dict[tuple[str, str], Row] = {}
    section, section_pending = None, False
    for n, line in enumerate(REFERENCE.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("## "):
            m = HEADING.match(line)
            section, section_pending = (m.group(2) if m else None), False
            continue
        if section is None:
            continue
        if PENDING.fullmatch(line.strip()):  # a marker on a line of its own: the whole section
            section_pending = True
            continue
        m = ROW.match(line)
        if m:
            key, default, meaning = m.group(1), m.group(2).strip(), m.group(3).strip()
            assert (section, key) not in rows, f"docs/configuration.md:{n}: [{section}] {key} is documented twice"
            rows[section, key] = Row(section, key, default, section_pending or bool(PENDING.match(meaning)), n)
    return rows


def _schema() -> dict[str, type]:
    """Every section of the config file and the class that reads it."""
    return {**config_pkg._SECTIONS, **config_pkg._ARRAYS}


def _keys(cls) -> list[tuple[str, Field | None]]:
    """(TOML key, field) of each key of a section. A field made with `opt(...)` is a key
    under its own name or `opt(key=...)`; a field without it is a secret, read as
    `KEY = "..."` or `KEY_file = PATH` (config.sections._secret), both documented."""
    out: list[tuple[str, Field | None]] = []
    for f in fields(cls):
        if "conv" in f.metadata:
            out.append((f.metadata["key"] or f.name, f))
        elif f.metadata.get("internal"):
            continue  # worked out by the loader, never written in the file
        elif "str" in str(f.type):
            out += [(f.name, None), (f"{f.name}_file", None)]
    return out


def _default(f: Field):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return REQUIRED


def _schema_keys() -> list[tuple[str, str, Field | None]]:
    return [(section, key, f) for section, cls in _schema().items() for key, f in _keys(cls)]


def test_every_config_key_is_in_the_configuration_reference():
    rows = _documented()
    missing = [f"[{s}] {k}" for s, k, _ in _schema_keys() if (s, k) not in rows]
    assert not missing, ("docs/configuration.md lacks these keys (add a row `| `key` | default | meaning |` "
                         "under the section's heading): " + ", ".join(missing))


@pytest.mark.parametrize("section,key,field", [(s, k, f) for s, k, f in _schema_keys() if f is not None],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_each_documented_default_is_the_codes_default(section, key, field):
    row = _documented().get((section, key))
    if row is None:
        pytest.skip("not documented: the test above fails for it")
    where = f"docs/configuration.md:{row.line}: [{section}] {key}"
    default = _default(field)
    if default is REQUIRED:
        assert row.default == REQUIRED, f"{where}: the key is required; its default cell must read {REQUIRED}"
        return
    if default is None:
        assert row.default.startswith(UNSET), f"{where}: the key has no default; its cell must start with {UNSET}"
        return
    m = re.match(r"`([^`]+)`", row.default)
    assert m, f"{where}: the default cell must start with the TOML value in backticks, not {row.default!r}"
    try:
        value = tomllib.loads(f"value = {m.group(1)}")["value"]
    except tomllib.TOMLDecodeError as e:
        pytest.fail(f"{where}: the documented default {m.group(1)} is not a TOML value: {e}")
    assert field.metadata["conv"](value) == default, (
        f"{where}: documented default {m.group(1)}, the code's default is {default!r}")


def test_a_key_the_schema_lacks_is_marked_pending_and_a_pending_key_the_schema_has_is_not():
    keys = {(s, k) for s, k, _ in _schema_keys()}
    rows = _documented()
    stale = [f"line {r.line}: [{s}] {k}" for (s, k), r in rows.items() if (s, k) not in keys and not r.pending]
    assert not stale, ("docs/configuration.md documents keys the config does not have; remove them, or mark what "
                       "another branch is adding with <!-- pending: BRANCH -->: " + ", ".join(stale))
    landed = [f"line {r.line}: [{s}] {k}" for (s, k), r in rows.items() if (s, k) in keys and r.pending]
    assert not landed, ("these keys are in the config now: check their rows in docs/configuration.md against the "
                        "code and remove their pending marker: " + ", ".join(landed))


def test_the_reference_is_parsed_at_all():
    """A heading or table format changed by hand would make the tests above pass on nothing."""
    rows = _documented()
    assert {s for s, _ in rows} >= set(_schema())
    assert len(rows) >= len(_schema_keys())


FORBIDDEN = ("DESIGN.md", "../shared", "PERF-NOTES")


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted(DOCS.glob("**/*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_point_only_at_files_the_user_has(path):
    text = path.read_text(encoding="utf-8")
    found = [word for word in FORBIDDEN if word in text]
    assert not found, f"{path.relative_to(ROOT)} mentions {', '.join(found)}: a file outside the project"


def _anchors(path: Path) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_the_docs_link_to_files_and_headings_that_exist():
    """Relative links between the docs (and from the README) reach a file of the
    project, and a `#heading` of it."""
    broken = []
    for path in [ROOT / "README.md", *sorted(DOCS.glob("**/*.md"))]:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            page = (path.parent / target) if target else path
            if not page.exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
            elif anchor and page.suffix == ".md" and anchor not in _anchors(page):
                broken.append(f"{path.relative_to(ROOT)} -> {target}#{anchor}")
    assert not broken, "links to files or headings that do not exist: " + ", ".join(broken)


def test_the_code_cites_the_projects_own_docs():
    """Docstrings and comments cite docs/, not a file that is not shipped."""
    found = []
    for path in sorted((ROOT / "maildesk").rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"DESIGN\b|PERF-NOTES|\.\./shared", line):
                found.append(f"{path.relative_to(ROOT)}:{n}")
    assert not found, "cite docs/*.md or give the reason in place: " + ", ".join(found)
