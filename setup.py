"""Declares the C extension pyresilience._core; metadata lives in pyproject.toml.

Switches from the environment:
  PRS_DEBUG=1     -O0 -g, asserts on
  PRS_SANITIZE=1  AddressSanitizer + UBSan (run Python with LD_PRELOAD=libasan)
  PRS_NO_REDIS=1  build without the Redis backend even if hiredis is found
"""
import glob
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup


def pkg_config(*args):
    if not shutil.which("pkg-config"):
        return None
    try:
        out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True)
    except (subprocess.CalledProcessError, OSError):
        return None
    return out.stdout.split()


# The declared binding: csrc/python/gen/*.h and the declared blocks of
# pyresilience/_core.pyi come from tools/binding_decl.py (rewritten only when
# their text changes; committed, so a checkout without Python 3 tools still builds).
if os.path.exists("tools/gen_binding.py"):
    subprocess.run([sys.executable, "tools/gen_binding.py"], check=True)

sources = sorted(glob.glob("csrc/core/*.c")) + sorted(glob.glob("csrc/python/*.c"))
include_dirs = ["include/pyresilience", "csrc/core", "csrc/python"]
define_macros = [("_GNU_SOURCE", "1")]
libraries = []


def warnings():
    """The one list of C warning flags (csrc/warnings.txt, shared with the Makefile)."""
    with open("csrc/warnings.txt") as f:
        return [w for w in (line.strip() for line in f) if w and not w.startswith("#")]


extra_compile_args = ["-std=c11", *warnings()]
if os.environ.get("CI") == "true":  # warnings are errors in CI, as for the Makefile's builds
    extra_compile_args.append("-Werror")
extra_link_args = []

if os.environ.get("PRS_DEBUG"):
    extra_compile_args += ["-O0", "-g", "-UNDEBUG"]
else:
    extra_compile_args += ["-O2"]
    define_macros.append(("NDEBUG", "1"))
if os.environ.get("PRS_SANITIZE"):
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    extra_compile_args += flags
    extra_link_args += flags

hiredis = None if os.environ.get("PRS_NO_REDIS") else pkg_config("--cflags", "--libs", "hiredis")
if hiredis is not None and glob.glob("csrc/redis/*.c"):
    sources += sorted(glob.glob("csrc/redis/*.c"))
    include_dirs += ["include/pyresilience_redis", "csrc/redis"]
    define_macros.append(("PRS_HAVE_HIREDIS", "1"))
    for flag in hiredis:
        if flag.startswith("-I"):
            include_dirs.append(flag[2:])
        elif flag.startswith("-l"):
            libraries.append(flag[2:])
    if "hiredis" not in libraries:
        libraries.append("hiredis")

setup(
    ext_modules=[
        Extension(
            "pyresilience._core",
            sources=sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            libraries=libraries,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ],
)
