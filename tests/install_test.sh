#!/usr/bin/env bash
# install_test.sh: the library as an application gets it. Installs a build
# tree into a temporary prefix, moves the prefix (the installed tree must be
# relocatable), checks the installed files and the shared library's exports,
# runs the installed `ctxshift --version`, then builds examples/ against the
# prefix twice, with pkg-config and with find_package(ctxshift) (shared and
# static), and runs them on the bundled model.
#
# usage: tests/install_test.sh <build dir> <source dir> <libdir> <version> [cmake] [cc]
#   libdir: CMAKE_INSTALL_LIBDIR of the build ("lib", "lib/x86_64-linux-gnu", ...)
#
# Each check prints "ok" or "FAIL" (with the reason); the last line is
# "N passed, M failed". Exit status: 0 when nothing failed, 1 otherwise, 2 for
# bad arguments.
set -u

if [ $# -lt 4 ]; then
    echo "usage: $0 <build dir> <source dir> <libdir> <version> [cmake] [cc]" >&2
    exit 2
fi
BUILD=$1
SRC=$2
LIBDIR=$3
VERSION=$4
CMAKE=${5:-cmake}
CC=${6:-cc}
MODEL="$SRC/models/stories260K-f32.gguf"
# llama.cpp c392e509, greedy, 32 tokens (as in cli_test.sh).
EXPECT_32="Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cs-install-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# The examples must find everything through the prefix, not the environment.
unset LD_LIBRARY_PATH PKG_CONFIG_PATH CMAKE_PREFIX_PATH

# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"

# ------------------------------------------------------------- install
if "$CMAKE" --install "$BUILD" --prefix "$TMP/first" >"$TMP/out" 2>"$TMP/err"; then
    ok "cmake --install into a temporary prefix"
else
    fail "cmake --install" "exit status $?"
    echo "$n_pass passed, $n_fail failed"
    exit 1
fi
# Everything below uses the moved tree: RPATH and ctxshift.pc are relative.
mv "$TMP/first" "$TMP/prefix"
P="$TMP/prefix"
L="$P/$LIBDIR"

SOVERSION=$(echo "$VERSION" | sed -E 's/^0\.([0-9]+)\..*/0.\1/; s/^([1-9][0-9]*)\..*/\1/')
missing=""
for f in include/ctxshift.h "$LIBDIR/libctxshift.a" "$LIBDIR/libctxshift.so" \
    "$LIBDIR/libctxshift.so.$SOVERSION" "$LIBDIR/libctxshift.so.$VERSION" bin/ctxshift \
    "$LIBDIR/pkgconfig/ctxshift.pc" "$LIBDIR/cmake/ctxshift/ctxshift-config.cmake" \
    "$LIBDIR/cmake/ctxshift/ctxshift-config-version.cmake" \
    "$LIBDIR/cmake/ctxshift/ctxshift-targets.cmake"; do
    [ -e "$P/$f" ] || missing="$missing $f"
done
if [ -z "$missing" ]; then ok "installed files present"; else fail "installed files" "missing:$missing"; fi

if readelf -d "$L/libctxshift.so" | grep -q "SONAME.*\[libctxshift.so.$SOVERSION\]"; then
    ok "soname libctxshift.so.$SOVERSION"
else
    fail "soname" "$(readelf -d "$L/libctxshift.so" | grep SONAME)"
fi

# The shared library exports exactly the CS_API functions of ctxshift.h.
nm -D --defined-only "$L/libctxshift.so" | awk '{print $3}' | sort >"$TMP/exported"
grep -oE '^CS_API [^(]*\(' "$P/include/ctxshift.h" | grep -oE 'cs_[a-z0-9_]+\($' | tr -d '(' |
    sort >"$TMP/declared"
if [ -s "$TMP/declared" ] && cmp -s "$TMP/exported" "$TMP/declared"; then
    ok "libctxshift.so exports exactly the $(wc -l <"$TMP/declared") CS_API functions"
else
    fail "exports" "$(diff "$TMP/declared" "$TMP/exported" | head -n 5 | tr '\n' ' ')"
fi

# The static archive defines the same global symbols (internal ones are
# local after the prelink), so it cannot clash with another library's
# internal names (e.g. ggml's quantize_row_q4_0_ref) in a user's link.
nm --defined-only --extern-only "$L/libctxshift.a" 2>/dev/null | awk 'NF == 3 {print $3}' |
    sort >"$TMP/static_globals"
if [ -s "$TMP/declared" ] && cmp -s "$TMP/static_globals" "$TMP/declared"; then
    ok "libctxshift.a defines exactly the $(wc -l <"$TMP/declared") CS_API functions globally"
else
    fail "static globals" "$(diff "$TMP/declared" "$TMP/static_globals" | head -n 5 | tr '\n' ' ')"
fi

# ------------------------------------------------------ installed command
BIN="$P/bin/ctxshift"
run --version
if [ "$RC" -eq 0 ] && grep -qE "^ctxshift $VERSION \(kernels = [a-z0-9_]+" "$TMP/out"; then
    ok "installed ctxshift --version: $(cat "$TMP/out")"
else
    fail "installed ctxshift --version" "exit status $RC, output '$(cat "$TMP/out")'"
fi
loaded=$(ldd "$BIN" | awk '/libctxshift/ {print $3}')
if [ -n "$loaded" ] && [ "$(realpath "$(dirname "$loaded")")" = "$(realpath "$L")" ]; then
    ok "installed ctxshift loads the installed libctxshift.so (RPATH)"
else
    fail "installed ctxshift RPATH" "$(ldd "$BIN" | grep ctxshift)"
fi

# check_simple NAME EXE: the generate example gives llama.cpp's greedy text.
check_simple() {
    local name=$1 exe=$2
    "$exe" -m "$MODEL" -n 32 "Once upon a time" >"$TMP/out" 2>"$TMP/err"
    RC=$?
    if [ "$RC" -eq 0 ] && [ "$(cat "$TMP/out")" = "$EXPECT_32" ]; then
        ok "$name: simple prints llama.cpp's greedy 32 tokens"
    else
        fail "$name: simple" "exit status $RC, output '$(head -c 200 "$TMP/out")'"
    fi
}

# check_chat NAME EXE: the chat example runs past a 64-cell context.
check_chat() {
    local name=$1 exe=$2
    "$exe" -m "$MODEL" -c 64 -n 24 -k 1 >"$TMP/out" 2>"$TMP/err" <<'TURNS'
Once upon a time, there was a cat.
The cat wanted to play with the ball.
Then the dog came.
They went to the park together.
TURNS
    RC=$?
    local shifts decoded turns last
    shifts=$(grep -c '^\[context shift: ' "$TMP/err")
    decoded=$(sed -nE 's/^chat: ([0-9]+) turns, ([0-9]+) tokens decoded, n_ctx 64, ([0-9]+) context shifts$/\2/p' "$TMP/err")
    turns=$(grep -c '^> ' "$TMP/out")
    # The answer to the last turn (the line after the last prompt) is text.
    last=$(awk '/^> /{getline; a=$0} END{print a}' "$TMP/out")
    if [ "$RC" -ne 0 ]; then
        fail "$name: chat" "exit status $RC"
    elif [ "$turns" -ne 4 ] || [ "$shifts" -lt 1 ] || [ -z "$decoded" ] || [ "$decoded" -le 64 ]; then
        fail "$name: chat" "$turns turns, $shifts shifts, '${decoded}' tokens decoded (want 4, >= 1, > 64)"
    elif ! echo "$last" | grep -q '[a-z]'; then
        fail "$name: chat" "no answer after the last shift: '$last'"
    else
        ok "$name: chat ran past n_ctx 64: $decoded tokens, $shifts context shifts"
    fi
}

# ---------------------------------------------------------- pkg-config
export PKG_CONFIG_PATH="$L/pkgconfig"
if [ "$(pkg-config --modversion ctxshift 2>&1)" = "$VERSION" ]; then
    ok "pkg-config --modversion ctxshift = $VERSION"
else
    fail "pkg-config --modversion" "$(pkg-config --modversion ctxshift 2>&1)"
fi
static_libs=$(pkg-config --static --libs ctxshift 2>&1)
if echo "$static_libs" | grep -q -- "-lpcre2-8" && echo "$static_libs" | grep -q -- "-lm"; then
    ok "pkg-config --static --libs names pcre2 and libm"
else
    fail "pkg-config --static --libs" "'$static_libs'"
fi
# shellcheck disable=SC2046 # pkg-config's flags are meant to be split
if "$CC" -std=c99 -pedantic -Wall -Wextra -Werror -o "$TMP/simple-pc" "$SRC/examples/simple.c" \
    $(pkg-config --cflags --libs ctxshift) -Wl,-rpath,"$L" >"$TMP/out" 2>"$TMP/err" &&
    "$CC" -std=c11 -Wall -Wextra -Werror -o "$TMP/chat-pc" "$SRC/examples/chat.c" \
        $(pkg-config --cflags --libs ctxshift) -Wl,-rpath,"$L" >"$TMP/out" 2>"$TMP/err"; then
    ok "pkg-config: examples build (simple.c as C99 -pedantic)"
    check_simple pkg-config "$TMP/simple-pc"
    check_chat pkg-config "$TMP/chat-pc"
else
    fail "pkg-config: examples build" "$(head -n 5 "$TMP/err" | tr '\n' ' ')"
fi
# A program with its own globals named like ctxshift's internals (and
# ggml's kernels) links statically against libctxshift.a without a clash.
cat >"$TMP/clash.c" <<'EOF_C'
#include <stdio.h>
#include <string.h>
#include "ctxshift.h"
void matmul(void);
void matmul(void) {}
int quantize_row_q4_0_ref = 1, mem_malloc = 2, threadpool_new = 3;
int main(void) {
    matmul();
    /* cs_decode(NULL, NULL) pulls in the decode path (forward, matmul) and
     * must answer CS_ERR_INVALID_ARG */
    return strcmp(cs_version(), CS_VERSION_STRING) != 0 || cs_decode(NULL, NULL) == CS_OK ||
           quantize_row_q4_0_ref + mem_malloc + threadpool_new != 6;
}
EOF_C
# shellcheck disable=SC2046 # pkg-config's flags are meant to be split
if "$CC" -std=c11 -o "$TMP/clash" "$TMP/clash.c" $(pkg-config --cflags ctxshift) "$L/libctxshift.a" \
    $(pkg-config --static --libs-only-other --libs-only-L ctxshift) -lpcre2-8 -lm -pthread \
    >"$TMP/out" 2>"$TMP/err" && "$TMP/clash"; then
    ok "static link next to globals named matmul, quantize_row_q4_0_ref, mem_malloc: no clash"
else
    fail "static link clash" "$(head -n 5 "$TMP/err" | tr '\n' ' ')"
fi
unset PKG_CONFIG_PATH

# --------------------------------------------------------------- CMake
for variant in shared static; do
    flag=OFF
    [ "$variant" = static ] && flag=ON
    B="$TMP/examples-$variant"
    if "$CMAKE" -S "$SRC/examples" -B "$B" -DCMAKE_PREFIX_PATH="$P" -DCMAKE_C_COMPILER="$CC" \
        -DCS_EXAMPLES_STATIC=$flag >"$TMP/out" 2>"$TMP/err" &&
        "$CMAKE" --build "$B" >"$TMP/out" 2>"$TMP/err"; then
        ok "find_package(ctxshift): examples build ($variant)"
        if [ "$variant" = static ] && ldd "$B/simple" | grep -q libctxshift; then
            fail "static: simple" "links libctxshift.so"
        fi
        check_simple "cmake-$variant" "$B/simple"
        check_chat "cmake-$variant" "$B/chat"
    else
        fail "find_package(ctxshift): examples build ($variant)" "$(tail -n 5 "$TMP/err" | tr '\n' ' ')"
    fi
done

echo "$n_pass passed, $n_fail failed"
[ "$n_fail" -eq 0 ]
