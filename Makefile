# logkernel: `make run` and `make test` are the two commands; both set up everything
# (a .venv with the package and its dependencies, the C core compiled) from nothing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NATIVE_SOURCES := $(wildcard native/*.c native/*.h) native/ffi_build.py
CC ?= cc
# Our own C, strict: warnings are errors here (CI), never in a user's pip install.
STRICT_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pedantic -Wshadow \
                 -Wstrict-prototypes -Wno-unused-function -Inative
SANITIZE := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
NATIVE_TESTS := $(basename $(notdir $(wildcard native/tests/test_*.c)))
NATIVE_BIN := native/tests/bin

.PHONY: run test test-thorough test-reliability native-check native-test test-asan fuzz-native bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The install is editable, so compile the package's bytecode as a regular `pip install`
# does: without it every start compiles the sources again (~100 ms of `logkernel serve`'s
# start-up, and more where PYTHONDONTWRITEBYTECODE is set). Python ignores a stale .pyc.
$(VENV)/.installed-run: $(BIN)/python pyproject.toml setup.py $(NATIVE_SOURCES)
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m compileall -q logkernel
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml setup.py $(NATIVE_SOURCES)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m compileall -q logkernel
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	@$(BIN)/python -m compileall -q logkernel
	$(BIN)/logkernel serve --data-dir ./logkernel-data --listen 127.0.0.1:9092

test: $(VENV)/.installed-test native-test lint
	$(BIN)/python -m pytest

# Long Hypothesis runs (more examples per property).
test-thorough: $(VENV)/.installed-test
	HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest

# The reliability suite at full size (tests/reliability: 50 broker kills, millions of
# fuzzed frames, 1,000 connections...); `make test` runs it small. Prints the figures
# and writes reliability-figures.json, the source of docs/reliability.md.
test-reliability: $(VENV)/.installed-test
	LK_RELIABILITY=full $(BIN)/python -m pytest tests/reliability

# Compile every C source with -Werror: our C must build clean.
native-check:
	@mkdir -p $(NATIVE_BIN)
	@for f in native/*.c; do $(CC) -O2 $(STRICT_CFLAGS) -c $$f -o $(NATIVE_BIN)/$$(basename $$f .c).o || exit 1; done
	@echo "native-check: native/*.c build clean with -Wall -Wextra -Werror -pedantic"

# The C tests (native/tests/test_*.c), built strict and run.
native-test: native-check
	@for t in $(NATIVE_TESTS); do \
	  $(CC) -O2 -g $(STRICT_CFLAGS) native/*.c native/tests/$$t.c -o $(NATIVE_BIN)/$$t && \
	  $(NATIVE_BIN)/$$t || exit 1; done

# The C tests under AddressSanitizer and UndefinedBehaviorSanitizer, with the segment's
# invariant checker (LK_DEBUG) run after every mutating call.
test-asan:
	@mkdir -p $(NATIVE_BIN)
	@for t in $(NATIVE_TESTS); do \
	  $(CC) -O1 -g -DLK_DEBUG $(STRICT_CFLAGS) $(SANITIZE) native/*.c native/tests/$$t.c -o $(NATIVE_BIN)/$$t-asan && \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(NATIVE_BIN)/$$t-asan || exit 1; done
	@$(MAKE) --no-print-directory $(FUZZ_BIN)
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(FUZZ_BIN) -q native/fuzz/regressions/*
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 FUZZ_FAILURE_DIR=$(NATIVE_BIN) \
	  $(FUZZ_BIN) -t 3 -n 50000
	@echo "test-asan: native tests pass under ASan + UBSan"

# The fuzz target of the C decoders (native/fuzz): every function that reads untrusted
# bytes, checked against the header's contract and against each other, under ASan + UBSan
# and the segment's invariant checker. gcc has no fuzzing engine, so native/fuzz/driver.c
# mutates seed batches itself; where clang is installed, a libFuzzer build runs too.
# `make fuzz-native` runs FUZZ_SECONDS (default 300); test-asan runs 3 seconds. A failing
# input is saved to $(NATIVE_BIN)/fuzz-decoders-failure.bin; replay it with
# `$(FUZZ_BIN) FILE`.
FUZZ_BIN := $(NATIVE_BIN)/fuzz_decoders-asan
FUZZ_SOURCES := native/fuzz/fuzz_decoders.c native/fuzz/driver.c native/fuzz/fuzz.h
FUZZ_SECONDS ?= 300
CLANG := $(shell command -v clang 2>/dev/null)

$(FUZZ_BIN): $(NATIVE_SOURCES) $(FUZZ_SOURCES)
	@mkdir -p $(NATIVE_BIN)
	$(CC) -O1 -g -DLK_DEBUG $(STRICT_CFLAGS) $(SANITIZE) native/*.c native/fuzz/fuzz_decoders.c \
	  native/fuzz/driver.c -o $@

fuzz-native: $(FUZZ_BIN)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 FUZZ_FAILURE_DIR=$(NATIVE_BIN) \
	  $(FUZZ_BIN) -t $(FUZZ_SECONDS) -n 1000000000
ifneq ($(CLANG),)
	$(CLANG) -O1 -g -DLK_DEBUG $(STRICT_CFLAGS) -fsanitize=fuzzer,address,undefined \
	  native/*.c native/fuzz/fuzz_decoders.c -o $(NATIVE_BIN)/fuzz_decoders-libfuzzer
	@mkdir -p $(NATIVE_BIN)/fuzz-corpus
	$(FUZZ_BIN) -w $(NATIVE_BIN)/fuzz-corpus
	$(NATIVE_BIN)/fuzz_decoders-libfuzzer -max_total_time=$(FUZZ_SECONDS) \
	  -artifact_prefix=$(NATIVE_BIN)/ $(NATIVE_BIN)/fuzz-corpus native/fuzz/regressions
endif

# Benchmarks beside their peers (crc32c, google-crc32c, kafka-python); prints ratios.
bench: $(VENV)/.installed-test
	@$(BIN)/python -m compileall -q logkernel
	$(BIN)/python -m pytest bench --benchmark-columns=min,median,ops -q

# ruff and mypy, pinned in the test extras so a new release cannot fail CI by itself.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check logkernel tests bench
	$(BIN)/mypy logkernel

clean:
	rm -rf $(VENV) build *.egg-info logkernel/_native.* $(NATIVE_BIN) .pytest_cache .benchmarks
	find logkernel tests bench -name __pycache__ -type d -prune -exec rm -rf {} +
