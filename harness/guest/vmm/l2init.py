"""The L2 guest's initramfs: busybox (the L1 host's own static one) and an /init that
runs the scenario named on the kernel command line and reports over /dev/kmsg at a
level that `quiet` still prints, so each report is one console line:

    guestpm-l2: WORD key=value key={value with spaces} ...

Scenario parameters (kernel command line): guestpm.mem_sleep=deep|s2idle,
guestpm.suspend=N (N times: echo mem > /sys/power/state after arming the RTC alarm;
each attempt's reports follow its `attempt n=K` report),
guestpm.alarm=N (seconds), guestpm.off=poweroff|none, guestpm.resume=DEV (set the
resume device once the modules in /etc/guestpm/modules are loaded: a restore happens
there), guestpm.hibernate=1 (swap on DEV, then echo disk > /sys/power/state),
guestpm.splat=KIND (a self-test: the splat fixture, loaded from an extra layer's
/etc/guestpm/modules.extra, fires KIND just before the end).  x86 only:
guestpm.hid=HID[,HID...] (whether the ACPI device is there, and the driver bound to
it), guestpm.wake=NAME (enable the ACPI device NAME as a wake source through
/proc/acpi/wakeup before the suspends: the VMM's wake GPE is its), guestpm.irqs=1 (the
interrupt counts of the timer, RTC, SCI and local timer lines before and after a
`sleep 1`: whether L2's timers tick).

The kernel log is evidence: /init sets the console loglevel so that every record of
levels 0..4 (EMERG..WARNING) and of the kernel's default level (KERN_DEFAULT) is
printed as it is logged (the L2 command line's loglevel=5 does the same during boot):
a WARN or lockdep report is level 4, which `quiet` would hide.  Printing them as they
come, not collecting them later from /dev/kmsg, keeps them when L2 hangs.  Levels 5..7
(the bulk of a boot log) stay off the emulated UART: each byte is an MMIO exit to the
VMM.  What the harness reads from dmesg (killed CPUs, the resume line) is reported."""

from __future__ import annotations

import io

from ..cpio import CpioWriter

