# The two commands of a fresh Debian machine: `make run` and `make test`.
# A plain `make` builds the Release binaries without running anything.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
RELEASE := build/release
ASAN := build/asan
FUZZ := build/fuzz
CMAKE_FLAGS ?=
# The second compiler: clang, as the fuzz build (cc when clang is missing:
# the fuzz tests then report a skip).
FUZZ_CC ?= $(shell command -v clang >/dev/null 2>&1 && echo clang || echo cc)
# ctest exits non-zero on a failure; skips are tests that exited 77 (ctest's
# "Skipped"), listed by tests/skip_report.sh from the JUnit file.
CTEST := ctest --output-on-failure --no-tests=error --output-junit ctest-junit.xml

.PHONY: all deps release asan fuzz-build run test test-release test-asan test-fuzz format clean bench fuzz install

all: release

deps:
	@bash scripts/install-deps.sh

$(RELEASE)/Makefile:
	cmake -S . -B $(RELEASE) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

$(ASAN)/Makefile:
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCS_SANITIZE=ON $(CMAKE_FLAGS)

release: $(RELEASE)/Makefile
	cmake --build $(RELEASE) -j $(JOBS)

asan: $(ASAN)/Makefile
	cmake --build $(ASAN) -j $(JOBS)

# Install the Release build: ctxshift.h, libctxshift.so and .a, the ctxshift
# command, ctxshift.pc and the CMake package, under PREFIX (DESTDIR is
# honoured). The library folder is fixed when build/release is configured
# (GNUInstallDirs: "lib" unless CMAKE_FLAGS sets CMAKE_INSTALL_PREFIX=/usr).
PREFIX ?= /usr/local
install: release
	cmake --install $(RELEASE) --prefix $(PREFIX)

# The whole tree (library, tools, tests, bench, fuzz targets) with clang,
# libFuzzer + ASan + UBSan instrumentation, warnings as errors.
$(FUZZ)/Makefile:
	CC=$(FUZZ_CC) cmake -S . -B $(FUZZ) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCS_FUZZ=ON $(CMAKE_FLAGS)

fuzz-build: $(FUZZ)/Makefile
	cmake --build $(FUZZ) -j $(JOBS)

# The demo: a story from the bundled stories260K model.
run: deps
	@$(MAKE) --no-print-directory release
	$(RELEASE)/ctxshift run -p "Once upon a time" -n 600 -c 256 --temp 0.8 --seed 42 --ignore-eos --kv-map

test-release: deps
	@$(MAKE) --no-print-directory release
	rm -f $(RELEASE)/ctest-junit.xml
	cd $(RELEASE) && $(CTEST) -j $(JOBS)

# Label peer (the llama.cpp cross-check through node) runs once, in Release.
test-asan: deps
	@$(MAKE) --no-print-directory asan
	rm -f $(ASAN)/ctest-junit.xml
	cd $(ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(CTEST) -j $(JOBS) -LE peer

# The clang build, then each fuzz target a few seconds over its seed corpus.
test-fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build
	rm -f $(FUZZ)/ctest-junit.xml
	cd $(FUZZ) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 $(CTEST) -j $(JOBS) -L "fuzz|unit" -LE peer

# Every test, twice: Release, then AddressSanitizer + UBSan; the clang build
# (its unit tests, so clang's code generation meets the bit-exact kernel
# tests too) and the fuzz targets; then the skipped tests by name and count. A skip
# fails its test when CI is set or ../shared exists, except one for a missing
# instruction set (tests/test.h).
test: test-release test-asan test-fuzz
	@bash tests/skip_report.sh release=$(RELEASE)/ctest-junit.xml asan=$(ASAN)/ctest-junit.xml \
	  fuzz=$(FUZZ)/ctest-junit.xml

format:
	clang-format -i include/*.h src/*.c src/*.h src/kernels/*.c src/kernels/*.h tools/*.c tools/*.h tests/*.c tests/*.h tests/fixtures/*.c tests/fixtures/*.h tests/fuzz/*.c bench/*.c 2>/dev/null || true

# libFuzzer on the GGUF parser + model loader and on the tokenizer (clang;
# FUZZ_SECONDS each), from the committed seeds; new inputs stay in build/fuzz.
FUZZ_SECONDS ?= 60
fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build
	mkdir -p $(FUZZ)/corpus-gguf $(FUZZ)/corpus-tok
	$(FUZZ)/fuzz_gguf -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=4096 \
	  $(FUZZ)/corpus-gguf tests/fuzz/corpus/gguf
	$(FUZZ)/fuzz_tokenizer -max_total_time=$(FUZZ_SECONDS) $(FUZZ)/corpus-tok tests/fuzz/corpus/tokenizer

clean:
	rm -rf build
