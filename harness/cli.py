"""guestpm: tests for Linux patches that carry guest power management across the
KVM boundary (arm64 PSCI SYSTEM_SUSPEND / SYSTEM_OFF2, x86 s2idle, S3, hibernation,
ACPI events, vfio low power), on the kernels you choose, under QEMU.

  guestpm run   [--kernel K]... [--arch A]...    judge kernels: PASS / SKIP / FAIL per
                                                 kernel x arch, summary in results/
  guestpm boot  --kernel K --arch A              a shell in a guest, with QMP and ssh
  guestpm build --tree DIR --arch A              your tree -> a kernel (--kernel build:DIR)
  guestpm bisect --tree DIR --good R --bad R -- TESTS   the commit that changed a verdict
  guestpm compare BASE PATCHED [--confirm N]     what a patch changed: two runs (results
                                                 directories) or two kernels, side by side
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
import sys
import tempfile
from pathlib import Path

from harness import profiles
from harness.errors import GuestpmError, SetupError
from harness.host_packages import (
    install_build_packages,
    install_host_packages,
    qemu_dir,
)
from harness.image import rootfs
from harness.kernel import build, kconfig, kernels
from harness.plan import options, targets
from harness.progress import progress
from harness.signals import install_signal_handlers
from harness.vm import cmdline, terminal
from harness.vm import l2 as l2mod
from harness.vm.machine import Machine

ROOT = Path(__file__).resolve().parent.parent


def _targets(args, host: bool = False) -> list[tuple[str, profiles.Profile]]:
    """The kernel x arch targets, each checked as far as it can be without the network
    (spec, image, arch; with `host`, QEMU and firmware too); GuestpmError (one line,
    exit 2) before anything boots."""
    ts = targets.expand(args.kernel, args.arch)
    targets.check(ts, host)
    return [(t.kernel, profiles.get(t.arch)) for t in ts]


def use_qemu(args) -> None:
    """--qemu: fetch debian:SUITE's QEMU if asked, and run it from here on."""
    if getattr(args, "qemu", None):
        cmdline.use_qemu(qemu_dir(args.qemu))
        progress(cmdline.describe_qemus([profiles.get(a) for a in args.arch or
                                         profiles.DEFAULT_ARCHES]))


def cmd_setup(args) -> int:
    chosen = _targets(args)
    install_host_packages(list({p.name: p for _, p in chosen}.values()))
    use_qemu(args)
    if args.build_tools:
        install_build_packages(sorted({p.arch for _, p in chosen}))
    for spec, profile in chosen:
        k = kernels.resolve(spec, profile, progress)
        path = rootfs.initramfs(k, profile, progress)
        progress(f"ready: {spec} {profile.name}: {k.release} ({k.image}), initramfs {path.name}")
    return 0


def tests_of(pytest_args: list[str], default: Path) -> list[str]:
    """What a run collects: `default` (tests/e2e), unless the pytest arguments name
    tests themselves (a file or directory, with or without ::id), which pytest would
    otherwise collect beside it."""
    named = any(not a.startswith("-") and Path(a.split("::")[0]).exists()
                for a in pytest_args)
    return [] if named else [str(default)]


def cmd_run(args) -> int:
    import pytest
    if args.setup:
        cmd_setup(args)
    tests = ROOT / "tests" / "e2e"
    if not tests.is_dir():
        raise SetupError(f"no tests at {tests}: guestpm run works from a source checkout")
    use_qemu(args)
    _targets(args, host=True)
    argv = [*tests_of(args.pytest_args, tests), "-p", "no:cacheprovider", "-q", "-rfE",
            *options.pytest_argv(args)]
    # a target's tests are several work units (harness/plugin/units.py): one target
    # can keep several workers busy
    workers = args.jobs or os.cpu_count() or 1
    if workers > 1:
        argv += ["-n", str(workers), "--dist", "loadgroup"]
    return pytest.main(argv + args.pytest_args)


def cmd_boot(args) -> int:
    use_qemu(args)
    profile = profiles.get(args.arch)
    k = kernels.resolve(args.kernel, profile, progress)
    initrd = rootfs.initramfs(k, profile, progress)
    work = Path(tempfile.mkdtemp(prefix="guestpm-boot-"))
    qmp_sock = str(work / "qmp.sock")
    l2 = args.l2 and profile.arch == "arm64"
    if args.l2 and not l2:
        raise SetupError("--l2: the reference VMM runs arm64 guests only")
    guest = kernels.resolve(args.guest_kernel, profile, progress) if args.guest_kernel else k
    with Machine(profile, k, initrd, work, extra_qmp_socket=qmp_sock,
                 append=tuple(args.append),
                 qemu_args=l2mod.guest_disks(guest).qemu_args if l2 else ()).launch() as m:
        progress(f"booting {k.spec} ({k.release}) on {profile.name}; logs in {work}")
        info = m.wait_ready()
        key = work / "id_ecdsa"
        m.keys.key.write_private_key_file(str(key))
        progress(f"shell after {info.wall_s:.1f}s (guest uptime {info.guest_uptime_s:.1f}s)")
        progress(f"QMP:  {qmp_sock}   (e.g. qmp-shell {qmp_sock})")
        progress(f"ssh:  ssh -i {key} -p {m.ssh_port} -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null root@127.0.0.1")
        if l2:
            progress(f"L2:   the guest kernel ({guest.release}) is /dev/vda, its modules /dev/vdb; "
                "in the shell: cd /opt/guestpm && python3 -m harness.guest.vmm --kernel "
                "/dev/vda --initrd-extra /dev/vdb --progress --suspend honour --append "
                "'guestpm.suspend=1 guestpm.mem_sleep=deep'")
        progress("console attached below; Ctrl-] quits and stops the guest")
        terminal.attach(m)
    return 0