BUSYBOX = "/bin/busybox"
PREFIX = "guestpm-l2:"
# the L2 kernel's console from boot on: records of levels 0..4 as they are logged (not
# `quiet`'s 0..3), and no console suspend, so a hang inside the suspend path keeps
# what was printed before it.  The emulated PL011 of a nested guest under TCG prints
# about 140 bytes/s: a WARN's report took 14 s with the CPU's interrupts masked (arm64
# reports it from the BRK exception), and the buddy watchdog called that a hard LOCKUP.
# watchdog_thresh=60 (the most it takes) keeps our console's slowness from passing as
# the kernel's lockup; a CPU stuck for good is still reported, after 60 s.
CMDLINE = "loglevel=5 no_console_suspend watchdog_thresh=60"

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
say() { echo "<2>guestpm-l2: $*" > /dev/kmsg; }
# records below the console loglevel are printed: 0..4, and KERN_DEFAULT's level
set -- $(cat /proc/sys/kernel/printk); LVL=5; [ "${2:-4}" -ge 5 ] && LVL=$(($2 + 1))
dmesg -n $LVL
ALARM=3; SUSPEND=0; MS=; OFF=poweroff; HIB=0; RES=; SPLAT=; WAKE=; IRQS=; HID=
for a in $(cat /proc/cmdline); do
  case "$a" in
    guestpm.alarm=*) ALARM=${a#*=};; guestpm.suspend=*) SUSPEND=${a#*=};;
    guestpm.mem_sleep=*) MS=${a#*=};; guestpm.off=*) OFF=${a#*=};;
    guestpm.hibernate=*) HIB=${a#*=};; guestpm.resume=*) RES=${a#*=};;
    guestpm.splat=*) SPLAT=${a#*=};; guestpm.wake=*) WAKE=${a#*=};;
    guestpm.irqs=*) IRQS=${a#*=};; guestpm.hid=*) HID=${a#*=};;
  esac
done
say "up uptime=$(cut -d' ' -f1 /proc/uptime) cpus=$(grep -c ^processor /proc/cpuinfo) release=$(uname -r) loglevel=$LVL default_level=${2:-?}"
if [ "$HIB" = 1 ]; then
  # the SYSTEM_OFF2 call's code path (drivers/firmware/psci/psci.c), not a name table;
  # in the background, while the modules load: a nested guest takes seconds to list
  # every symbol (a fixed-string pass first: a regex per line took 16 s in 7.2)
  ( K=absent
    if [ -n "$(head -c 1 /proc/kallsyms 2>/dev/null)" ]; then
      K=no
      grep -F ' psci_sys_hibernate' /proc/kallsyms | grep -qE ' psci_sys_hibernate(\.|$)' && K=yes
    fi
    echo "$K" > /tmp/kallsyms ) &
  KALLSYMS=$!
fi
for f in /etc/guestpm/modules /etc/guestpm/modules.extra; do
  [ -f "$f" ] || continue
  while read -r m p; do
    [ -n "$m" ] && { insmod "/lib/modules/guestpm/$m.ko" $p 2>/tmp/insmod || say "insmod-failed $m err={$(cat /tmp/insmod)}"; }
  done < "$f"
done
if [ -n "$RES" ]; then
  # the kernel's resume= check ran before the modules: set the device now; the write
  # restores an image if there is one (and this /init never goes on), else returns,
  # with 0 either way: the kernel's own line says whether it found an image
  dmesg -n 7
  n=0; while [ ! -e "/sys/block/$RES/dev" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
  if [ -e "/sys/block/$RES/dev" ]; then
    cat "/sys/block/$RES/dev" > /sys/power/resume 2>/tmp/reserr; RC=$?
    say "fresh rc=$RC device=$RES err={$(cat /tmp/reserr)} resume_lines=$(dmesg | grep -c 'resume from hibernation')"
  else
    say "no-resume-device $RES"
  fi
  dmesg -n $LVL
fi
say "psci $(dmesg | grep -o 'PSCIv[0-9.]* detected in firmware' | head -1)"
say "mem_sleep={$(cat /sys/power/mem_sleep)} state={$(cat /sys/power/state)}"
if [ -n "$MS" ]; then
  echo "$MS" > /sys/power/mem_sleep 2>/tmp/mserr; say "set mem_sleep=$MS rc=$? now={$(cat /sys/power/mem_sleep)} err={$(cat /tmp/mserr)}"
fi
irqs() { say "irqs $1 {$(grep -E '^ *(0|8|9|LOC|SPU):' /proc/interrupts | tr -s ' ' | tr '\n' ';')}"; }
if [ -n "$IRQS" ]; then irqs before-sleep; sleep 1; irqs after-sleep; fi
for h in $(echo "$HID" | tr , ' '); do
  d=/sys/bus/acpi/devices/$h:00
  drv=$(readlink $d/physical_node/driver 2>/dev/null); [ -n "$drv" ] || drv=$(readlink $d/driver 2>/dev/null)
  say "hid $h present=$([ -e $d ] && echo yes || echo no) driver={${drv##*/}}"
done
if [ -n "$WAKE" ]; then
  grep -q "^$WAKE[[:space:]].*[*]enabled" /proc/acpi/wakeup 2>/dev/null || echo "$WAKE" > /proc/acpi/wakeup 2>/tmp/wkerr
  say "wake device=$WAKE rc=$? err={$(cat /tmp/wkerr 2>/dev/null)} now={$(grep "^$WAKE" /proc/acpi/wakeup 2>/dev/null | tr -s ' \t' ' ')}"
fi
# guestpm.suspend=N: N suspends in turn (the VMM's policy may differ per call), each
# opened by an `attempt` report; what dmesg says is counted from the attempt's start
since() { dmesg | tail -n +$((D0 + 1)); }
i=0
while [ "$i" -lt "$SUSPEND" ]; do
  i=$((i + 1)); D0=$(dmesg | wc -l)
  say "attempt n=$i"
  MARK=l2-$$-$i-$(cut -d' ' -f1 /proc/uptime); echo "$MARK" > /tmp/marker
  sleep 100000 & SLEEPER=$!
  echo 0 > /sys/class/rtc/rtc0/wakealarm
  echo "+$ALARM" > /sys/class/rtc/rtc0/wakealarm
  T0=$(cat /sys/class/rtc/rtc0/since_epoch)
  say "suspending alarm=+$ALARM rtc=$T0"
  echo mem > /sys/power/state 2>/tmp/err; RC=$?
  T1=$(cat /sys/class/rtc/rtc0/since_epoch)
  KEPT=lost; [ "$(cat /tmp/marker)" = "$MARK" ] && KEPT=kept
  ALIVE=gone; kill -0 $SLEEPER 2>/dev/null && ALIVE=running
  kill $SLEEPER 2>/dev/null
  say "resumed rc=$RC err={$(cat /tmp/err)} rtc_s=$((T1 - T0)) alarm_left={$(cat /sys/class/rtc/rtc0/wakealarm)} marker=$KEPT sleeper=$ALIVE"
  say "pm entry={$(since | grep -o 'PM: suspend entry ([a-z0-9]*)' | tail -1)} exits=$(since | grep -c 'PM: suspend exit') cpus_online=$(cat /sys/devices/system/cpu/online)"
  # the CPUs this kernel took down before SYSTEM_SUSPEND (psci's "CPU%d killed"), and
  # those it failed to take down or bring back
  say "offlined killed={$(since | sed -n 's/.*CPU\([0-9][0-9]*\) killed.*/\1/p' | tr '\n' ' ')} errors=$(since | grep -cE 'Error taking CPU[0-9]+ down|may not have shut down cleanly|didn.t die|CPU[0-9]+: failed to come online|Error bringing up CPU|Non-boot CPUs are not disabled')"
done
if [ "$HIB" = 1 ]; then
  wait $KALLSYMS; say "kallsyms psci_sys_hibernate=$(cat /tmp/kallsyms)"
  mkswap "/dev/$RES" >/tmp/mkswap 2>&1 && swapon "/dev/$RES" 2>>/tmp/mkswap
  say "swap rc=$? out={$(tail -1 /tmp/mkswap)}"
  MARK=l2-$$-$(cut -d' ' -f1 /proc/uptime); echo "$MARK" > /tmp/marker
  sleep 100000 & SLEEPER=$!
  say "hibernating"
  H0=$(dmesg | wc -l)
  echo disk > /sys/power/state 2>/tmp/err; RC=$?
  KEPT=lost; [ "$(cat /tmp/marker)" = "$MARK" ] && KEPT=kept
  ALIVE=gone; kill -0 $SLEEPER 2>/dev/null && ALIVE=running
  say "thawed rc=$RC err={$(cat /tmp/err)} marker=$KEPT sleeper=$ALIVE"
  # a hibernation that failed: what the kernel said about it since `echo disk` (its
  # level-6 lines are not printed as they come: about 9 s of L2 console a round trip)
  [ "$RC" = 0 ] || dmesg | tail -n +$((H0 + 1)) | tail -n 40 > /dev/console
fi
if [ -n "$SPLAT" ]; then
  mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
  echo "$SPLAT" > /sys/kernel/debug/guestpm_splat/trigger 2>/tmp/splaterr
  say "splat kind=$SPLAT rc=$? err={$(cat /tmp/splaterr)}"
fi
say "done"
[ "$OFF" = poweroff ] && poweroff -f
while :; do sleep 3600; done
"""


def initramfs(busybox: bytes) -> bytes:
    buf = io.BytesIO()
    w = CpioWriter(buf)
    for d in ("bin", "dev", "proc", "sys", "tmp"):
        w.directory(d)
    w.chardev("dev/console", 5, 1)
    w.file("bin/busybox", busybox, 0o755)
    w.file("init", INIT.encode(), 0o755)
    w.close()
    return buf.getvalue()


def reports(console: str) -> list[str]:
    """The scenario's report lines, without the prefix (pure)."""
    out = []
    for line in console.splitlines():
        i = line.find(PREFIX)
        if i >= 0:
            out.append(line[i + len(PREFIX):].strip())
    return out
