"""guestpm: tests for Linux patches that carry guest power management across the
KVM boundary (arm64 PSCI SYSTEM_SUSPEND / SYSTEM_OFF2, x86 s2idle, S3, hibernation,
ACPI events, vfio low power), on the kernels you choose, under QEMU.

  guestpm run   [--kernel K]... [--arch A]...    judge kernels: PASS / SKIP / FAIL per
                                                 kernel x arch, summary in results/
  guestpm boot  --kernel K --arch A              a shell in a guest, with QMP and ssh
  guestpm build --tree DIR --arch A              your tree -> a kernel (--kernel build:DIR)
  guestpm bisect --tree DIR --good R --bad R -- TESTS   the commit that changed a verdict
  guestpm setup [--kernel K]... [--arch A]...    host packages, kernels, root filesystems

Kernels (K): debian:6.1, debian:6.12, debian:7.2 (the defaults), any debian:X.Y or
debian:SUITE the system's mirror carries (debian:5.10, debian:bullseye,
debian:bookworm-backports), path:IMAGE[,modules=DIR] (bzImage, arm64 Image or
Image.gz, /boot/vmlinuz-RELEASE), build:DIR|TREE.  Arches (A): x86_64, x86_64-pc,
arm64, arm64-uefi.  Bad input stops before anything boots, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import termios
import threading
import tty
from pathlib import Path

from harness import profiles
from harness.errors import GuestpmError, SetupError
from harness.image import rootfs
from harness.kernel import build, kconfig, kernels
from harness.signals import install_signal_handlers
from harness.vm import l2 as l2mod
from harness.vm.machine import Machine

ROOT = Path(__file__).resolve().parent.parent
# Debian packages the host needs, by the command that proves each is there.
HOST_PACKAGES = {"mmdebstrap": "mmdebstrap", "dpkg-deb": "dpkg", "apt-get": "apt",
                 "iasl": "acpica-tools", "qemu-img": "qemu-utils",
                 "dtc": "device-tree-compiler"}    # the FDT writer's unit tests


def say(msg: str) -> None:
    print(f"guestpm: {msg}", file=sys.stderr, flush=True)


def _targets(args) -> list[tuple[str, profiles.Profile]]:
    """The kernel x arch targets, each checked as far as it can be without the network
    (spec, image, arch); GuestpmError (one line, exit 2) before anything boots."""
    ks = args.kernel or list(kernels.DEFAULT_KERNELS)
    archs = args.arch or list(profiles.DEFAULT_ARCHES)
    targets = [(k, profiles.get(a)) for k in ks for a in archs]
    for k, p in targets:
        kernels.check_spec(k, p)
    return targets


def host_packages(archs: list[profiles.Profile]) -> dict[str, str]:
    """Command or file -> the Debian package that provides it.  Firmware of every
    profile of the same architecture comes along (tests boot those variants too)."""
    need = dict(HOST_PACKAGES)
    for p in archs:
        need[p.qemu_binary] = p.qemu_package
        for variant in profiles.PROFILES.values():
            if variant.arch == p.arch and variant.firmware:
                need[variant.firmware] = variant.firmware_package
    return need


def _present(what: str) -> bool:
    return os.path.exists(what) if what.startswith("/") else shutil.which(what) is not None


def _apt_install(missing: list[str], why: str) -> None:
    if os.geteuid() != 0:
        raise SetupError(f"{why} needs {' '.join(missing)}: run "
                         f"`sudo apt-get install {' '.join(missing)}` (or guestpm setup as root)")
    say(f"installing {' '.join(missing)} with apt-get ({why})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SetupError(f"`{' '.join(cmd)}` failed: "
                             + " | ".join(proc.stderr.strip().splitlines()[-3:]))


def install_host_packages(archs: list[profiles.Profile]) -> None:
    missing = sorted({pkg for what, pkg in host_packages(archs).items() if not _present(what)})
    if missing:
        _apt_install(missing, "guestpm")


def install_build_packages(archs: list[str]) -> None:
    """What `guestpm build` needs (compilers, flex, bison, ...), as root only."""
    pkgs = sorted({p for a in archs for p in build.build_packages(a)})
    have = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n", *pkgs],
                          capture_output=True, text=True).stdout
    installed = {ln.split()[0] for ln in have.splitlines() if ln.endswith(" installed")}
    missing = [p for p in pkgs if p not in installed]
    if missing:
        _apt_install(missing, "building kernels")


def cmd_setup(args) -> int:
    targets = _targets(args)
    install_host_packages(list({p.name: p for _, p in targets}.values()))
    if args.build_tools:
        install_build_packages(sorted({p.arch for _, p in targets}))
    for spec, profile in targets:
        k = kernels.resolve(spec, profile, say)
        path = rootfs.initramfs(k, profile, say)
        say(f"ready: {spec} {profile.name}: {k.release} ({k.image}), initramfs {path.name}")
    return 0


def cmd_run(args) -> int:
    import pytest
    if args.setup:
        cmd_setup(args)
    tests = ROOT / "tests" / "e2e"
    if not tests.is_dir():
        raise SetupError(f"no tests at {tests}: guestpm run works from a source checkout")
    n_targets = len(_targets(args))
    for p in {p.name: p for _, p in _targets(args)}.values():
        Machine.check_host(p)
    argv = [str(tests), "-p", "no:cacheprovider", "-q", "-rfE", f"--results={args.results}",
            "--junitxml", str(Path(args.results) / "junit.xml")]
    if args.self_test:
        argv.append("--self-test")
    for g in args.guest_kernel:
        argv.append(f"--guest-kernel={g}")
    argv.append(f"--splats={args.splats}")
    for k in args.kernel:
        argv.append(f"--kernel={k}")
    for a in args.arch:
        argv.append(f"--arch={a}")
    workers = min(args.jobs or os.cpu_count() or 1, n_targets)
    if workers > 1:
        argv += ["-n", str(workers), "--dist", "loadgroup"]
    return pytest.main(argv + args.pytest_args)


def cmd_boot(args) -> int:
    profile = profiles.get(args.arch)
    k = kernels.resolve(args.kernel, profile, say)
    initrd = rootfs.initramfs(k, profile, say)
    work = Path(tempfile.mkdtemp(prefix="guestpm-boot-"))
    qmp_sock = str(work / "qmp.sock")
    l2 = args.l2 and profile.arch == "arm64"
    if args.l2 and not l2:
        raise SetupError("--l2: the reference VMM runs arm64 guests only")
    guest = kernels.resolve(args.guest_kernel, profile, say) if args.guest_kernel else k
    with Machine(profile, k, initrd, work, extra_qmp_socket=qmp_sock,
                 append=tuple(args.append),
                 qemu_args=l2mod.guest_disks(guest).qemu_args if l2 else ()).launch() as m:
        say(f"booting {k.spec} ({k.release}) on {profile.name}; logs in {work}")
        info = m.wait_ready()
        key = work / "id_ecdsa"
        m.keys.key.write_private_key_file(str(key))
        say(f"shell after {info.wall_s:.1f}s (guest uptime {info.guest_uptime_s:.1f}s)")
        say(f"QMP:  {qmp_sock}   (e.g. qmp-shell {qmp_sock})")
        say(f"ssh:  ssh -i {key} -p {m.ssh_port} -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null root@127.0.0.1")
        if l2:
            say(f"L2:   the guest kernel ({guest.release}) is /dev/vda, its modules /dev/vdb; "
                "in the shell: cd /opt/guestpm && python3 -m harness.guest.vmm --kernel "
                "/dev/vda --initrd-extra /dev/vdb --progress --suspend honour --append "
                "'guestpm.suspend=1 guestpm.mem_sleep=deep'")
        say("console attached below; Ctrl-] quits and stops the guest")
        _attach(m)
    return 0


def cmd_build(args) -> int:
    profile = profiles.get(args.arch)
    roles = kconfig.roles(args.fragment, defaults=not args.no_default_fragments)
    b = build.build(Path(args.tree), profile.arch, roles, base=args.base, jobs=args.jobs,
                    cross_compile=args.cross_compile, use_ccache=not args.no_ccache,
                    nice=args.nice, say=say)
    say(f"image:   {b.image}")
    if b.modules:
        say(f"modules: {b.modules}")
    print(f"build:{b.dir}")
    say(f"use it:  guestpm run --kernel build:{b.dir} --arch {args.arch}   "
        f"(or --kernel build:{b.meta['tree']})")
    return 0


def cmd_bisect(args) -> int:
    from harness.kernel import bisect
    return bisect.main(args, say)


def _attach(m: Machine) -> None:
    """Bridge the terminal to the guest console until Ctrl-] or QEMU exits."""
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            try:
                sys.stdout.write(m.console.spawn.read_nonblocking(65536, timeout=0.2))
                sys.stdout.flush()
            except Exception as e:
                if type(e).__name__ == "EOF":
                    stop.set()
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    m.console.write(b"\n")
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd) if os.isatty(fd) else None
    try:
        if old:
            tty.setraw(fd)
        while not stop.is_set() and m.alive():
            data = os.read(fd, 1024)
            if not data or b"\x1d" in data:
                break
            m.console.write(data.replace(b"\r", b"\n") if not old else data)
    finally:
        stop.set()
        if old:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
        print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guestpm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def targets_opts(p, required=False):
        p.add_argument("--kernel", action="append", default=[], required=required,
                       help=f"{', '.join(kernels.DEFAULT_KERNELS)}, path:IMAGE[,modules=DIR] or "
                            "build:DIR|TREE (repeatable)")
        p.add_argument("--arch", action="append", default=[], required=required,
                       help=f"{', '.join(profiles.PROFILES)} (repeatable)")

    p = sub.add_parser("setup", help="install host packages, fetch kernels, build initramfs")
    targets_opts(p)
    p.add_argument("--build-tools", action="store_true",
                   help="also install what `guestpm build` needs (compilers, flex, bison, ...)")
    p = sub.add_parser("run", help="run the suite on the matrix; KTAP + JUnit in --results")
    targets_opts(p)
    p.add_argument("--results", default="results")
    p.add_argument("-j", "--jobs", type=int, default=0, help="parallel targets (default: cores)")
    p.add_argument("--setup", action="store_true",
                   help="first do `guestpm setup` for exactly these targets")
    p.add_argument("--self-test", action="store_true",
                   help="also run guestpm's own self-tests (harness failure paths; build and "
                        "bisect where the build tools are installed)")
    p.add_argument("--guest-kernel", action="append", default=[], metavar="SPEC",
                   help="an L2 guest kernel of the reference-VMM tests, repeatable: host x "
                        "guest cells (default: the kernel under test as its own guest)")
    p.add_argument("--splats", choices=("fail", "warn"), default="fail",
                   help="a kernel splat (WARNING, lockdep, KASAN, UBSAN, hung task, ...) "
                        "fails the test during which it is printed (fail, the default), or "
                        "is only counted in the summary (warn: bisecting something else on "
                        "a noisy kernel)")
    p.set_defaults(build_tools=False)
    p.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    p = sub.add_parser("boot", help="boot one kernel and attach to its console")
    p.add_argument("--kernel", required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--append", action="append", default=[], help="extra kernel parameter")
    p.add_argument("--l2", action="store_true",
                   help="arm64: attach the L2 guest kernel for the reference VMM as /dev/vda")
    p.add_argument("--guest-kernel", metavar="SPEC", help="with --l2: the L2 kernel "
                   "(default: the booted one)")

    def build_opts(p):
        p.add_argument("--tree", required=True, help="your kernel source tree")
        p.add_argument("--arch", default="arm64", help=f"{', '.join(profiles.PROFILES)}")
        p.add_argument("--fragment", action="append", default=[],
                       help=f"a role ({', '.join(kconfig.ROLES)}) or a fragment file, merged "
                            f"after the defaults ({', '.join(kconfig.DEFAULT_ROLES)})")
        p.add_argument("--no-default-fragments", action="store_true",
                       help="merge only the --fragment ones")
        p.add_argument("--base", default="allnoconfig", choices=build.BASES)
        p.add_argument("-j", "--jobs", type=int, default=0, help="make -j (default: cores)")
        p.add_argument("--cross-compile", default=None,
                       help="CROSS_COMPILE prefix (default: Debian's for the arch)")
        p.add_argument("--no-ccache", action="store_true", help="do not use ccache if present")
        p.add_argument("--nice", type=int, default=0, help="run make at this niceness")

    p = sub.add_parser("build", help="build your kernel tree from the fragments in kernel-configs/")
    build_opts(p)
    p = sub.add_parser("bisect", help="git bisect run: build, boot and run tests at each step")
    build_opts(p)
    p.add_argument("--good", required=True, help="a revision where the tests PASS")
    p.add_argument("--bad", required=True, help="a revision where they FAIL")
    p.add_argument("--logs", default=None, help="per-step logs (default: results/bisect-<time>)")
    p.add_argument("--trust-ends", action="store_true",
                   help="do not check that --good passes and --bad fails before bisecting")
    p.add_argument("selector", nargs="+", help="after --: pytest arguments selecting the tests")

    args = parser.parse_args(argv)
    install_signal_handlers()
    try:
        if args.command == "boot":
            return cmd_boot(args)
        return {"setup": cmd_setup, "run": cmd_run, "build": cmd_build,
                "bisect": cmd_bisect}[args.command](args)
    except GuestpmError as e:
        print(f"guestpm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("guestpm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
