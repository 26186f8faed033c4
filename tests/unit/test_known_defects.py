"""The xfails' symptoms against recorded text: each matches its defect and only it."""

from pathlib import Path

import pytest

from harness.plugin import known_defects

GOLDEN = Path(__file__).parent / "golden" / "oops"


def _trans_pgd():
    return known_defects.TRANS_PGD_RESTORE.symptom


def _recorded() -> str:
    """The oops lines docs/known-defects.md recorded, as the console prints them (with
    printk timestamps)."""
    lines = (GOLDEN / "trans_pgd-6.12-arm64.txt").read_text().splitlines()
    return "".join(f"[   14.{530000 + i:06d}] {ln}\n" for i, ln in enumerate(lines))


def test_trans_pgd_symptom_matches_the_recorded_oops():
    assert _trans_pgd().search(_recorded())
    assert _trans_pgd().search((GOLDEN / "trans_pgd-6.12-arm64.txt").read_text())


@pytest.mark.parametrize("change", [
    ("pc : trans_pgd_create_copy", "pc : swsusp_arch_resume"),     # named only in a trace
    ("52-bit VAs", "48-bit VAs"),                                  # another page table
    ("Unable to handle kernel paging request", "Unable to handle kernel NULL pointer"),
])
def test_trans_pgd_symptom_is_not_wider_than_the_defect(change):
    text = _recorded().replace(*change)
    text += "[   14.6] Call trace:\n[   14.6]  trans_pgd_create_copy+0x1f8/0x790\n"
    assert not _trans_pgd().search(text)


@pytest.mark.parametrize("line,symptom", [
    ("[    0.012] CPU topo: Allowing 2 present CPUs plus 0 hotplug CPUs", True),
    ("[    0.012] smpboot: Allowing 3 CPUs, 0 hotplug CPUs", True),
    ("[    0.012] smpboot: Allowing 3 CPUs, 1 hotplug CPUs", False),
    ("[    0.012] CPU topo: Allowing 2 present CPUs plus 1 hotplug CPUs", False),
])
def test_cpu_hotplug_symptom_is_the_boot_line(line, symptom):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "e2e_acpi_events", Path(__file__).parents[1] / "e2e" / "test_acpi_events.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert bool(mod.NO_HOTPLUG_SLOTS.search(line)) is symptom