def cmd_build(args) -> int:
    profile = profiles.get(args.arch)
    roles = kconfig.roles(args.fragment, defaults=not args.no_default_fragments)
    b = build.build(Path(args.tree), profile.arch, roles, base=args.base, jobs=args.jobs,
                    cross_compile=args.cross_compile, use_ccache=not args.no_ccache,
                    nice=args.nice, say=progress)
    progress(f"image:   {b.image}")
    if b.modules:
        progress(f"modules: {b.modules}")
    print(f"build:{b.dir}")
    progress(f"use it:  guestpm run --kernel build:{b.dir} --arch {args.arch}   "
        f"(or --kernel build:{b.meta['tree']})")
    return 0


def cmd_bisect(args) -> int:
    from harness.kernel import bisect
    return bisect.main(bisect.Request(
        tree=Path(args.tree), arch=args.arch, good=args.good, bad=args.bad,
        selector=list(args.selector), change=tuple(args.change) if args.change else None,
        fragments=list(args.fragment), default_fragments=not args.no_default_fragments,
        base=args.base, jobs=args.jobs, cross_compile=args.cross_compile,
        ccache=not args.no_ccache, nice=args.nice,
        logs=Path(args.logs) if args.logs else None, trust_ends=args.trust_ends), progress)


def _side(arg: str):
    """A results directory (a run's, or a parent whose `latest` is used), SPEC@DIR (the
    verdicts of one kernel of that run) or a kernel spec."""
    from harness.results import compare, runs, verdicts
    spec, at, where = arg.rpartition("@")
    if at and spec and Path(where).expanduser().exists():
        rec = verdicts.read(runs.resolve(Path(where).expanduser()))
        if spec not in rec.kernels():
            raise compare.CompareError(f"{arg}: that run judged {', '.join(rec.kernels())}, "
                                       f"not {spec}")
        return verdicts.Record(rec.header, [v for v in rec.verdicts if v.kernel == spec],
                               rec.path)
    path = Path(arg).expanduser()
    if path.exists():
        return runs.resolve(path)
    try:
        kernels.parse_spec(arg)
    except GuestpmError as e:
        raise compare.CompareError(f"{arg}: neither a results directory nor a kernel spec "
                                   f"({e})") from None
    return arg


def _record(side):
    from harness.results import verdicts
    return side if isinstance(side, verdicts.Record) else verdicts.read(side)


def cmd_compare(args) -> int:
    import time

    from harness.results import compare, rerun, verdicts
    t0 = time.monotonic()
    parent = Path(args.results)
    base, patched = _side(args.base), _side(args.patched)
    if args.confirm < 0:
        raise compare.CompareError(f"--confirm {args.confirm}: a number of re-runs, >= 1")
    specs = [s for s in (base, patched) if isinstance(s, str)]
    if isinstance(base, verdicts.Record) and isinstance(patched, verdicts.Record) and \
            base.kernels() == patched.kernels() and base.path == patched.path:
        raise compare.CompareError(f"{args.base} against itself: nothing to compare")
    if len(specs) == 2 and base == patched:
        raise compare.CompareError(f"{base} against itself: run it twice (guestpm run) and "
                                   "compare the two results directories")
    if specs:
        given = [r for r in (base, patched) if not isinstance(r, str)]
        old = _record(given[0]) if given else None
        arches = args.arch or (list(dict.fromkeys(v.profile for v in old.verdicts if v.kernel))
                               if old else [])
        selection = args.pytest_args or (sorted({v.file for v in old.verdicts if v.kernel})
                                         if old else [])
        targets.check(targets.expand(specs, arches), host=True)   # bad input: before booting
        rec = rerun.run_kernels(specs, arches, selection, parent, args.jobs)
        if len(specs) == 2:
            base, patched = rerun.split(rec, base), rerun.split(rec, patched)
        elif isinstance(base, str):
            base, patched = rerun.split(rec, base), _record(patched)
        else:
            base, patched = _record(base), rerun.split(rec, patched)
    else:
        base, patched = _record(base), _record(patched)
    # paths after -- select the recorded sides' tests too (their files)
    files = [a.split("::")[0].rstrip("/") for a in args.pytest_args if not a.startswith("-")]
    if files:
        base, patched = (verdicts.Record(r.header, [v for v in r.verdicts if any(
            v.file == f or v.file.startswith(f + "/") for f in files)], r.path)
            for r in (base, patched))
    cmp = compare.compare(base, patched, args.arch or None, args.base, args.patched)
    if args.confirm:
        compare.confirm(cmp, rerun.Rerunner(parent, args.jobs, check=lambda specs, arches:
                                            targets.check(targets.expand(specs, arches))),
                        args.confirm)
    text = compare.markdown(cmp, parent.resolve(), time.monotonic() - t0)
    parent.mkdir(parents=True, exist_ok=True)
    (parent / "compare.md").write_text(text)
    print(text, end="")
    progress(f"written to {parent / 'compare.md'}")
    return cmp.exit_status()


