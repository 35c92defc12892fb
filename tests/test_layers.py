"""The shape of the package, kept: layers whose imports only point down, no cycles,
pipeline stages that do not import each other, SMTP only in the send process, and the
operator's everyday commands free of the machinery of mail.

The layers, bottom to top (docs/architecture.md draws them):

    leaves    config, vocab, errors, businesstime, signing, verp, faults, oauth2
    store     the database
    mailin    bytes -> ParsedMail, automatic-mail verdicts, IMAP
    mailout   the queue, templates, SMTP, results
    desk      the incident rules
    pipeline  the stages
    service   the desk, fetch and send processes
    ops       the CLI, views, report

An import under `if TYPE_CHECKING:` is for the type checker only (the `Runtime` that
`service` builds is typed everywhere) and is not an edge.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "maildesk"

LAYERS = ("leaves", "store", "mailin", "mailout", "desk", "pipeline", "service", "ops")
LEAVES = {"config", "vocab", "errors", "businesstime", "signing", "verp", "faults", "oauth2"}
# the stages, by module: a stage module may not import another one
STAGES = {"parse", "screen", "correlate", "identity", "commands", "triage", "converse", "notify"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, module: str, known: dict[str, Path]) -> set[str]:
    """The maildesk modules `module` imports, wherever in the file (functions too),
    except under TYPE_CHECKING; `from pkg import sub` counts as importing `pkg.sub`."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
            for child in node.body for n in ast.walk(child)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("maildesk")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("maildesk"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m != module}


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: {t for t in _imports(p, m, known) if t in known} for m, p in known.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None  # maildesk itself, __main__: the entry points
    top = parts[1]
    if top in LEAVES or top == "models":  # models.py: the frozen migration's re-export of the store
        return LAYERS.index("store") if top == "models" else 0
    if top == "__main__":
        return len(LAYERS)
    return LAYERS.index(top)


def test_every_module_belongs_to_a_layer():
    stray = [m for m in _modules() if m.count(".") >= 1 and m.split(".")[1] not in (*LAYERS, *LEAVES, "models", "__main__")]
    assert stray == []


def test_imports_only_point_down_a_layer():
    upward = []
    for module, targets in _graph().items():
        mine = _layer(module)
        for target in targets:
            theirs = _layer(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_the_package_has_no_import_cycle():
    graph = _graph()
    # edges into a package's __init__ from its own modules are Python's doing, not ours
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert cycles == []


def test_no_pipeline_stage_imports_another_stage():
    crossings = []
    for module, targets in _graph().items():
        parts = module.split(".")
        if len(parts) < 3 or parts[1] != "pipeline" or parts[2] not in STAGES:
            continue
        for target in targets:
            tparts = target.split(".")
            if len(tparts) >= 3 and tparts[1] == "pipeline" and tparts[2] in STAGES and tparts[2] != parts[2]:
                crossings.append(f"{module} -> {target}")
    assert crossings == []


def test_only_the_smtp_module_imports_aiosmtplib_and_only_the_service_imports_it():
    known = _modules()
    importers = []
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n.split(".")[0] == "aiosmtplib" for n in names):
                importers.append(module)
    assert sorted(set(importers)) == ["maildesk.mailout.smtp"]
    users = sorted(m for m, ts in _graph().items() if "maildesk.mailout.smtp" in ts)
    assert all(m.startswith("maildesk.service.") for m in users), users


