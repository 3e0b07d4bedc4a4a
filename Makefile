# The two commands of a fresh Debian machine: `make run` and `make test`.
# A plain `make` builds the Release binaries without running anything.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
RELEASE := build/release
ASAN := build/asan
CMAKE_FLAGS ?=

.PHONY: all deps release asan run test test-release test-asan format clean bench fuzz install

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

# The demo: a story from the bundled stories260K model.
run: deps
	@$(MAKE) --no-print-directory release
	$(RELEASE)/ctxshift run -p "Once upon a time" -n 600 -c 256 --temp 0.8 --seed 42 --ignore-eos --kv-map

test-release: deps
	@$(MAKE) --no-print-directory release
	cd $(RELEASE) && ctest --output-on-failure --no-tests=error -j $(JOBS)

test-asan: deps
	@$(MAKE) --no-print-directory asan
	cd $(ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure --no-tests=error -j $(JOBS)

# Every test, twice: Release, then AddressSanitizer + UBSan.
test: test-release test-asan

format:
	clang-format -i include/*.h src/*.c src/*.h src/kernels/*.c src/kernels/*.h tools/*.c tools/*.h tests/*.c tests/*.h tests/fixtures/*.c tests/fixtures/*.h bench/*.c 2>/dev/null || true

# libFuzzer on the GGUF parser and the tokenizer (clang; FUZZ_SECONDS each).
FUZZ_SECONDS ?= 60
fuzz: deps
	CC=clang cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCS_FUZZ=ON -DCS_BUILD_TESTS=OFF -DCS_BUILD_TOOLS=OFF -DCS_BUILD_BENCH=OFF
	cmake --build build/fuzz -j $(JOBS)
	mkdir -p build/fuzz/corpus-gguf build/fuzz/corpus-tok
	cp models/stories260K-f32.gguf build/fuzz/corpus-gguf/
	build/fuzz/fuzz_gguf -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=4096 build/fuzz/corpus-gguf
	build/fuzz/fuzz_tokenizer -max_total_time=$(FUZZ_SECONDS) build/fuzz/corpus-tok

clean:
	rm -rf build
