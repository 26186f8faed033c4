"""The L2 guest's initramfs: busybox (the L1 host's own static one) and an /init that
runs the scenario named on the kernel command line and reports over /dev/kmsg at a
level that `quiet` still prints, so each report is one console line:

    guestpm-l2: WORD key=value key={value with spaces} ...

Scenario parameters (kernel command line): guestpm.mem_sleep=deep|s2idle,
guestpm.suspend=1 (echo mem > /sys/power/state after arming the RTC alarm),
guestpm.alarm=N (seconds), guestpm.off=poweroff|none, guestpm.resume=DEV (set the
resume device once the modules in /etc/guestpm/modules are loaded: a restore happens
there), guestpm.hibernate=1 (swap on DEV, then echo disk > /sys/power/state)."""

from __future__ import annotations

import io

from ..cpio import CpioWriter

BUSYBOX = "/bin/busybox"
PREFIX = "guestpm-l2:"

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
say() { echo "<2>guestpm-l2: $*" > /dev/kmsg; }
ALARM=3; SUSPEND=0; MS=; OFF=poweroff; HIB=0; RES=
for a in $(cat /proc/cmdline); do
  case "$a" in
    guestpm.alarm=*) ALARM=${a#*=};; guestpm.suspend=*) SUSPEND=${a#*=};;
    guestpm.mem_sleep=*) MS=${a#*=};; guestpm.off=*) OFF=${a#*=};;
    guestpm.hibernate=*) HIB=${a#*=};; guestpm.resume=*) RES=${a#*=};;
  esac
done
say "up uptime=$(cut -d' ' -f1 /proc/uptime) cpus=$(grep -c ^processor /proc/cpuinfo) release=$(uname -r)"
if [ -f /etc/guestpm/modules ]; then
  while read -r m; do
    [ -n "$m" ] && { insmod "/lib/modules/guestpm/$m.ko" 2>/tmp/insmod || say "insmod-failed $m err={$(cat /tmp/insmod)}"; }
  done < /etc/guestpm/modules
fi
if [ -n "$RES" ]; then
  # the kernel's resume= check ran before the modules: set the device now; the write
  # restores an image if there is one (and this /init never goes on), else returns
  dmesg -n 7
  n=0; while [ ! -e "/sys/block/$RES/dev" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
  if [ -e "/sys/block/$RES/dev" ]; then
    cat "/sys/block/$RES/dev" > /sys/power/resume 2>/tmp/reserr
    say "fresh rc=$? device=$RES err={$(cat /tmp/reserr)}"
  else
    say "no-resume-device $RES"
  fi
  dmesg -n 4
fi
say "psci $(dmesg | grep -o 'PSCIv[0-9.]* detected in firmware' | head -1)"
say "mem_sleep={$(cat /sys/power/mem_sleep)} state={$(cat /sys/power/state)}"
if [ -n "$MS" ]; then
  echo "$MS" > /sys/power/mem_sleep 2>/tmp/mserr; say "set mem_sleep=$MS rc=$? now={$(cat /sys/power/mem_sleep)} err={$(cat /tmp/mserr)}"
fi
if [ "$SUSPEND" = 1 ]; then
  MARK=l2-$$-$(cut -d' ' -f1 /proc/uptime); echo "$MARK" > /tmp/marker
  sleep 100000 & SLEEPER=$!
  echo 0 > /sys/class/rtc/rtc0/wakealarm
  echo "+$ALARM" > /sys/class/rtc/rtc0/wakealarm
  T0=$(cat /sys/class/rtc/rtc0/since_epoch)
  say "suspending alarm=+$ALARM rtc=$T0"
  echo mem > /sys/power/state 2>/tmp/err; RC=$?
  T1=$(cat /sys/class/rtc/rtc0/since_epoch)
  KEPT=lost; [ "$(cat /tmp/marker)" = "$MARK" ] && KEPT=kept
  ALIVE=gone; kill -0 $SLEEPER 2>/dev/null && ALIVE=running
  say "resumed rc=$RC err={$(cat /tmp/err)} rtc_s=$((T1 - T0)) alarm_left={$(cat /sys/class/rtc/rtc0/wakealarm)} marker=$KEPT sleeper=$ALIVE"
  say "pm entry={$(dmesg | grep -o 'PM: suspend entry ([a-z0-9]*)' | tail -1)} exits=$(dmesg | grep -c 'PM: suspend exit') cpus_online=$(cat /sys/devices/system/cpu/online)"
fi
if [ "$HIB" = 1 ]; then
  mkswap "/dev/$RES" >/tmp/mkswap 2>&1 && swapon "/dev/$RES" 2>>/tmp/mkswap
  say "swap rc=$? out={$(tail -1 /tmp/mkswap)}"
  MARK=l2-$$-$(cut -d' ' -f1 /proc/uptime); echo "$MARK" > /tmp/marker
  sleep 100000 & SLEEPER=$!
  say "hibernating"
  dmesg -n 7
  echo disk > /sys/power/state 2>/tmp/err; RC=$?
  KEPT=lost; [ "$(cat /tmp/marker)" = "$MARK" ] && KEPT=kept
  ALIVE=gone; kill -0 $SLEEPER 2>/dev/null && ALIVE=running
  dmesg -n 4
  say "thawed rc=$RC err={$(cat /tmp/err)} marker=$KEPT sleeper=$ALIVE"
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