@pytest.mark.parametrize("module", ["maildesk.pipeline", "maildesk.service.daemon"])
def test_the_pipeline_and_the_desk_process_load_neither_aiosmtplib_nor_asyncio(module):
    code = (f"import sys, {module}; "
            "print(','.join(m for m in ('aiosmtplib', 'asyncio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


# What the commands an operator runs most (`tickets list`, `tickets show`, `status`, `why`)
# must not load: each is to answer in under 100 ms as a process (issue 15), and these are
# there for the mail the desk fetches, reads and sends; nor, on a SQLite desk, the
# PostgreSQL driver (which peewee would import whenever it is installed: ops/startup.py).
MAIL_MACHINERY = {"jinja2", "markupsafe", "aiosmtplib", "asyncio", "imapclient", "authlib", "requests",
                  "prometheus_client", "holidays", "inscriptis", "nh3", "flufl", "psycopg2", "psycopg"}
MAILDESK_MACHINERY = ("maildesk.pipeline", "maildesk.mailin", "maildesk.mailout", "maildesk.desk")
READS = """
import contextlib, io, json, sys
from maildesk.ops.cli import main

def loaded_after(*args):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--config", sys.argv[1], *args]) == 0, args
    return sorted(sys.modules)

loaded_after("tickets", "list", "--limit", "20")
loaded_after("status")
loaded_after("why", "<in@example.org>")
print(json.dumps([loaded_after("tickets", "show", "INC-1"), loaded_after("tickets", "show", "INC-1", "--json")]))
"""


def _machinery(modules: list[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in MAIL_MACHINERY or m.startswith(MAILDESK_MACHINERY)}


def test_the_operator_commands_load_no_mail_machinery(runtime, tmp_path):
    import datetime as dt

    import tomli_w

    from maildesk.mailout.queue import queue_mail
    from maildesk.store import Inbound
    from tests.builders import REQUESTER, desk_config, ticket_row
    from tests.conftest import child_env

    rt, now = runtime(), dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC)
    ticket = ticket_row(rt, now)
    inbound = Inbound.create(sha256="0" * 64, message_id="in@example.org", received_at=now, status="processed",
                             outcome="new-ticket", ticket=ticket, decisions="opened INC-1")
    queue_mail(rt, now, "ack", rcpt=REQUESTER, ticket=ticket, inbound=inbound)
    config = tmp_path / "maildesk.toml"
    config.write_text(tomli_w.dumps(desk_config(state_dir=tmp_path / "state", db_url=rt.cfg.database.url)))
    out = subprocess.run([sys.executable, "-c", READS, str(config)], capture_output=True, text=True, env=child_env())
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    reads, reads_and_json = map(_machinery, loaded)
    assert reads == set()
    # nor what peewee imports for code a command does not run (ops/startup.py)
    assert not {"hashlib", "calendar", "socket", "random", "inspect", "psycopg2"} & set(loaded[0])
    # `tickets show --json` has the text of the mail the desk sent: its templates, and nothing else of the mail
    assert {m.split(".")[0] for m in reads_and_json} == {"jinja2", "markupsafe", "maildesk"}
    assert {m for m in reads_and_json if m.startswith("maildesk.")} == {"maildesk.mailout", "maildesk.mailout.render"}


@pytest.mark.parametrize("desk", ["postgresql"], indirect=True)
def test_a_command_on_postgresql_loads_the_driver_without_what_it_does_not_use_which_still_imports_after(desk):
    """psycopg2 imports `ssl` (10 ms of a command's start) only to leave OpenSSL's
    thread locks to it, peewee imports SQLite's driver whatever the database, `inspect`
    (6 ms) for one function, and hashlib, calendar and socket for code a command does not
    run; a command keeps them all out (ops/startup.py) and still works, peewee gets the
    real ones when it uses them, and a later import of any of them (a command that talks
    TLS, say) gives the real module."""
    from tests.conftest import child_env

    code = ("import contextlib, io, sys\n"
            "from maildesk.ops.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['--config', sys.argv[1], 'tickets', 'list']) == 0\n"
            "print('psycopg2' in sys.modules, 'ssl' in sys.modules, 'sqlite3' in sys.modules, 'inspect' in sys.modules)\n"
            "print(sorted(m for m in ('hashlib', 'calendar', 'socket', 'random') if m in sys.modules))\n"
            "import inspect, peewee, sqlite3, ssl\n"
            "print(bool(ssl.create_default_context()), sqlite3.connect(':memory:').execute('SELECT 1').fetchone())\n"
            "print(str(inspect.signature(main)) == \"(argv: 'list[str] | None' = None) -> 'int'\", \n"
            "      [peewee.isclass(x) for x in (peewee.Model, peewee.Field(), int, 1)])\n"
            # peewee's stand-ins give the real thing when it uses them, and an import gives the real module
            "import calendar, hashlib, socket\n"
            "print(peewee.hashlib.md5 is hashlib.md5, peewee.calendar.timegm is calendar.timegm,\n"
            "      peewee.IPField().db_value('10.0.0.1') == 167772161, type(socket).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code, str(desk.config_path)], capture_output=True, text=True,
                         env=child_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:5] == ["True False False False", "[]", "True (1,)", "True [True, False, True, False]",
                                           "True True True module"]


def test_no_module_is_over_600_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


def test_every_layer_is_a_package_with_a_docstring_that_says_what_it_owns():
    for layer in LAYERS[1:]:
        init = PACKAGE / layer / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), layer


