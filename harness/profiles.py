"""Per-architecture machine profiles: data, not code (like kunit's qemu_configs/).

A profile says which QEMU to run and how, what the kernel's console is called,
which kernel modules the guest needs when they are not built in, and how the
kernel under test proves that KVM works inside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from harness.errors import GuestpmError


@dataclass(frozen=True)
class KbuildArch:
    """How Kbuild spells an architecture, and which Debian cross compiler builds it."""
    arch: str                    # ARCH=
    srcarch: str                 # arch/<srcarch>
    image: str                   # path of the bootable image in O=
    target: str                  # make target that builds it
    host_machine: str            # uname -m of a host that builds it natively
    cross_prefix: str
    cross_package: str
    host_libs: tuple[tuple[str, str], ...] = ()   # (header, Debian package) objtool etc. need


@dataclass(frozen=True)
class Profile:
    name: str                 # what --arch takes
    arch: str                 # kernel architecture (uname -m spelling: x86_64, aarch64 -> arm64)
    deb_arch: str             # Debian architecture
    qemu_binary: str
    qemu_package: str         # Debian package that ships qemu_binary
    machine: str
    cpu: str
    memory_mb: int
    console: str              # kernel console device
    image_format: str         # what harness.kernel.kernels.identify_image must report
    accel: str = "tcg,thread=multi"
    smp: int = 2
    globals: tuple[str, ...] = ()
    nic: str = "virtio-net-pci"
    # Loaded in this order when the kernel has them as modules (dependencies are
    # added automatically); a module that is built in is skipped.
    modules: tuple[str, ...] = ()
    # Kernel log lines (regexes) that show KVM came up in the kernel under test, and
    # the module that must be loaded for it (None: built in).
    kvm_evidence: tuple[str, ...] = ()
    kvm_module: str | None = None
    extra_append: tuple[str, ...] = field(default_factory=tuple)
    # An emulated IOMMU for vfio tests (QEMU arguments and kernel parameters): Debian's
    # kernels have no CONFIG_VFIO_NOIOMMU, so vfio-pci needs real IOMMU groups.
    # Empty: the machine cannot have one (i440fx).
    iommu_args: tuple[str, ...] = ()
    iommu_append: tuple[str, ...] = ()
    pcie_root_bus: str = "pcie.0"
    # ACPI companions of PCI devices (the vfio ACPI-notify stand-in cases): the path
    # QEMU's DSDT gives a device in a root-bus slot, as sysfs firmware_node/path spells
    # it ({devfn:02X}; QEMU 7.2 and 10 alike, and the e2e test reads it back), and the
    # QEMU arguments under which a root port's slots are not in the ACPI tables, so a
    # device hot-added behind it after boot has no companion on any QEMU (QEMU 8 and
    # later describe the devices a root port had at boot, 7.2 did not).  None:
    # root-bus devices have no companion (arm64 virt's DSDT lists none), and the cases
    # do not apply.
    acpi_pci_slot: str | None = None
    acpi_unlisted_bridge_args: tuple[str, ...] = ()
    # Firmware QEMU boots first (-bios), and the Debian package that ships it.  None:
    # QEMU loads the kernel itself (DT on arm64, QEMU's own ACPI tables on x86).
    firmware: str | None = None
    firmware_package: str | None = None
    # A console that shows no sign of the kernel this long after QEMU starts means the
    # kernel never ran: the boot fails then, not after the whole boot timeout.  The sign
    # is the console's first byte, or with firmware (which prints first) the kernel's
    # own first line.  Measured in docs/figures.md; the bound leaves room for a loaded host.
    silent_after_s: float = 60.0
    kernel_started: str | None = None     # regex; None: any console byte
    # Power management as the platform does it (tests read these, never the arch name).
    # The /proc/interrupts names of the console UART's and the RTC's interrupts, which
    # /sys/power/pm_wakeup_irq names after a wake (None: not a wake source here).
    serial_wake_irq: str = ""
    rtc_wake_irq: str | None = None
    # QMP events of `echo disk`, in order (ACPI S4 has its own request, PSCI only
    # SYSTEM_OFF), and what the restored kernel logs for the ACPI S4 wake (None: none).
    hibernate_events: tuple[str, ...] = ("SHUTDOWN",)
    s4_wake_line: str | None = None
    # s2idle through the ACPI LPS0 device (guestpm's SSDT and debug-port tap), woken by
    # the ACPI power button; False: the generic s2idle, woken by the console UART
    s2idle_lps0: bool = False
    kbuild: KbuildArch | None = None      # how to build a kernel for it (harness.kernel.build)
    # Whether the QEMU in use restores this profile's machines faithfully is measured
    # before the first restore (harness.vm.snapshot.probe_restores, once per QEMU
    # binary): arm64, whose VHE kernel runs on the EL2 generic timers, which QEMU 7.2's
    # migration stream does not carry (docs/known-defects.md).  False: every restore is
    # still checked (a sleep on every CPU) before a test gets the machine.
    probe_restores: bool = False
    # Under the host's KVM (--accel kvm): the CPU model, and what the host must have for
    # KVM to run nested in this profile's guest (said when `auto` falls back to TCG)
    kvm_cpu: str = "host"
    kvm_host_needs: str = ""
    kvm_min_qemu: tuple[int, int] = (0, 0)

    @property
    def accelerator(self) -> str:
        """tcg or kvm: what the summary names per target."""
        return self.accel.split(",")[0]


ACCELS = ("tcg", "kvm", "auto")
# TCG until a KVM run of the suite has been verified (the KVM path has not run in CI)
DEFAULT_ACCEL = "tcg"
# x86: the guest's KVM module follows the host CPU's vendor (/proc/cpuinfo vendor_id)
KVM_MODULE_OF_VENDOR = {"GenuineIntel": "kvm_intel", "AuthenticAMD": "kvm_amd"}
# what each module prints when nested virtualization is on (kvm_intel prints nothing)
KVM_NESTED_EVIDENCE = {"kvm_amd": (r"Nested Virtualization enabled",), "kvm_intel": ()}

_COMMON_MODULES = ("virtio_pci", "virtio_net", "virtio_blk")

X86_64_Q35 = Profile(
    name="x86_64",
    arch="x86_64",
    deb_arch="amd64",
    qemu_binary="qemu-system-x86_64",
    qemu_package="qemu-system-x86",
    machine="q35",
    cpu="max",          # TCG's max CPU is AMD-flavoured and emulates SVM: kvm_amd loads nested
    # Single-threaded TCG: with thread=multi, x86 guests intermittently oops on int3
    # at sites text_poke_bp just patched (docs/known-defects.md).  The emulator's bug
    # must not become a FAIL of the kernel under test; boot time is the same.
    accel="tcg,thread=single",
    memory_mb=1024,
    console="ttyS0",
    image_format="bzImage",
    globals=("ICH9-LPC.disable_s3=0", "ICH9-LPC.disable_s4=0"),
    # button: the ACPI power button, whose fixed event wakes s2idle and which the
    # guest's input layer reports as KEY_POWER (read through evdev)
    modules=_COMMON_MODULES + ("kvm", "kvm_amd", "button", "evdev"),
    kvm_evidence=(r"Nested Virtualization enabled",),
    kvm_module="kvm_amd",
    # no_timer_check (TCG only; under KVM the guest sets it itself, kvm_guest_init): the
    # boot-time check that the PIT's interrupt arrives through the IO-APIC is timed in
    # guest loops, which a loaded TCG host stretches: with intel-iommu's interrupt
    # remapping there is no fallback, and the guest panics "timer doesn't work through
    # Interrupt-remapped IO-APIC" (docs/known-defects.md)
    extra_append=("no_console_suspend", "no_timer_check"),
    # Debian's default is "on except integrated graphics", stated for other kernels
    iommu_args=("-device", "intel-iommu"),
    iommu_append=("intel_iommu=on",),
    acpi_pci_slot="\\_SB_.PCI0.S{devfn:02X}_",    # ACPI pads names to 4 characters
    # ACPI hotplug of bridges off: no ACPI slot objects under root ports (and the guest
    # hot-plugs natively)
    acpi_unlisted_bridge_args=("-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"),
    serial_wake_irq="ttyS0",
    hibernate_events=("SUSPEND_DISK", "SHUTDOWN"),
    # "ACPI: PM: " since 6.1's pr_fmt, "ACPI: " in 5.10
    s4_wake_line=r"ACPI: (PM: )?Waking up from system sleep state S4",
    s2idle_lps0=True,
    kvm_host_needs="an x86_64 host whose CPU flags show vmx or svm, with kvm_intel or "
                   "kvm_amd loaded with nested=1",
    kbuild=KbuildArch("x86_64", "x86", "arch/x86/boot/bzImage", "bzImage", "x86_64",
                      "x86_64-linux-gnu-", "gcc-x86-64-linux-gnu",
                      host_libs=(("/usr/include/gelf.h", "libelf-dev"),)),
)

# i440fx + PIIX4: the same CPU and guest, another chipset (and its own S3/S4 switches)
X86_64_PC = replace(X86_64_Q35, name="x86_64-pc", machine="pc",
                    globals=("PIIX4_PM.disable_s3=0", "PIIX4_PM.disable_s4=0"),
                    iommu_args=(), iommu_append=(), pcie_root_bus="pci.0",
                    acpi_pci_slot=None, acpi_unlisted_bridge_args=())

ARM64_VIRT = Profile(
    name="arm64",
    arch="arm64",
    deb_arch="arm64",
    qemu_binary="qemu-system-aarch64",
    qemu_package="qemu-system-arm",
    machine="virt,virtualization=on,gic-version=3",   # EL2 emulated: KVM runs nested
    cpu="max,pauth-impdef=on",                         # ~2.5x faster TCG than plain max
    memory_mb=2048,
    console="ttyAMA0",
    image_format="arm64-Image",
    modules=_COMMON_MODULES,                           # KVM is built in on arm64
    kvm_evidence=(r"CPU: All CPU\(s\) started at EL2",
                  r"kvm \[\d+\]: .*mode initialized successfully"),
    iommu_args=("-machine", "iommu=smmuv3"),     # merged into the -M options above
    serial_wake_irq="uart-pl011",
    rtc_wake_irq="rtc-pl031",
    probe_restores=True,
    kvm_host_needs="an arm64 host kernel 6.16 or later booted with kvm-arm.mode=nested on "
                   "a CPU with FEAT_NV2",
    kvm_min_qemu=(10, 1),           # virtualization=on under KVM
    kbuild=KbuildArch("arm64", "arm64", "arch/arm64/boot/Image", "Image", "aarch64",
                      "aarch64-linux-gnu-", "gcc-aarch64-linux-gnu"),
)

# The same virt machine booted through UEFI (EDK2's ArmVirtQemu), which hands the
# kernel QEMU's ACPI tables: the power button is then a Generic Event Device
# (ACPI0013) whose _EVT notifies a PNP0C0C button, as on ACPI arm64 servers.
ARM64_UEFI = replace(ARM64_VIRT, name="arm64-uefi",
                     firmware="/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
                     firmware_package="qemu-efi-aarch64",
                     extra_append=("acpi=force",),
                     # EDK2 prints at once; the kernel's sign is its EFI stub's line
                     # (5.10-6.12; 7.2's stub is quiet) or its banner, which it prints
                     # first when its console (SPCR) comes up
                     kernel_started=r"EFI stub: Booting Linux Kernel|Linux version \S+ \(",
                     silent_after_s=90.0,
                     modules=ARM64_VIRT.modules + ("button", "evdev"))  # Debian: button built in

# The x86 chipsets the power tests compare, by QEMU machine name
X86_CHIPSETS: dict[str, Profile] = {"q35": X86_64_Q35, "pc": X86_64_PC}

PROFILES: dict[str, Profile] = {p.name: p for p in (X86_64_Q35, X86_64_PC, ARM64_VIRT,
                                                    ARM64_UEFI)}
DEFAULT_ARCHES = ("x86_64", "arm64")


def get(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise GuestpmError(
            f"unknown arch {name!r}: known are {', '.join(sorted(PROFILES))}") from None


# kernel parameters that only TCG's timing needs (the profiles' comments say why)
TCG_ONLY_APPEND = ("no_timer_check",)


def under_kvm(p: Profile, vendor: str | None = None) -> Profile:
    """`p` run by the host's KVM with nested virtualization (pure): `-accel kvm`, the
    host's CPU model; on x86 the guest's KVM module and its evidence follow the host CPU's
    `vendor` (a TCG guest's max CPU is AMD-flavoured: kvm_amd); the TCG workaround
    (x86 thread=single) and TCG's CPU options (arm64 pauth-impdef) go away."""
    if p.accelerator == "kvm":
        return p
    more: dict = {}
    if p.kvm_module in KVM_NESTED_EVIDENCE:
        module = KVM_MODULE_OF_VENDOR.get(vendor or "")
        if module is None:
            raise GuestpmError(f"--accel kvm on {p.name}: unknown host CPU vendor {vendor!r} "
                               f"(known: {', '.join(KVM_MODULE_OF_VENDOR)})")
        more = dict(kvm_module=module, kvm_evidence=KVM_NESTED_EVIDENCE[module],
                    modules=tuple(module if m == p.kvm_module else m for m in p.modules))
    append = tuple(a for a in p.extra_append if a not in TCG_ONLY_APPEND)
    return replace(p, accel="kvm", cpu=p.kvm_cpu, extra_append=append, **more)


def host_cpu_vendor(cpuinfo: str | None = None) -> str | None:
    """The host CPU's vendor_id from /proc/cpuinfo (x86), None where there is none."""
    if cpuinfo is None:
        try:
            cpuinfo = open("/proc/cpuinfo").read()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id":
            return value.strip()
    return None


def host_machine() -> str:
    """`uname -m` of the host guestpm runs on."""
    return os.uname().machine


def host_deb_arch() -> str:
    """This host's Debian architecture, from the profiles' Kbuild facts."""
    m = host_machine()
    return next((p.deb_arch for p in PROFILES.values()
                 if p.kbuild and p.kbuild.host_machine == m), m)
