"""Whether the process that owns a ``running`` run may still be alive.

A run records the pid and host of the process that writes it, so a later command can tell that the
process died (killed, out of memory, the machine rebooted) and mark the run ``interrupted`` instead of
showing it as running forever, and so a baseline claimed by a dead process can be claimed again.
"""

from __future__ import annotations

import os
import socket


def current_host() -> str:
    """This machine's name as recorded in ``runs.host``; pids are only comparable on one host."""
    return socket.gethostname()


def process_alive(host: str | None, pid: int | None) -> bool:
    """Whether the process that owns a ``running`` run may still be alive.

    Only a definite "gone" returns False, because flipping a live run to
    ``interrupted`` would be worse than leaving a dead one ``running``: an unknown
    pid or host (rows written before pids were recorded), another host (we cannot
    probe it) and Windows (where signal 0 is CTRL_C_EVENT, not a probe) all count as
    alive. On this host ``os.kill(pid, 0)`` decides: ProcessLookupError means gone,
    PermissionError means it exists under another user. A recycled pid reads as
    alive, which errs on the same safe side.
    """
    if pid is None or host is None or host != current_host():
        return True
    if int(pid) <= 0:  # no real process; os.kill would address a process group
        return False
    if os.name == "nt":
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists under another user; anything else: cannot tell
        return True
    return True
