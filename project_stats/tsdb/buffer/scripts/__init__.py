"""The buffer's Lua scripts, one a file, loaded once at import.

Each ``*.lua`` file starts with what it takes and answers (keys, arguments,
reply) and the crash point it guards. A line ``-- include: name.lua`` is
replaced by that file (without its shebang line): the read scripts share
their helpers that way, and ``write_back.lua`` is ``write.lua`` under another
shebang. A script is known by its final text, and :data:`SHA` holds the SHA1
Redis knows it by (EVALSHA), computed once.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

_INCLUDE = re.compile(r"^-- include: (\S+\.lua)$", re.MULTILINE)


def _text(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def load(name: str) -> str:
    """The script ``name`` with its includes replaced (recursively)."""

    def included(match: re.Match[str]) -> str:
        text = load(match.group(1))
        if text.startswith("#!"):
            text = text.split("\n", 1)[1]
        return text.removesuffix("\n")

    return _INCLUDE.sub(included, _text(name))


SHA: dict[str, str] = {}
"""Each script's SHA1 (what EVALSHA names it by), keyed by its text."""


def _script(name: str) -> str:
    source = load(name)
    SHA[source] = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    return source


WRITE = _script("write.lua")
WRITE_BACK = _script("write_back.lua")
UNDO = _script("undo.lua")
BEGIN = _script("begin.lua")
HLEN = _script("hlen.lua")
HGETALL = _script("hgetall.lua")
ACK = _script("ack.lua")
RELEASE = _script("release.lua")
STATS = _script("stats.lua")
FIELDS = _script("fields.lua")
READ = _script("read.lua")
READ_SHORT = _script("read_short.lua")
FORGET_SHORT = _script("forget_short.lua")

# Scripts that add or subtract: run twice, they would count twice. Never
# resent, not even after a cluster redirection.
NEVER_RESENT = frozenset((WRITE, WRITE_BACK, UNDO))
