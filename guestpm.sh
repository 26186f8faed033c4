#!/bin/sh
# The two commands of the README.  Each does all set-up on a fresh Debian machine
# (as root; elsewhere apt-get needs sudo) and is cheap to repeat:
#   ./guestpm.sh run [guestpm run options]   the suite on the default kernels (6 targets)
#   ./guestpm.sh test [pytest options]       ruff, mypy, unit tests + the suite, then its
#                                            QEMU-sensitive families with a second QEMU: what CI runs
#   ./guestpm.sh setup [guestpm setup options]   only the set-up (CI pipelines, ci/)
set -eu
cd "$(dirname "$0")"
VENV=${GUESTPM_VENV:-.venv}

apt_install() {
    echo "guestpm.sh: installing $* with apt-get" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

command -v python3 >/dev/null || apt_install python3
python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null || {
    echo "guestpm.sh: python3 >= 3.11 is needed (Debian bookworm or later)" >&2; exit 2; }
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv

# test also installs the dev extras: the checks it runs before the tests (ruff, mypy)
spec=. stamp="$VENV/.installed"
[ "${1:-}" = test ] && spec=".[dev]" stamp="$VENV/.installed-dev"
if [ ! -x "$VENV/bin/guestpm" ] || [ pyproject.toml -nt "$stamp" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$spec"
    touch "$stamp"
fi

# The second QEMU of `test`: bookworm's system QEMU is 7.2, its backports carry 10;
# trixie's system QEMU is already 10 and bookworm's 7.2 binaries are not for trixie.
QEMU_LANE_FAMILIES="acpi_events or acpi_arm64 or vfio or (s2idle and not l2) or s3 or snapshots or (l2_suspend_honoured and not nvhe)"
qemu_lane() {
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    case "${GUESTPM_QEMU_LANE:-auto}:$codename" in
        auto:bookworm) echo debian:bookworm-backports ;;
        auto:*|none:*) ;;
        *) echo "$GUESTPM_QEMU_LANE" ;;
    esac
}

what=${1:-}
[ $# -gt 0 ] && shift
case "$what" in
    run)
        exec "$VENV/bin/guestpm" run --setup "$@" ;;
    setup)
        exec "$VENV/bin/guestpm" setup "$@" ;;
    test)
        # the contributor's checks first: a lint or type error fails the run in seconds
        "$VENV/bin/ruff" check .
        "$VENV/bin/mypy"
        # --build-tools: the bisect tests build an arm64 kernel
        "$VENV/bin/guestpm" setup --build-tools
        rc=0
        "$VENV/bin/python" -m pytest tests -p no:cacheprovider -q -rfEs --self-test \
            -n "$(nproc)" --dist loadgroup --timeout 900 "$@" || rc=$?
        # The second QEMU: the families that depend on QEMU's machine model (ACPI
        # tables, vfio, suspend, migration streams, nested EL2) once more on 7.2 with
        # the next Debian's QEMU, unpacked beside the system's (README: QEMU versions).
        # GUESTPM_QEMU_LANE=none leaves it out; =DIR or =debian:SUITE picks another.
        lane=$(qemu_lane)
        if [ -n "$lane" ]; then
            echo "guestpm.sh: the QEMU-sensitive families again with --qemu $lane" >&2
            "$VENV/bin/python" -m pytest tests/e2e -p no:cacheprovider -q -rfEs \
                -n "$(nproc)" --dist loadgroup --timeout 900 \
                --kernel debian:7.2 --arch x86_64 --arch arm64 --qemu "$lane" --results results/second-qemu --self-test \
                -k "$QEMU_LANE_FAMILIES" "$@" || rc=$?
        fi
        exit $rc ;;
    *)
        echo "usage: $0 run|test|setup [options]" >&2; exit 2 ;;
esac