def test_graph_helper_sees_relative_and_absolute_imports():
    graph = _graph()
    assert "maildesk.store" in graph["maildesk.desk.lifecycle"] or any(
        t.startswith("maildesk.store") for t in graph["maildesk.desk.lifecycle"])
    assert defaultdict  # keeps the import honest for readers who extend the graph


def test_a_read_command_runs_without_the_cyclic_collector_and_gives_it_back(monkeypatch, tmp_path):
    """The collector was about 5 ms of a read's tenth of a second (ops/cli.py, READS);
    `run` lives for months and keeps it, and so does a caller of `main` in the process."""
    import gc

    from maildesk.ops import cli

    collecting: dict[str, bool] = {}

    def handler(name):
        def record(args):
            collecting[name] = gc.isenabled()
            return 0
        return record

    for name in ("status", "tickets_show", "run", "init"):
        monkeypatch.setitem(cli.HANDLERS, name, handler(name))
    config = ["--config", str(tmp_path / "maildesk.toml")]
    for args in (["status"], ["tickets", "show", "INC-1"], ["run", "--once"], ["init"]):
        assert cli.main([*config, *args]) == 0
        assert gc.isenabled()
    assert collecting == {"status": False, "tickets_show": False, "run": True, "init": True}


def test_a_module_peewee_uses_as_it_loads_is_the_one_everyone_imports_after(tmp_path):
    """A stand-in asked for something while peewee still loads imports the real module;
    that module stays (ops/startup.py), not a second copy of it for everyone else."""
    out = _load_fake_peewee(tmp_path, {"peewee.py": "import calendar\nTIMEGM = calendar.timegm\n"},
                            "sqlite:///unused.db", "import calendar, peewee\n"
                            "print(peewee.TIMEGM is calendar.timegm is peewee.calendar.timegm, 'socket' in sys.modules)\n")
    assert out.split() == ["True", "False"]


def test_a_module_loaded_with_peewee_may_ask_inspect_for_more_and_psycopg_3_stays_out_on_postgresql(tmp_path):
    """psycopg 3, installed beside psycopg2, is imported by peewee, and asks `inspect` for
    more than isclass as it loads (typing_extensions: `inspect.signature`); with the
    one-function stand-in of before, every command on PostgreSQL failed there. The
    stand-in now gives the real module for anything else, and psycopg 3 stays out."""
    files = {"peewee.py": "from inspect import isclass\nimport inspect\n"
                          "SIGNATURE = str(inspect.signature(lambda a, b=1: None))\n"
                          "try:\n    import psycopg\nexcept ImportError:\n    psycopg = None\n",
             "psycopg.py": "raise RuntimeError('psycopg 3 was imported')\n"}
    out = _load_fake_peewee(tmp_path, files, "postgresql://maildesk@db.example/maildesk", "import inspect, peewee\n"
                            "print(peewee.SIGNATURE, peewee.psycopg, peewee.isclass(int), "
                            "inspect.signature is peewee.inspect.signature)\n")
    assert out.split() == ["(a,", "b=1)", "None", "True", "True"]


def _load_fake_peewee(tmp_path, files: dict[str, str], url: str, then: str) -> str:
    """In a fresh Python with `files` (a `peewee.py` that does what is tested as it
    loads) first on its path: load_peewee(url), then the code `then`; its output."""
    from tests.conftest import child_env

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    code = ("import sys\nsys.path.insert(0, sys.argv[1])\n"
            f"from maildesk.ops.startup import load_peewee\nload_peewee({url!r})\n" + then)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=child_env())
    assert out.returncode == 0, out.stderr
    return out.stdout
