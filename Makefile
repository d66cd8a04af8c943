# pyresilience - build, test, demo and bench.
#
#   make            static library of the C core + headers + examples/c program
#   make demo       .venv, install the package, run examples/tour.py
#   make test       system deps (when root), the pure-C suite, then pytest
#   make test-asan  the C suite under AddressSanitizer + UBSan
#   make test-tsan  the C suite under ThreadSanitizer
#   make test-free-threaded  the C suite and pytest on a free-threaded CPython
#                   (built once from Debian's source, cached: tools/free_threaded.sh)
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

# One list of C warnings for everything built here (core, Redis library, C
# tests, and the extension: setup.py reads the same file).
WARN    := $(shell grep -v '^\#' csrc/warnings.txt)
CFLAGS  ?= -O2 -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -pthread -Iinclude/pyresilience -Icsrc/core
ifeq ($(CI),true)
ALL_CFLAGS += -Werror
endif

HAVE_HIREDIS := $(shell pkg-config --exists hiredis 2>/dev/null && echo 1)
CORE_SRC  := $(wildcard csrc/core/*.c)
REDIS_SRC := $(if $(HAVE_HIREDIS),$(wildcard csrc/redis/*.c))
ifeq ($(HAVE_HIREDIS),1)
ALL_CFLAGS += -DPRS_HAVE_HIREDIS -Iinclude/pyresilience_redis -Icsrc/redis $(shell pkg-config --cflags hiredis)
LDLIBS_REDIS := $(shell pkg-config --libs hiredis)
endif
LDLIBS  := $(LDLIBS_REDIS) -lm -pthread

# Two libraries: the core (libpyresilience.a, headers in include/pyresilience)
# and, when hiredis is found, the Redis library over it
# (libpyresilience_redis.a, headers in include/pyresilience_redis).
LIB       := $(BUILD)/libpyresilience.a
REDIS_LIB := $(if $(HAVE_HIREDIS),$(BUILD)/libpyresilience_redis.a)
LIBS      := $(REDIS_LIB) $(LIB)
TEST_SRC := $(wildcard tests/c/*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(BUILD)/run_tests
EXAMPLE_BIN := $(BUILD)/example_limiter

.PHONY: gen test-tsan test-free-threaded bench-threads bench-threads-static all lib headers install-c check-headers ctest test test-asan pytest demo bench deps venv install install-demo clean

all: lib headers $(EXAMPLE_BIN)

# The declared binding (tools/binding_decl.py -> csrc/python/gen/*.h and the
# declared blocks of pyresilience/_core.pyi); setup.py runs it too.
gen:
	$(PYTHON) tools/gen_binding.py

lib: $(LIBS)

$(BUILD)/%.o: %.c $(wildcard include/*/*.h csrc/core/*.h csrc/redis/*.h tests/c/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB): $(CORE_SRC:%.c=$(BUILD)/%.o)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libpyresilience_redis.a: $(REDIS_SRC:%.c=$(BUILD)/%.o)
	@rm -f $@
	ar rcs $@ $^

# The public headers, gathered beside the libraries as a C user gets them:
# exactly include/pyresilience (and include/pyresilience_redis with hiredis).
headers: $(LIBS)
	@rm -rf $(BUILD)/include
	@mkdir -p $(BUILD)/include
	cp -r include/pyresilience $(BUILD)/include/
	$(if $(HAVE_HIREDIS),cp -r include/pyresilience_redis $(BUILD)/include/)

# Installs the libraries and their headers: make install-c PREFIX=/usr/local
# (DESTDIR for staging).
PREFIX  ?= /usr/local
install-c: headers
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include
	install -m 644 $(LIBS) $(DESTDIR)$(PREFIX)/lib/
	cp -r $(BUILD)/include/* $(DESTDIR)$(PREFIX)/include/

# A C user's build against the installed tree only (no csrc/ paths): the core
# alone, with and without PRS_HAVE_HIREDIS defined, and the Redis library.
STAGE := $(BUILD)/stage
check-headers: lib
	@rm -rf $(STAGE)
	$(MAKE) --no-print-directory install-c DESTDIR=$(STAGE) PREFIX=/usr
	$(CC) -std=c11 $(WARN) $(CFLAGS) -Werror -I$(STAGE)/usr/include/pyresilience examples/c/limiter.c \
	    -o $(STAGE)/limiter $(STAGE)/usr/lib/libpyresilience.a -lm -pthread
	$(CC) -std=c11 $(WARN) $(CFLAGS) -Werror -DPRS_HAVE_HIREDIS -I$(STAGE)/usr/include/pyresilience \
	    examples/c/limiter.c -o $(STAGE)/limiter_hiredis_defined $(STAGE)/usr/lib/libpyresilience.a -lm -pthread
	$(STAGE)/limiter > /dev/null && $(STAGE)/limiter_hiredis_defined > /dev/null
ifeq ($(HAVE_HIREDIS),1)
	$(CC) -std=c11 $(WARN) $(CFLAGS) -Werror -I$(STAGE)/usr/include/pyresilience -I$(STAGE)/usr/include/pyresilience_redis \
	    examples/c/redis_url.c -o $(STAGE)/redis_url $(STAGE)/usr/lib/libpyresilience_redis.a \
	    $(STAGE)/usr/lib/libpyresilience.a $(LDLIBS)
	$(STAGE)/redis_url > /dev/null
endif
	@echo "check-headers: the installed headers build a C program with and without hiredis"

$(EXAMPLE_BIN): examples/c/limiter.c $(LIB)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LIB) $(LDLIBS)

$(TEST_BIN): $(TEST_OBJ) $(LIBS)
	$(CC) $(ALL_CFLAGS) $(TEST_OBJ) -o $@ $(LIBS) $(LDLIBS)

ctest: $(TEST_BIN) $(EXAMPLE_BIN)
	$(TEST_BIN)
	$(EXAMPLE_BIN) > /dev/null
	$(MAKE) --no-print-directory check-headers

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

# The C suite and the whole pytest suite on a free-threaded CPython, with the
# GIL off (the interpreter is built once and cached outside the repository).
test-free-threaded:
	bash tools/free_threaded.sh

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
