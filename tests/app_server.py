"""Start the real app (`python app.py`) on 127.0.0.1 at a free port, for the app tests and the
load benchmark: a subprocess, so a crash of the server shows up as a dead process."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AppServer:
    proc: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def tmp_root(self) -> Path | None:
        m = re.search(r"temporary files \(uploads, outputs\) live in (\S+)", self.log())
        return Path(m.group(1).rstrip(",")) if m else None

    def stop(self, timeout: float = 60.0) -> int:
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def start_app(log_path: Path, *args: str, timeout: float = 300.0) -> AppServer:
    """Launch the app and wait until it answers; raise with the log's tail if it dies or stalls."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    env.pop("GRADIO_TEMP_DIR", None)  # the app makes its own temporary folder
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port), *args],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = AppServer(proc, f"http://127.0.0.1:{port}/", Path(log_path))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive:
            raise RuntimeError(f"the app exited with {proc.returncode}:\n{server.log()[-3000:]}")
        try:
            with urllib.request.urlopen(server.url, timeout=5) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(1.0)
    server.stop()
    raise RuntimeError(f"the app did not answer within {timeout:.0f} s:\n{server.log()[-3000:]}")
