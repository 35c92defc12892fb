"""A command block is the lines at the very top of the reply (after the quoted history
is stripped and HTML turned into text) that each start with `#word`; the first other
line ends it. The block is all or nothing (docs/mail.md, commands): each line is checked
first (known, well formed, allowed for this sender, sender authenticated), and then
all are applied inside one savepoint; if any line fails, nothing changes and the
sender gets a reply that lists each line with what was wrong.

Each command is a small `Command` below: who may run it, how its argument is read,
what it does. The text after the block is the reply itself (`ctx.body`), relayed by
the next stage unless a command used it (`#note`, `#resolve`).
"""

from .stage import apply

__all__ = ["apply"]
