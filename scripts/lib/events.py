"""emit_event: the guide's Python API for the event store, on top of `homelab events emit`.

    from scripts.lib.events import emit_event
    emit_event("service_unhealthy", "error", "monitor.py", "ollama", "cid-123", {"error": "OOM"})

`data` is a dict (or None for {}) of names and states, never a secret value. The binary is
$HOMELAB_BIN, else `homelab` on PATH; the node is $HOMELAB_NODE (else this host's name) and the
runtime root $HOMELAB_ROOT (else /opt/homelab), as `homelab` reads them. Standard library only;
the command is an argument list, never a shell string.

Raises EventError (with homelab's reason: which argument and why) when the event is refused or
cannot be written; nothing is written then. Catch it where an event must never stop the caller.
"""

import json
import os
import shutil
import subprocess

__all__ = ["emit_event", "EventError"]

# An event is one small line; a writer that hangs longer than this is stuck.
_TIMEOUT_SECONDS = 30


class EventError(RuntimeError):
    """`homelab events emit` refused the event or could not write it."""


def _binary():
    explicit = os.environ.get("HOMELAB_BIN")
    if explicit:
        return explicit
    found = shutil.which("homelab")
    if not found:
        raise EventError("homelab not found: set HOMELAB_BIN or put homelab on PATH")
    return found


def emit_event(event_type, severity, source, service, correlation_id, data=None):
    """Append one event, with the guide's argument order."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EventError(
            "argument `data`: expected a dict (a JSON object), found %s" % type(data).__name__
        )
    args = [str(event_type), str(severity), str(source), str(service), str(correlation_id)]
    command = [_binary(), "events", "emit", "--"] + args + [json.dumps(data)]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EventError("cannot run %s: %s" % (command[0], e)) from e
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip()
        raise EventError(reason or "homelab exited with status %d" % done.returncode)