def _e2e(name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        f"e2e_{name}", Path(__file__).parents[1] / "e2e" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("defect,record,near_misses", [
    # debian:bullseye x86_64 (5.10.223), S3 on q35
    ("VIRTIO_NET_FROZEN_XMIT", "virtio-net-s3-5.10-amd64.txt",
     [("addrconf_dad_work", "other_work"), ("start_xmit+", "virtnet_poll+")]),
    # debian:6.1 x86_64 (6.1.176), S3 on pc: the same race as a NULL dereference in
    # virtqueue_get_buf
    ("VIRTIO_NET_FROZEN_XMIT", "virtio-net-s3-6.1-amd64.txt",
     [("addrconf_dad_work", "other_work"), ("[virtio_ring]", "[other]"),
      ("NULL pointer dereference", "something else")]),
    # debian:6.12 x86_64 (6.12.117), S3 on pc (CI, stop 38): a GPF in
    # virtqueue_add_split, which 6.12 builds in (no module suffix)
    ("VIRTIO_NET_FROZEN_XMIT", "virtio-net-s3-6.12-amd64.txt",
     [("addrconf_dad_work", "other_work"), ("start_xmit+", "virtnet_poll+"),
      (" start_xmit+", " other_xmit+"),       # dev_hard_start_xmit is not start_xmit
      ("virtqueue_add_split+0x576/0x7b0\n", "virtqueue_add_split+0x576/0x7b0 [other]\n"),
      ("start_xmit+0x2ab/0x7a0 [virtio_net]", "start_xmit+0x2ab/0x7a0 [other]")]),
    # debian:6.1 x86_64 (6.1.176), S3 on pc, second cycle: a write fault in the
    # allocator's memset under virtnet_restore
    ("VIRTIO_NET_RESTORE_SLAB", "virtio-net-restore-6.1-amd64.txt",
     [("virtnet_restore+", "virtnet_probe+"),
      ("supervisor write access", "supervisor read access"),
      ("RIP: 0010:memset_erms", "RIP: 0010:virtqueue_add")]),
    # debian:7.2 x86_64 as an L2 guest of the reference VMM, 2 vCPUs, `nolapic_timer`
    # (stop 40): where each vCPU stood when the VMM's bound ended the run, named with the
    # L1 host's kallsyms; the tick's frames twice on vCPU 0's stack
    ("X86_L2_IRQ_IN_IRQ", "x86-l2-irq-in-irq-7.2-amd64.txt",
     [("update_wall_time+0x17\n    tick_periodic+0x71\n    tick_handle_periodic+0x2b\n"
       "    init_thread_union+0x3da8\n    __sysvec_apic_timer_interrupt+0x58",
       "update_wall_time+0x17\n    other+0x71\n    other+0x2b\n"
       "    init_thread_union+0x3da8\n    other+0x58"),
      ("vCPU 0 (HALTED) at", "vCPU 0 (HALTED) was at")]),
    # the same, 1 vCPU on the PIT tick (`--tick pit`): the PIT's edge IRQ inside itself;
    # handle_edge_irq+0x0 is a function pointer on the stack, not a second frame
    ("X86_L2_IRQ_IN_IRQ", "x86-l2-irq-in-irq-pit-7.2-amd64.txt",
     [("    handle_edge_irq+0xb8\n    handle_edge_irq+0x0\n    __common_interrupt+0x50\n",
       "    other+0xb8\n    handle_edge_irq+0x0\n    other+0x50\n")]),
])
def test_a_symptom_matches_its_recorded_oops_and_no_near_miss(defect, record, near_misses):
    symptom = getattr(known_defects, defect).symptom
    text = (GOLDEN / record).read_text()
    assert symptom.search(text)
    for change in near_misses:
        assert not symptom.search(text.replace(*change)), change
    own = {"VIRTIO_NET_FROZEN_XMIT": "virtio-net-s3-", "VIRTIO_NET_RESTORE_SLAB":
           "virtio-net-restore-", "TRANS_PGD_RESTORE": "trans_pgd-",
           "X86_L2_IRQ_IN_IRQ": "x86-l2-irq-in-irq-"}[defect]
    for other in GOLDEN.glob("*.txt"):      # and no other defect's record
        assert other.name.startswith(own) or not symptom.search(other.read_text()), other


def test_virtio_net_restore_is_not_matched_after_the_oops_trace_ended():
    symptom = known_defects.VIRTIO_NET_RESTORE_SLAB.symptom
    text = (GOLDEN / "virtio-net-restore-6.1-amd64.txt").read_text()
    ended = text.replace("  virtnet_restore+", "  other_fn+") + \
        "[   12.0] ---[ end trace 0000000000000000 ]---\n" \
        "[   12.1]  virtnet_restore+0x38/0x170 [virtio_net]\n"
    assert not symptom.search(ended)


class _M:
    def __init__(self, arch):
        self.profile = type("P", (), {"arch": arch})()
        self.console_log = Path("/nonexistent/console.log")


def test_xfail_on_names_only_a_matching_crash_on_its_arch():
    from harness.errors import GuestPanic
    text = (GOLDEN / "virtio-net-s3-6.1-amd64.txt").read_text()
    with pytest.raises(pytest.xfail.Exception, match="virtio-net.*console.log"):
        with known_defects.xfail_on(_M("x86_64"), known_defects.VIRTIO_NET_FROZEN_XMIT):
            raise GuestPanic(text)
    with pytest.raises(GuestPanic):          # the same text on another arch is no match
        with known_defects.xfail_on(_M("arm64"), known_defects.VIRTIO_NET_FROZEN_XMIT):
            raise GuestPanic(text)
    with pytest.raises(GuestPanic):          # another crash stays a FAIL
        with known_defects.xfail_on(_M("x86_64"), known_defects.VIRTIO_NET_FROZEN_XMIT,
                                    known_defects.TRANS_PGD_RESTORE):
            raise GuestPanic(text.replace("addrconf_dad_work", "other_work"))


def test_xfail_on_reads_a_deep_trace_past_the_excerpt_from_the_console(tmp_path):
    """The GuestPanic quotes 40 lines; virtnet_restore is the 42nd of that oops."""
    from harness.errors import GuestPanic
    from harness.vm.console import CONTEXT_LINES
    oops = (GOLDEN / "virtio-net-restore-6.1-amd64.txt").read_text().splitlines()
    log = tmp_path / "console.log"
    log.write_text("[    1.0] booting\n" + "\n".join(oops) + "\n")
    m = _M("x86_64")
    m.console_log = log
    excerpt = "the guest kernel crashed (console log …):\n" + "\n".join(oops[:CONTEXT_LINES])
    assert not known_defects.VIRTIO_NET_RESTORE_SLAB.matches(excerpt, "x86_64")
    with pytest.raises(pytest.xfail.Exception, match="corrupted slab|restore allocates"):
        with known_defects.xfail_on(m, known_defects.VIRTIO_NET_FROZEN_XMIT,
                                    known_defects.VIRTIO_NET_RESTORE_SLAB):
            raise GuestPanic(excerpt)
    m.console_log = tmp_path / "missing.log"          # no log: the excerpt alone decides
    with pytest.raises(GuestPanic):
        with known_defects.xfail_on(m, known_defects.VIRTIO_NET_RESTORE_SLAB):
            raise GuestPanic(excerpt)


def test_the_l1_vcpu_hang_is_the_unanswered_nmi_of_the_cpu_the_watchdog_named():
    """The debian:7.2 arm64 L1 host in VHE: its console while its reference VMM ran
    the first L2 guest (docs/known-defects.md)."""
    text = (GOLDEN / "l1-vcpu-hang-7.2-arm64.txt").read_text()
    d = known_defects.L1_VCPU_HANG
    assert d.matches(text, "arm64") and not d.matches(text, "x86_64")
    assert not d.matches(text.replace("haven't responded to the NMI: 1",
                                      "haven't responded to the NMI: 0"), "arm64")
    first = text.split("After 10 seconds")[0]            # the report, before its answer
    assert not d.matches(first, "arm64")
    for other in GOLDEN.glob("*.txt"):
        assert other.name.startswith("l1-vcpu-hang") or not d.symptom.search(other.read_text())


def test_an_xfail_on_a_known_defect_explains_only_the_splats_of_its_symptom():
    reason = f"known kernel defect: {known_defects.L1_VCPU_HANG.summary} (docs/...)"
    assert known_defects.explained_splats(reason) == {"hard-lockup", "rcu-stall"}
    other = f"known kernel defect: {known_defects.VIRTIO_NET_FROZEN_XMIT.summary} (docs/...)"
    assert known_defects.explained_splats(other) == set()
    assert known_defects.explained_splats("some other reason") == set()


# ---------------------------------------------------------------- where a defect was seen

class _K:
    def __init__(self, release, stock=True):
        self.release = release
        self.debian = ("sid", "x") if stock else None


def _on(arch, release, stock=True):
    m = _M(arch)
    m.kernel = _K(release, stock)
    return m


def _crash(m, text, *defects, **kw):
    from harness.errors import GuestPanic
    with known_defects.xfail_on(m, *defects, **kw):
        raise GuestPanic(text)


def test_trans_pgd_is_excused_only_on_the_releases_that_carry_it():
    """docs/known-defects.md: seen on 6.12, fixed by 7.2.  The same oops from a 7.2
    kernel is a regression: a FAIL naming the defect as a possible cause."""
    text = _recorded()
    with pytest.raises(pytest.xfail.Exception, match="trans_pgd_create_copy"):
        _crash(_on("arm64", "6.12.117+deb13-arm64"), text, known_defects.TRANS_PGD_RESTORE)
    for release in ("7.2.13+deb14-arm64", "6.1.0-50-arm64", None):
        with pytest.raises(pytest.fail.Exception, match="possible cause, but not excused"):
            _crash(_on("arm64", release), text, known_defects.TRANS_PGD_RESTORE)


L1_HANG = (GOLDEN / "l1-vcpu-hang-7.2-arm64.txt").read_text()


@pytest.mark.parametrize("release,stock,mode,verdict", [
    ("7.2.13+deb14-arm64", True, "vhe", "xfail"),
    ("7.2.13+deb14-arm64", False, "vhe", "your own kernel"),     # build:/path: of 7.2
    ("7.2.13+deb14-arm64", True, "nvhe", "vhe mode only"),
    ("6.12.117+deb13-arm64", True, "vhe", "seen from 7.2 on"),
])
def test_the_l1_vcpu_hang_is_excused_only_where_it_was_seen(release, stock, mode, verdict):
    """The watch the L2 tests run on the L1 console (tests/e2e/conftest.py)."""
    def watch():
        known_defects.xfail_if_seen(L1_HANG, "arm64", "L1 console", known_defects.L1_VCPU_HANG,
                                    release=release, mode=mode, stock=stock)
    if verdict == "xfail":
        with pytest.raises(pytest.xfail.Exception, match=r"\(hung CPU 1\)"):
            watch()
    else:
        with pytest.raises(pytest.fail.Exception) as e:
            watch()
        assert "L1 vCPU hang while it runs an L2 guest" in str(e.value) and \
            "possible cause" in str(e.value) and verdict in str(e.value), e.value


def test_the_l1_vcpu_hang_excuses_only_the_hung_cpus_reports():
    from harness.vm.splats import scan
    reason = (f"known kernel defect: {known_defects.L1_VCPU_HANG.summary} (hung CPU 1) "
              "(docs/known-defects.md; L1 console)")
    found = scan(L1_HANG, "console", "console.log")
    assert {s.kind for s in found} >= {"hard-lockup", "rcu-stall"}
    assert all(known_defects.explains(reason, s) for s in found
               if s.kind in ("hard-lockup", "rcu-stall")), [s.title for s in found]
    other = scan(L1_HANG.replace("LOCKUP on cpu 1", "LOCKUP on cpu 0")
                 .replace("rcu: \t1-...!", "rcu: \t0-...!"), "console", "console.log")
    assert not any(known_defects.explains(reason, s) for s in other), \
        [s.title for s in other if known_defects.explains(reason, s)]
    assert not any(known_defects.explains(reason.replace(" (hung CPU 1)", ""), s)
                   for s in found)


KVM_LOAD_DEBUG = (GOLDEN / "l1-kvm-load-debug-7.2-arm64.txt").read_text()


@pytest.mark.parametrize("release,stock,mode,verdict", [
    ("7.2.13+deb14-arm64", True, "vhe", "xfail"),
    ("7.2.13+deb14-arm64", False, "vhe", "your own kernel"),     # build:/path: of 7.2
    ("7.2.13+deb14-arm64", True, "nvhe", "vhe mode only"),
    ("6.12.117+deb13-arm64", True, "vhe", "seen from 7.2 on"),
])
def test_the_kvm_bug_in_load_debug_is_excused_only_where_it_was_seen(release, stock, mode,
                                                                      verdict):
    """The debian:7.2 arm64 L1 host in VHE, its console when the ssh link to it went
    during an L2 hibernation run (docs/known-defects.md)."""
    def watch():
        known_defects.xfail_if_seen(KVM_LOAD_DEBUG, "arm64", "L1 console",
                                    *known_defects.L1_HOST_DEFECTS,
                                    release=release, mode=mode, stock=stock)
    if verdict == "xfail":
        with pytest.raises(pytest.xfail.Exception, match="kvm_vcpu_load_debug"):
            watch()
    else:
        with pytest.raises(pytest.fail.Exception) as e:
            watch()
        assert "KVM_BUG_ON in kvm_vcpu_load_debug" in str(e.value) and \
            "possible cause" in str(e.value) and verdict in str(e.value), e.value
    assert not known_defects.L1_KVM_LOAD_DEBUG_BUG.matches(KVM_LOAD_DEBUG, "arm64", "kvm")


def test_the_kvm_bug_in_load_debug_excuses_only_its_own_warning():
    from harness.vm.splats import scan
    reason = (f"known kernel defect: {known_defects.L1_KVM_LOAD_DEBUG_BUG.summary} "
              "(docs/known-defects.md; L1 console)")
    (found,) = scan(KVM_LOAD_DEBUG, "console", "console.log")
    assert found.kind == "warning" and known_defects.explains(reason, found)
    other = scan(KVM_LOAD_DEBUG.replace("kvm_vcpu_load_debug", "kvm_arch_vcpu_put"),
                 "console", "console.log")
    assert other and not any(known_defects.explains(reason, s) for s in other)
