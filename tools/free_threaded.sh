#!/usr/bin/env bash
# The test suite under free-threaded CPython (PEP 703, `--disable-gil`).
#
#   tools/free_threaded.sh            interpreter (cached), venv, extension, C suite, pytest
#   tools/free_threaded.sh python     only make sure the interpreter exists; print its path
#
# The interpreter is built once from Debian's python3.13 source (trixie's, found
# through a private apt configuration: the system's apt sources are not touched),
# upstream tarball only, `./configure --disable-gil` without --enable-optimizations
# (about 10-15 minutes on 2 cores), and cached outside the repository:
#   ${PRS_FT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pyresilience/python-ft}/<version>/
# A cached build of any version is used as is, with no network access; delete the
# folder to rebuild.  The venv lives in the repository (.venv-ft, ignored), and
# the extension is built into build/ft so the normal build/ is left alone.
#
# Tests run with PYTHON_GIL=0 (an extension that does not declare
# Py_MOD_GIL_NOT_USED would turn the GIL back on; tests/conftest.py fails the
# run if it is on under a free-threaded interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${PRS_FT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pyresilience/python-ft}
SUITE=${PRS_FT_SUITE:-trixie}
SRCPKG=${PRS_FT_SRCPKG:-python3.13}
VENV=${PRS_FT_VENV:-.venv-ft}
JOBS=${PRS_FT_JOBS:-$(nproc)}

log() { printf 'free-threaded: %s\n' "$*" >&2; }

# The newest completed build in the cache (a folder with a working python3.*t).
cached_python() {
    local d py
    for d in $(ls -1d "$CACHE"/*/ 2>/dev/null | sort -rV); do
        for py in "$d"bin/python3.*t; do
            [ -x "$py" ] && [ -f "$d.complete" ] && { echo "$py"; return 0; }
        done
    done
    return 1
}

build_python() {
    local work apt_opts version upstream prefix tarball t0 t1
    work=$(mktemp -d "${TMPDIR:-/tmp}/prs-ft-build.XXXXXX")
    mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $SUITE main" \
        > "$work/apt/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
              -o "APT::Sandbox::User=root")  # a private folder the _apt user cannot read
    log "fetching the $SRCPKG source list for $SUITE"
    apt-get "${apt_opts[@]}" -qq update
    version=$(apt-cache "${apt_opts[@]}" showsrc "$SRCPKG" | awk '/^Version:/ {print $2; exit}')
    [ -n "$version" ] || { log "no $SRCPKG source in $SUITE"; exit 1; }
    upstream=${version%%-*}
    upstream=${upstream#*:}
    prefix="$CACHE/$upstream"
    if [ -f "$prefix/.complete" ]; then rm -rf "$work"; return 0; fi
    log "downloading $SRCPKG $version"
    (cd "$work" && apt-get "${apt_opts[@]}" -qq source --download-only "$SRCPKG=$version")
    tarball=$(ls "$work"/"${SRCPKG}_${upstream}".orig.tar.* | grep -v '\.asc$' | head -1)
    mkdir -p "$work/src"
    tar -xf "$tarball" -C "$work/src" --strip-components=1
    rm -rf "$prefix"
    t0=$(date +%s)
    log "building CPython $upstream --disable-gil into $prefix (-j$JOBS)"
    (cd "$work/src" && ./configure -q --disable-gil --prefix="$prefix" --with-ensurepip=install \
        && make -s -j"$JOBS" && make -s altinstall) > "$work/build.log" 2>&1 \
        || { tail -40 "$work/build.log" >&2; log "build failed (log: $work/build.log)"; exit 1; }
    t1=$(date +%s)
    echo "$version built in $((t1 - t0)) s on $JOBS jobs, $(date -u +%F)" > "$prefix/.complete"
    log "built in $((t1 - t0)) s"
    rm -rf "$work"
}

PY=$(cached_python || true)
if [ -z "$PY" ]; then
    build_python
    PY=$(cached_python)
fi
log "interpreter $PY ($(cat "$(dirname "$(dirname "$PY")")/.complete"))"
if [ "${1:-}" = python ]; then echo "$PY"; exit 0; fi

# The venv (re-made when it was made from another interpreter) and the test
# dependencies. A dependency with no free-threaded wheel that cannot be built
# here is reported and left out; tests/conftest.py skips what needs it.
VPY="$VENV/bin/python"
if [ ! -x "$VPY" ] || [ "$(readlink -f "$("$VPY" -c 'import sys; print(sys._base_executable)' 2>/dev/null)")" != "$(readlink -f "$PY")" ]; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VPY" -m pip install -q --upgrade pip setuptools wheel
fi
deps=$("$VPY" - <<'PY'
import re, tomllib
with open("pyproject.toml", "rb") as f:
    print(" ".join(tomllib.load(f)["project"]["optional-dependencies"]["test"]))
PY
)
# shellcheck disable=SC2086
if ! "$VPY" -m pip install -q --only-binary=:all: $deps 2>/dev/null; then
    for d in $deps; do
        "$VPY" -m pip install -q --only-binary=:all: "$d" 2>/dev/null \
            || "$VPY" -m pip install -q "$d" >/dev/null 2>&1 \
            || log "no free-threaded build of $d here: the tests that need it are skipped"
    done
fi

# The extension, built for this interpreter (build/ keeps one folder per ABI).
"$VPY" -m pip install -q --no-build-isolation --no-deps .
"$VPY" -P - <<'PY'
import sys, sysconfig
import pyresilience  # noqa: F401  (the extension declares Py_MOD_GIL_NOT_USED)
assert sysconfig.get_config_var("Py_GIL_DISABLED"), "not a free-threaded interpreter"
assert not sys._is_gil_enabled(), "importing pyresilience turned the GIL on"
print("free-threaded: %s, GIL disabled after importing pyresilience" % sys.version.split()[0])
PY

# The C suite (it has no Python in it: the same binary as `make ctest`), then
# the whole pytest suite with the GIL off.
make --no-print-directory ctest
cd tests
PYTHON_GIL=0 PRS_FREE_THREADED=1 "../$VPY" -m pytest -q -rs -p no:cacheprovider .
