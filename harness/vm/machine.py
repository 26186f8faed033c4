"""A Machine owns one QEMU: the process (harness/vm/process.py: it dies with whoever
started it), QMP, the console and ssh."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypeVar

from harness.errors import (
    AbnormalShutdown,
    BootError,
    GuestMisbehaved,
    SetupError,
    SilentMachine,
    WaitTimeout,
)
from harness.kernel.kernels import Kernel
from harness.profiles import Profile
from harness.vm import cmdline, process
from harness.vm.boot import (
    EVERY_CPU_SLEEPS,
    HOSTKEY,
    INSMOD_FAILED,
    READY,
    RESTORED_OR_FRESH,
    BootInfo,
    Snapshot,
)
from harness.vm.console import CommandFailed, CommandResult, Console
from harness.vm.qmp import QMP
from harness.vm.splats import SplatLog
from harness.vm.ssh import SSH, KeyPair
from harness.wait import wait_until, within

T = TypeVar("T")


class AgentFailed(GuestMisbehaved):
    """A guest-agent scenario failed or gave no reply; the message carries what the agent
    said."""


class Machine:
    def __init__(self, profile: Profile, kernel: Kernel, initrd: Path, workdir: Path,
                 append: tuple[str, ...] = (), qemu_args: tuple[str, ...] = (),
                 memory_mb: int | None = None, boot_timeout: float = 180,
                 extra_qmp_socket: str | None = None):
        self.check_host(profile)
        self.profile, self.kernel, self.initrd = profile, kernel, initrd
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.append, self.extra_qemu_args, self.memory_mb = append, qemu_args, memory_mb
        self.boot_timeout = boot_timeout
        self.extra_qmp_socket = extra_qmp_socket
        self.keys = KeyPair.generate()
        self.proc: subprocess.Popen | None = None
        self.console: Console | None = None
        self.qmp: QMP | None = None
        self._ssh: SSH | None = None
        self.flushed_at: tuple | None = None    # judging.flush_console: activity at the last flush
        self.ssh_port: int | None = None
        self.host_key: str | None = None
        self.boot: BootInfo | None = None
        self.ssh_connect_timeout = 60.0
        self.started_at = 0.0
        self.launches = 0            # QEMU runs of this machine (relaunch() adds one)
        # called with the SilentMachine error (the test plugin marks the target dead: its
        # kernel never starts)
        self.on_silent: Callable[[Exception], None] | None = None
        # called once the guest is ready, booted or restored (the test plugin records
        # that the target boots)
        self.on_ready: Callable[[], None] | None = None
        # kernel splats from every log read from this machine (its consoles, dmesg over
        # ssh, its L2 guests' consoles); the test plugin claims them per test
        self.splats = SplatLog(kernel.release or "", profile.name, cmdline=" ".join(append),
                               accel=profile.accelerator)
        self.fail_on_boot_splat = False   # wait_ready() raises BootError on a splat
        self.retired: str | None = None   # why this machine serves no further test
        self.snapshot: Snapshot | None = None  # restore_from(): its first run loads this
        self._dmesg_n = 0
        self._closed = False

    @staticmethod
    def check_host(profile: Profile) -> None:
        """SetupError naming the package when this host cannot run `profile`'s QEMU."""
        if not shutil.which(cmdline.qemu_binary(profile)):
            raise SetupError(f"{cmdline.qemu_binary(profile)} not found: apt-get install "
                             f"{profile.qemu_package} (or run `guestpm setup`)")
        if profile.firmware and not os.path.exists(profile.firmware):
            raise SetupError(f"{profile.name} boots {profile.firmware}, which is missing: "
                             f"apt-get install {profile.firmware_package} (or run `guestpm setup`)")

    # ------------------------------------------------------------ paths
    @property
    def console_log(self) -> Path:
        return self.workdir / self._run_name("console.log")

    @property
    def qmp_log(self) -> Path:
        return self.workdir / self._run_name("qmp-events.jsonl")

    @property
    def stderr_log(self) -> Path:
        return self.workdir / self._run_name("qemu-stderr.log")

    @property
    def cmdline_file(self) -> Path:
        return self.workdir / self._run_name("qemu-cmdline.txt")

    def _run_name(self, name: str) -> str:
        """Logs of the first QEMU run keep their plain names; a relaunch's get .runN."""
        if self.launches <= 1:
            return name
        stem, _, ext = name.rpartition(".")
        return f"{stem}.run{self.launches}.{ext}"

    def artifacts(self) -> str:
        return f"artifacts in {self.workdir}"

    # ------------------------------------------------------------ lifecycle
    def restore_from(self, snapshot: Snapshot) -> Machine:
        """Make this machine's first run load `snapshot` (a machine of the same command
        line, just booted) instead of booting; a relaunch() boots as usual.  The guest's
        memory holds the snapshot's authorised key and host key, so they become ours."""
        if self.proc is not None:
            raise BootError(f"restore_from() of a machine already launched ({self.artifacts()})")
        self.snapshot, self.keys = snapshot, snapshot.keys
        return self

    @property
    def restoring(self) -> bool:
        """Whether the current QEMU run loads a snapshot."""
        return self.snapshot is not None and self.launches == 1

    def launch(self) -> Machine:
        """Start QEMU (once: relaunch() starts it again after it exited)."""
        if self.proc is not None:
            raise BootError(f"launch() of a machine already launched ({self.artifacts()}): "
                            f"use relaunch() once its QEMU has exited")
        return self._start()

    def _start(self) -> Machine:
        if self._closed:
            raise BootError(f"a closed machine cannot start again ({self.artifacts()})")
        self.launches += 1
        qmp_ours, qmp_theirs = socket.socketpair()
        con_ours, con_theirs = socket.socketpair()
        incoming = self.snapshot.incoming_args() if self.restoring else ()
        try:
            spec = cmdline.BootSpec(
                kernel_image=str(self.kernel.image), initrd=str(self.initrd),
                qmp_fd=qmp_theirs.fileno(), console_fd=con_theirs.fileno(),
                append=(f"guestpm.authkey={self.keys.cmdline_value}", *self.append),
                qemu_args=(*self.extra_qemu_args, *incoming), memory_mb=self.memory_mb,
                extra_qmp_socket=self.extra_qmp_socket)
            args = cmdline.qemu_args(self.profile, spec)
            self.cmdline_file.write_text(shlex.join(args) + "\n")
            self.started_at = time.monotonic()
            self.proc = process.start(args, self.stderr_log, self.workdir,
                                      (qmp_theirs.fileno(), con_theirs.fileno()))
        except BaseException:
            qmp_ours.close()            # QEMU never got them: nothing else will close them
            con_ours.close()
            raise
        finally:
            qmp_theirs.close()          # QEMU holds its own copies now
            con_theirs.close()
        self.console = Console(con_ours, self.console_log, self.splats,
                               history=self.snapshot.console_history() if incoming else b"")
        try:
            self.qmp = QMP(qmp_ours, self.qmp_log)
        except Exception:
            self.kill()
            raise BootError(f"QEMU did not answer on QMP: {self._stderr_tail()} "
                            f"({self.artifacts()})") from None
        return self

    def relaunch(self) -> Machine:
        """Start the same command line again, once QEMU has exited (say, after the
        guest powered off to hibernate).  The keys are the same, so a guest that
        restores its memory accepts this harness again; logs of this run are *.runN.*"""
        if self.alive():
            raise BootError("relaunch() while QEMU still runs: power the guest off first")
        if self._ssh:
            self._ssh.close()
            self._ssh = None
        if self.qmp:
            self.qmp.close()
        if self.console:
            self.console.close()
        self.ssh_port, self.boot = None, None
        return self._start()

    def wait_restored(self, timeout: float | None = None) -> bool:
        """After relaunch() of a hibernated guest: True once the restored kernel reports
        "hibernation exit" (ssh then reconnects to the restored dropbear, whose host key
        must be the one seen before); False if /init booted afresh instead."""
        timeout = timeout or self.boot_timeout
        m = self.expect(RESTORED_OR_FRESH, timeout, "the restored kernel's "
                        "'PM: hibernation: hibernation exit' or /init's ready line")
        if m.group(1) is None:
            return False
        self.ssh_port = self._forwarded_port()
        return True

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _stderr_tail(self) -> str:
        try:
            return " | ".join(self.stderr_log.read_text(errors="replace").strip()
                              .splitlines()[-3:]) or "(no stderr)"
        except OSError:
            return "(no stderr)"

    def wait_ready(self, timeout: float | None = None) -> BootInfo:
        """Wait for /init to report its shell (ssh connects lazily, on first use); for a
        restore, for QEMU to load the snapshot (ssh then connects at once)."""
        timeout = timeout or self.boot_timeout
        assert self.console is not None
        if self.restoring:
            return self._wait_loaded(timeout)
        silent = min(timeout, self.profile.silent_after_s)
        if not self.console.wait_output(silent, self._watchdog, self.profile.kernel_started):
            sign = f"kernel line '{self.profile.kernel_started}'" \
                if self.profile.kernel_started else "byte"
            e = SilentMachine(f"the console stayed silent for {silent:.0f}s after QEMU "
                              f"started: no {sign} on it ({self.profile.name}); "
                              f"console tail ({self.console_log}):\n{self.console.tail(5)}")
            if self.on_silent:
                self.on_silent(e)
            raise e
        key = self.expect(HOSTKEY, timeout, "the guest's ssh host key line "
                          "(printed by /init after dropbear starts)")
        self.host_key = key.group(1)
        m = self.expect(READY, timeout, "the guest's 'guestpm: ready' line")
        self.boot = BootInfo(time.monotonic() - self.started_at, float(m.group(1)), m.group(2),
                             INSMOD_FAILED.findall(self.console_log.read_text(errors="replace")))
        self.ssh_port = self._forwarded_port()
        if self.on_ready:                   # the kernel booted, even if it splatted
            self.on_ready()
        if self.fail_on_boot_splat:         # left unclaimed: the caller records them
            found = [s for s in self.splats.unclaimed() if not s.allowed]
            if found:
                self.retired = "a kernel splat during boot"
                raise BootError(f"kernel splat during boot ({self.artifacts()}):\n" +
                                "\n".join(s.quote() for s in found))
        return self.boot

    def _wait_loaded(self, timeout: float) -> BootInfo:
        """A restore: wait for QEMU to load the snapshot, resume the guest, and check it
        on the console (ssh stays unconnected, as after a boot; its first connection
        checks the snapshot's keys): set the guest's clock (stopped since the snapshot)
        to the host's, as a boot reads it from the RTC, and sleep on each CPU (its timer
        runs).  BootError if the guest fails that."""
        snap = self.snapshot

        def loaded() -> str | None:
            status = self.qmp.execute("query-status")["status"]
            return None if status == "inmigrate" else status
        status = self.wait_until(loaded, timeout, f"QEMU to load the snapshot {snap.path}",
                                 interval=0.05)
        if status not in ("paused", "running"):
            raise BootError(f"QEMU loaded the snapshot {snap.path} into state {status!r}: "
                            f"{self._stderr_tail()} ({self.artifacts()})")
        if status == "paused":
            self.qmp.execute("cont")
        self.host_key = snap.host_key
        self.ssh_port = self._forwarded_port()
        try:
            self.run(f"date -s @{time.time():.0f} >/dev/null && {EVERY_CPU_SLEEPS}",
                     timeout=15).check()
        except (WaitTimeout, CommandFailed) as e:
            raise BootError(f"the restored guest does not run as a booted one would: "
                            f"{e} ({self.artifacts()})") from None
        self.boot = BootInfo(time.monotonic() - self.started_at, snap.boot.guest_uptime_s,
                             snap.boot.release, list(snap.boot.insmod_failed), restored=True)
        if self.on_ready:
            self.on_ready()
        return self.boot

    def _forwarded_port(self) -> int:
        """The host port QEMU picked for hostfwd ...:0-:22 (race-free under xdist)."""
        usernet = self.qmp.hmp("info usernet")
        m = re.search(r"HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+\S+\s+22\b", usernet)
        if not m:
            raise BootError(f"no ssh port forward in `info usernet`:\n{usernet}")
        return int(m.group(1))

    @property
    def ssh(self) -> SSH:
        if self._ssh is None:
            if self.ssh_port is None:
                raise BootError("ssh used before wait_ready()")
            ssh = SSH("127.0.0.1", self.ssh_port, self.keys, self.host_key, self._watchdog,
                      self._ssh_lost, self._scan_output)
            try:
                ssh.connect(timeout=self.ssh_connect_timeout, watchdog=self._watchdog)
            except WaitTimeout as e:
                self.console.check_fatal()
                raise WaitTimeout(f"{e}; console tail ({self.console_log}):\n"
                                  f"{self.console.tail()}") from None
            self._ssh = ssh
        return self._ssh

    @property
    def ssh_commands(self) -> int | None:
        """Commands run over ssh so far; None before the first connection."""
        return None if self._ssh is None else self._ssh.commands

    def _watchdog(self) -> None:
        """Raise if the guest crashed or QEMU died.  Every wait on this machine (console,
        ssh, QMP events) calls it, so a dead guest is reported as such, at once."""
        self.console.check_fatal()
        if not self.alive():
            raise BootError(f"QEMU exited (status {self.proc.wait()}): "
                            f"{self._stderr_tail()}; console tail ({self.console_log}):\n"
                            f"{self.console.tail()}")

    # ------------------------------------------------------------ waiting
    # The waits a test makes on this machine.  Each is bounded and always watched by the
    # machine's own watchdog, so a guest that crashes or a QEMU that exits ends the wait
    # at once, saying so.  `also` adds the caller's own check (say, that a write still
    # blocks).
    def watch(self, also: Callable[[], None] | None = None) -> Callable[[], None]:
        """This machine's watchdog (and `also`), for a wait on something else: a file the
        guest writes through QEMU, a listener in the guest."""
        if also is None:
            return self._watchdog

        def check() -> None:
            self._watchdog()
            also()
        return check

    def wait_event(self, name: str, after: float, timeout: float,
                   also: Callable[[], None] | None = None) -> dict:
        """The first QMP `name` event with host_time >= after."""
        return self.qmp.wait_event(name, after, timeout, self.watch(also))

    def expect(self, pattern: str | re.Pattern, timeout: float, what: str) -> re.Match:
        """`pattern` on the serial console."""
        return self.console.expect(pattern, timeout, what, self._watchdog)

    def wait_until(self, predicate: Callable[[], T], timeout: float, what: str,
                   also: Callable[[], None] | None = None, interval: float = 0.5,
                   fail: Callable[[], str] | None = None) -> T:
        """predicate()'s first truthy value (harness.wait.wait_until, watched).  Without
        `fail`, the timeout quotes the console's tail: what the guest did meanwhile."""
        def saw() -> str:
            return (f"timed out after {timeout:.0f}s waiting for {what}; console tail "
                    f"({self.console_log}):\n{self.console.tail()}")
        return wait_until(predicate, timeout, what, self.watch(also), interval,
                          fail=fail or saw)

    def _scan_output(self, result: CommandResult) -> None:
        """A `dmesg` read over ssh: its splats join the console's (each once).  The
        console sees them first unless the console loglevel hides them."""
        if "dmesg" not in result.command or "] " not in result.output:
            return
        self._dmesg_n += 1
        log = self.workdir / f"dmesg-{self._dmesg_n}.txt"
        if self.splats.scan(result.output, "dmesg over ssh", log):
            log.write_text(result.output)

    def _ssh_lost(self, command: str) -> None:
        """The ssh connection died mid-command: say why if the console or QEMU knows."""
        within(lambda: not self.alive() or self.console.fatal_index is not None, 5,
               what="QEMU's exit or a crash on the console after ssh was lost")
        self._watchdog()
        raise BootError(f"ssh connection lost during `{command}` while the guest still runs; "
                        f"console tail ({self.console_log}):\n{self.console.tail()}")

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        """Run on the serial console (works without network)."""
        return self.console.run(command, timeout, self._watchdog)

    def agent(self, scenario: str, **kwargs) -> dict:
        """Run a guest-agent scenario over ssh and return its result dict.

        An agent error is AgentFailed carrying the agent's own output, so the failing
        test shows what the guest said, not a JSON decode error."""
        arg = shlex.quote(json.dumps(kwargs)) if kwargs else ""
        r = self.ssh.run(f"cd /opt/guestpm && python3 -m harness.guest.agent {scenario} {arg}")
        try:
            reply = json.loads(r.output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise AgentFailed(f"agent {scenario}: no JSON reply (exit {r.status}):\n"
                              f"{r.output}{r.stderr}") from None
        if "result" not in reply:
            raise AgentFailed(f"agent {scenario} failed: {reply.get('error')}\n"
                              f"{reply.get('traceback', '')}")
        return reply["result"]

    def kill(self) -> None:
        """Kill our QEMU (by pid) now.  Safe to call more than once, from any thread."""
        process.kill(self.proc)

    def close(self, graceful: bool = True) -> None:
        """Quit QEMU (graceful: over QMP, else kill it) and release everything.  A QEMU
        that does not end cleanly on `quit` (still running 10 s later, or a non-zero
        status) is killed, and then reported: AbnormalShutdown."""
        if self._closed:
            return
        self._closed = True
        abnormal = None
        try:
            if self._ssh:
                self._ssh.close()
            if graceful and self.proc is not None and self.alive() and self.qmp:
                abnormal = process.quit_over_qmp(self.qmp, self.proc)
        finally:
            self.kill()
            if self.qmp:
                self.qmp.close()
            if self.console:
                self.console.close()
        if abnormal:
            raise AbnormalShutdown(f"{abnormal}: {self._stderr_tail()} ({self.artifacts()})")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close(graceful=exc[0] is None)
