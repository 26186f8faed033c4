"""ssh into a guest with paramiko.

The client key is generated per machine and handed to the guest on the kernel
command line; the guest generates its own host key at boot and prints the
public half on the console, where the harness reads it and pins it.  No
known_hosts file is read or written.
"""

from __future__ import annotations

import base64
import socket
import time
from dataclasses import dataclass

import paramiko

from .console import CommandResult
from .errors import WaitTimeout


@dataclass
class KeyPair:
    key: paramiko.PKey

    @classmethod
    def generate(cls) -> "KeyPair":
        return cls(paramiko.ECDSAKey.generate(bits=256))

    @property
    def cmdline_value(self) -> str:
        """TYPE:BASE64 (a kernel parameter cannot hold a space)."""
        return f"{self.key.get_name()}:{self.key.get_base64()}"


class SSH:
    def __init__(self, host: str, port: int, key: KeyPair, host_key_line: str | None):
        self.host, self.port, self.key = host, port, key
        self.client = paramiko.SSHClient()
        if host_key_line:
            ktype, b64 = host_key_line.split()[:2]
            self.client.get_host_keys().add(f"[{host}]:{port}", ktype,
                                            paramiko.PKey.from_type_string(
                ktype, base64.b64decode(b64)))
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())

    def connect(self, timeout: float, alive=lambda: True) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline and alive():
            try:
                self.client.connect(self.host, self.port, username="root", pkey=self.key.key,
                                    timeout=5, banner_timeout=10, auth_timeout=10,
                                    look_for_keys=False, allow_agent=False)
                return
            except (OSError, paramiko.SSHException, EOFError) as e:
                last = e
                time.sleep(0.5)
        raise WaitTimeout(f"ssh to root@{self.host}:{self.port} did not come up within "
                          f"{timeout:.0f}s (last error: {last!r})")

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        stdin, stdout, stderr = self.client.exec_command(command, timeout=timeout)
        stdin.close()
        try:
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            status = stdout.channel.recv_exit_status()
        except socket.timeout:
            raise WaitTimeout(f"ssh command `{command}` gave no output for {timeout:.0f}s") \
                from None
        return CommandResult(command, status, out, err)

    def close(self) -> None:
        self.client.close()