def _add_setup(sub) -> None:
    p = sub.add_parser("setup", help="install host packages, fetch kernels, build initramfs")
    options.add(p, options.TARGETS)
    p.add_argument("--build-tools", action="store_true",
                   help="also install what `guestpm build` needs (compilers, flex, bison, ...)")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run the suite on the matrix; verdicts, KTAP, JUnit in "
                                   "--results/RUN (--results/latest: the newest)")
    options.add(p)          # the run's options, which pytest takes too
    p.add_argument("-j", "--jobs", type=int, default=0, help="pytest-xdist workers (default: cores)")
    p.add_argument("--setup", action="store_true",
                   help="first do `guestpm setup` for exactly these targets")
    p.set_defaults(build_tools=False)
    p.add_argument("pytest_args", nargs="*", help="after --: passed to pytest; test files "
                   "or directories among them are run instead of tests/e2e")


def _add_boot(sub) -> None:
    p = sub.add_parser("boot", help="boot one kernel and attach to its console")
    p.add_argument("--kernel", required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--append", action="append", default=[], help="extra kernel parameter")
    p.add_argument("--l2", action="store_true",
                   help="arm64: attach the L2 guest kernel for the reference VMM as /dev/vda")
    p.add_argument("--guest-kernel", metavar="SPEC", help="with --l2: the L2 kernel "
                   "(default: the booted one)")
    options.add(p, ("--qemu",))


def _add_build(sub, name: str, what: str):
    p = sub.add_parser(name, help=what)
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
    return p


def _add_bisect(sub) -> None:
    p = _add_build(sub, "bisect", "git bisect run: build, boot and run tests at each step")
    p.add_argument("--good", required=True, help="a revision where the tests PASS")
    p.add_argument("--bad", required=True, help="a revision where they FAIL")
    p.add_argument("--logs", default=None, help="per-step logs (default: results/bisect-<time>)")
    p.add_argument("--trust-ends", action="store_true",
                   help="do not check that --good passes and --bad fails before bisecting")
    p.add_argument("--change", nargs=3, metavar=("TEST", "BASE", "PATCHED"),
                   help="the test is one row of `guestpm compare`: good where TEST (its id "
                        "without the target) is BASE, bad where it is PATCHED (e.g. PASS FAIL)")
    p.add_argument("selector", nargs="*", help="after --: pytest arguments selecting the tests "
                   "(with --change: default TEST's function)")


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="what a patch changed: verdicts of two runs or two "
                                       "kernels, grouped (exit 1 on a regression)")
    p.add_argument("base", help="a results directory (a run's, or one whose `latest` is "
                                "used), SPEC@DIR (one kernel of that run) or a kernel spec")
    p.add_argument("patched", help="the same, for the patched side; two specs run both "
                                   "kernels in one run")
    p.add_argument("--arch", action="append", default=[],
                   help="profiles to run (specs) or to compare (default: the defaults, or "
                        "those of the results directory)")
    p.add_argument("--results", default="results",
                   help="where runs go and compare.md is written (default: ./results)")
    p.add_argument("--confirm", type=int, default=0, metavar="N",
                   help="re-run every changed verdict N times on both kernels: confirmed "
                        "when it holds every time, else flaky (listed apart, exit status 0)")
    p.add_argument("-j", "--jobs", type=int, default=0, help="parallel targets (default: cores)")
    p.add_argument("pytest_args", nargs="*", help="after --: pytest arguments selecting the "
                   "tests to run (default: tests/e2e, or the results directory's test files)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="guestpm", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    _add_setup(sub)
    _add_run(sub)
    _add_boot(sub)
    _add_build(sub, "build", "build your kernel tree from the fragments in kernel-configs/")
    _add_bisect(sub)
    _add_compare(sub)
    return top


COMMANDS = {"setup": cmd_setup, "run": cmd_run, "boot": cmd_boot, "build": cmd_build,
            "bisect": cmd_bisect, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = None
    if argv[:1] == ["compare"] and "--" in argv:
        # argparse binds `pytest_args` right after the two sides, so options between
        # them and `--` would leave what follows `--` unparsed
        rest, argv = argv[argv.index("--") + 1:], argv[:argv.index("--")]
    args = parser().parse_args(argv)
    if rest is not None:
        args.pytest_args = args.pytest_args + rest
    install_signal_handlers()
    try:
        return COMMANDS[args.command](args)
    except GuestpmError as e:
        print(f"guestpm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("guestpm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
