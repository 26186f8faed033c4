#!/bin/sh
# The two commands of the README.  Each does all set-up on a fresh Debian machine
# (as root; elsewhere apt-get needs sudo) and is cheap to repeat:
#   ./guestpm.sh run [guestpm run options]   the suite on the default kernels (6 targets)
#   ./guestpm.sh test [pytest options]       ruff, mypy, unit tests + the suite: what CI runs
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
        exec "$VENV/bin/python" -m pytest tests -p no:cacheprovider -q -rfEs --self-test \
            -n "$(nproc)" --dist loadgroup --timeout 900 "$@" ;;
    *)
        echo "usage: $0 run|test|setup [options]" >&2; exit 2 ;;
esac
