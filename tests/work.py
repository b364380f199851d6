"""CPU time, the measure of work the tests judge instead of wall-clock time: a process's CPU
seconds do not grow when the machine is loaded, so a limit on them (or a ratio of two taken in
the same run) holds on a busy or slower machine where a limit in seconds of wall time did not."""
from __future__ import annotations

import os


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads) and of its waited-for
    children, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")
