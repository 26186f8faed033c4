"""ssh into a guest with paramiko.

The client key is generated per machine and handed to the guest on the kernel
command line; the guest generates its own host key at boot and prints the
public half on the console, where the harness reads it and pins it.  No
known_hosts file is read or written.
"""

from __future__ import annotations

import base64
import select
import shlex
from dataclasses import dataclass

import paramiko

from harness.vm.console import CommandResult
from harness.wait import wait_until


@dataclass
class KeyPair:
    key: paramiko.PKey

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(paramiko.ECDSAKey.generate(bits=256))

    @property
    def cmdline_value(self) -> str:
        """TYPE:BASE64 (a kernel parameter cannot hold a space)."""
        return f"{self.key.get_name()}:{self.key.get_base64()}"


class SSH:
    def __init__(self, host: str, port: int, key: KeyPair, host_key_line: str | None,
                 watchdog=lambda: None, on_lost=lambda command: None,
                 on_output=lambda result: None):
        self.host, self.port, self.key = host, port, key
        self.watchdog, self.on_lost = watchdog, on_lost
        self.on_output = on_output      # sees every command's result (kernel splats in a
                                        # `dmesg` the test read)
        self.commands = 0               # started so far: has anyone acted on the guest?
        self.client = paramiko.SSHClient()
        if host_key_line:
            ktype, b64 = host_key_line.split()[:2]
            self.client.get_host_keys().add(f"[{host}]:{port}", ktype,
                                            paramiko.PKey.from_type_string(
                ktype, base64.b64decode(b64)))
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())

    def connect(self, timeout: float, watchdog=lambda: None) -> None:
        last: Exception | None = None

        def connected() -> bool:
            nonlocal last
            try:
                self.client.connect(self.host, self.port, username="root", pkey=self.key.key,
                                    timeout=5, banner_timeout=10, auth_timeout=10,
                                    look_for_keys=False, allow_agent=False)
                return True
            except (OSError, paramiko.SSHException, EOFError) as e:
                last = e
                return False
        watchdog()
        wait_until(connected, timeout, "ssh", watchdog, interval=0.5,
                   fail=lambda: f"ssh to root@{self.host}:{self.port} did not come up within "
                                f"{timeout:.0f}s (last error: {last!r})")

    def start(self, command: str, stdin: bytes = b"") -> Running:
        """Start a command (stdin, if given, is sent and closed) without waiting for it:
        for commands that only return after the host acts, like `echo mem`."""
        chan = self.client.get_transport().open_session(timeout=10)
        self.commands += 1
        chan.exec_command(command)
        if stdin:
            chan.sendall(stdin)
        chan.shutdown_write()
        return Running(self, command, chan)

    def run(self, command: str, timeout: float = 60, stdin: bytes = b"") -> CommandResult:
        """Run a command; between reads `watchdog` is called, so a guest that panics
        mid-command fails now (quoting the panic) rather than at the timeout."""
        return self.start(command, stdin).wait(timeout)

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        """Write a file in the guest (dropbear has no sftp-server: `cat` over exec)."""
        q = shlex.quote(path)
        self.run(f"cat > {q} && chmod {mode:o} {q}", stdin=data).check()

    def close(self) -> None:
        self.client.close()


class Running:
    """A command started over ssh: poll `done()`, collect with `wait()`."""

    def __init__(self, ssh: SSH, command: str, chan: paramiko.Channel):
        self.ssh, self.command, self.chan = ssh, command, chan
        self.out, self.err = bytearray(), bytearray()

    def _pump(self) -> None:
        while self.chan.recv_ready():
            self.out += self.chan.recv(65536)
        while self.chan.recv_stderr_ready():
            self.err += self.chan.recv_stderr(65536)

    def done(self) -> bool:
        self._pump()
        return self.chan.exit_status_ready() and not self.chan.recv_ready() \
            and not self.chan.recv_stderr_ready()

    def wait(self, timeout: float = 60) -> CommandResult:
        def gave_up() -> str:
            self.chan.close()
            return (f"ssh command `{self.command}` did not finish within {timeout:.0f}s; "
                    f"output so far: {self.out.decode(errors='replace')[-500:]!r}")
        wait_until(self.done, timeout, f"`{self.command}`", self.ssh.watchdog, interval=0.25,
                   sleep=lambda s: select.select([self.chan], [], [], s), fail=gave_up)
        status = self.chan.recv_exit_status()
        self.chan.close()
        if status == -1:          # no exit status: the connection died under the command
            self.ssh.on_lost(self.command)
        result = CommandResult(self.command, status, self.out.decode(errors="replace"),
                               self.err.decode(errors="replace"))
        self.ssh.on_output(result)
        return result
