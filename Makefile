# pyresilience - build, test, demo and bench.
#
#   make            static library of the C core + headers + examples/c program
#   make demo       .venv, install the package, run examples/tour.py
#   make test       system deps (when root), the pure-C suite, then pytest
#   make test-asan  the C suite under AddressSanitizer + UBSan
#   make test-tsan  the C suite under ThreadSanitizer
#   make bench-threads  the C thread-scaling benchmark
#   make bench      run bench/ and rewrite BENCHMARKS.md
#
# Source lists are globs: a new csrc/core/*.c or tests/c/*.c is picked up as is.

PYTHON  ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
CC      ?= cc
BUILD   ?= build/c

# Debian packages the tests need (hiredis for the Redis backend, a real
# redis-server for its tests, pkg-config to find hiredis).
DEB_PKGS := libhiredis-dev redis-server pkg-config

WARN    := -Wall -Wextra -Wstrict-prototypes -Wwrite-strings -Wno-unused-parameter
CFLAGS  ?= -O2 -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -pthread -Icsrc/core
ifeq ($(CI),true)
ALL_CFLAGS += -Werror
endif

HAVE_HIREDIS := $(shell pkg-config --exists hiredis 2>/dev/null && echo 1)
CORE_SRC  := $(wildcard csrc/core/*.c)
REDIS_SRC := $(if $(HAVE_HIREDIS),$(wildcard csrc/redis/*.c))
LIB_SRC   := $(CORE_SRC) $(REDIS_SRC)
ifeq ($(HAVE_HIREDIS),1)
ALL_CFLAGS += -DPRS_HAVE_HIREDIS -Icsrc/redis $(shell pkg-config --cflags hiredis)
LDLIBS_REDIS := $(shell pkg-config --libs hiredis)
endif
LDLIBS  := $(LDLIBS_REDIS) -lm -pthread

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libpyresilience.a
TEST_SRC := $(wildcard tests/c/*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(BUILD)/run_tests
EXAMPLE_BIN := $(BUILD)/example_limiter

.PHONY: gen test-tsan bench-threads bench-threads-static all lib headers ctest test test-asan pytest demo bench deps venv install install-demo clean

all: lib headers $(EXAMPLE_BIN)

# The declared binding (tools/binding_decl.py -> csrc/python/gen/*.h and the
# declared blocks of pyresilience/_core.pyi); setup.py runs it too.
gen:
	$(PYTHON) tools/gen_binding.py

lib: $(LIB)

$(BUILD)/%.o: %.c $(wildcard csrc/core/*.h csrc/redis/*.h tests/c/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The public headers, gathered beside the library for a C user.
headers: $(LIB)
	@mkdir -p $(BUILD)/include/pyresilience
	cp csrc/core/*.h $(BUILD)/include/pyresilience/
	@rm -f $(BUILD)/include/pyresilience/*internal.h

$(EXAMPLE_BIN): examples/c/limiter.c $(LIB)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LIB) $(LDLIBS)

$(TEST_BIN): $(TEST_OBJ) $(LIB)
	$(CC) $(ALL_CFLAGS) $(TEST_OBJ) -o $@ $(LIB) $(LDLIBS)

ctest: $(TEST_BIN) $(EXAMPLE_BIN)
	$(TEST_BIN)
	$(EXAMPLE_BIN) > /dev/null

# C thread-scaling benchmark (one shared object per row, 1..2x cores threads).
SCALING_BIN := $(BUILD)/thread_scaling
$(SCALING_BIN): bench/thread_scaling.c $(LIB)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LIB) $(LDLIBS)

bench-threads: $(SCALING_BIN)
	$(SCALING_BIN)

# The same, static and core-only (no hiredis), to carry to another machine.
bench-threads-static:
	$(MAKE) BUILD=build/static HAVE_HIREDIS= build/static/thread_scaling LDLIBS="-lm -pthread -static"

test-asan:
	$(MAKE) BUILD=build/asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" ctest

# The C suite under ThreadSanitizer (real threads on every shared object).
test-tsan:
	$(MAKE) BUILD=build/tsan CFLAGS="-O1 -g -fsanitize=thread -fno-omit-frame-pointer" ctest

# System packages: installed when missing and we are root, else the exact command.
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null || exit 1; \
	  else \
	    echo "missing Debian packages; run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel

# Re-install every time: the build is incremental-free but takes seconds.
install: $(VPY)
	$(VPY) -m pip install -q --no-build-isolation ".[test]"

# The demo needs the package and nothing else (hiredis, when present, only
# adds the Redis backend; the tour does not use it).
install-demo: $(VPY)
	$(VPY) -m pip install -q --no-build-isolation .

demo: install-demo
	$(VPY) examples/tour.py

pytest: install
	cd tests && ../$(VPY) -m pytest -q -p no:cacheprovider .

test: deps
	$(MAKE) ctest
	$(MAKE) pytest

bench: deps
	$(VPY) -m pip install -q --no-build-isolation ".[bench]" 2>/dev/null || $(MAKE) install
	$(VPY) -m pip install -q --no-build-isolation ".[bench]"
	$(VPY) bench/run.py --output BENCHMARKS.md

clean:
	rm -rf build dist *.egg-info pyresilience/*.so
