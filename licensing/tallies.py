"""Validation counts and devices' last-seen times, added up in memory and written every second.

Each validation used to write its license's count and, once a minute, its device's last-seen time:
two committed UPDATEs on the hot path, for figures that staff read later and no rule depends on.
Here each server process adds them up and a background thread writes them, as increments, in one
transaction per interval, so any number of processes and hosts add up right. A process that is
killed loses at most its last interval; one that stops cleanly writes what it holds. Usage counted
against a limit (Polar's quota) is not a tally: it is written in the validation's own UPDATE.

With VALIDATION_TALLY_SECONDS at 0, each validation writes its own tally at once (the tests do this).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid
from datetime import datetime

from django.conf import settings
from django.db import connection

from licensing import lookups

logger = logging.getLogger(__name__)

# How long a stopping process waits for a write under way before writing what is left itself.
STOP_TIMEOUT_SECONDS = 10

_lock = threading.Lock()
_validations: dict[uuid.UUID, tuple[int, datetime]] = {}
_devices_seen: dict[uuid.UUID, datetime] = {}
# This process's background writer: its process id (a forked child needs its own), its thread and
# its stop signal.
_writer: tuple[int, threading.Thread, threading.Event] | None = None


def count_validation(license_id: uuid.UUID, *, at: datetime, device_seen: uuid.UUID | None = None) -> None:
    """Add one validation of a license at `at`, and mark the device `device_seen` as seen then."""
    _add({license_id: (1, at)}, {device_seen: at} if device_seen else {})


def note_device_seen(device_id: uuid.UUID, *, at: datetime) -> None:
    """Mark a device as seen at `at` without counting a validation (it activated again)."""
    _add({}, {device_id: at})


def _add(validations: dict[uuid.UUID, tuple[int, datetime]], devices_seen: dict[uuid.UUID, datetime]) -> None:
    interval = settings.VALIDATION_TALLY_SECONDS
    if not interval:
        lookups.add_tallies(validations, devices_seen)
        return
    _keep(validations, devices_seen)
    if _writer is None or _writer[0] != os.getpid():
        _start_writer(interval)


def write() -> None:
    """Write what this process has added up so far; on failure keep it for the next write."""
    global _validations, _devices_seen
    with _lock:
        validations, devices_seen = _validations, _devices_seen
        _validations, _devices_seen = {}, {}
    if not validations and not devices_seen:
        return
    try:
        lookups.add_tallies(validations, devices_seen)
    except Exception:
        # A COMMIT that reached the database before its connection failed is written again: the
        # counts are figures for staff, and counting a few twice beats losing them all.
        logger.exception("Could not write %d validation counts; keeping them for the next try", len(validations))
        _keep(validations, devices_seen)


def _keep(validations: dict[uuid.UUID, tuple[int, datetime]], devices_seen: dict[uuid.UUID, datetime]) -> None:
    with _lock:
        for license_id, (count, at) in validations.items():
            newer_count, newer_at = _validations.get(license_id, (0, at))
            _validations[license_id] = (count + newer_count, max(at, newer_at))
        for activation_id, at in devices_seen.items():
            _devices_seen[activation_id] = max(at, _devices_seen.get(activation_id, at))


def _start_writer(interval: float) -> None:
    global _writer
    with _lock:
        # Checked again under the lock: several request threads may arrive here at once.
        if _writer is not None and _writer[0] == os.getpid():
            return
        stop = threading.Event()
        thread = threading.Thread(target=_write_every, args=(interval, stop), name="validation-tallies", daemon=True)
        _writer = (os.getpid(), thread, stop)
    thread.start()


def _write_every(interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        write()
        try:
            # Between writes the thread holds no database connection (nor a pool slot).
            connection.close()
        except Exception:
            logger.exception("Could not close the validation tallies' database connection")


def stop_writer() -> None:
    """Stop this process's background writer, and write what it still holds."""
    global _writer
    with _lock:
        writer, _writer = _writer, None
    if writer is not None and writer[0] == os.getpid():
        _pid, thread, stop = writer
        stop.set()
        # A write under way holds tallies taken from the shared ones: let it finish first.
        thread.join(STOP_TIMEOUT_SECONDS)
    write()


def _forget_in_child() -> None:
    """A forked process starts with nothing counted: its parent writes its own tallies."""
    global _lock, _validations, _devices_seen, _writer
    # A new lock too: another thread of the parent may have held the old one at the fork.
    _lock = threading.Lock()
    _validations, _devices_seen, _writer = {}, {}, None


os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(stop_writer)
