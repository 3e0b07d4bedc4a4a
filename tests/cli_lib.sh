# cli_lib.sh: helpers shared by the tests/*_test.sh scripts. Source it after
# setting BIN (the ctxshift binary), SHARED (the shared/ folder or "") and
# TMP (a scratch folder). End the script with test_exit.
#
# Skips (the rules of tests/test.h): `skip NAME REASON` is a reference check
# (llama.cpp data in the shared folder, a peer, a tool the project installs:
# python3, node); `skip NAME REASON cpu` is one this CPU cannot run. A
# reference skip is a failure when the run is strict: env CI set (non-empty,
# not "0"/"false") or the shared folder exists. test_exit exits 1 when a check
# failed, 77 (ctest's SKIP_RETURN_CODE) when one skipped, 0 otherwise.

n_pass=0
n_fail=0
n_skip=0
ok() { n_pass=$((n_pass + 1)); echo "ok   $1"; }

# Prints why a reference skip must fail and succeeds, or fails when it may skip.
test_strict_why() {
    case "${CI:-}" in
    "" | 0 | false) ;;
    *)
        echo "CI is set"
        return 0
        ;;
    esac
    if [ -n "${SHARED:-}" ] && [ -e "$SHARED" ]; then
        echo "$SHARED exists"
        return 0
    fi
    return 1
}

skip() {
    local why
    if [ "${3:-reference}" != cpu ] && why=$(test_strict_why); then
        n_fail=$((n_fail + 1))
        echo "FAIL $1: reference check cannot run ($2) and $why: a failure, not a skip"
        return
    fi
    n_skip=$((n_skip + 1))
    echo "skip $1 (${3:-reference}: $2)"
}

test_exit() {
    [ "$n_fail" -eq 0 ] || exit 1
    [ "$n_skip" -eq 0 ] || exit 77
    exit 0
}
fail() {
    n_fail=$((n_fail + 1))
    echo "FAIL $1: $2"
    if [ -s "$TMP/err" ]; then
        echo "     stderr (last lines):"
        tail -n 5 "$TMP/err" | sed 's/^/       /'
    fi
}

# Run the binary: stdout in $TMP/out, stderr in $TMP/err, exit status in RC.
RC=0
run() {
    "$BIN" "$@" >"$TMP/out" 2>"$TMP/err"
    RC=$?
}

have_shared() { [ -n "$SHARED" ] && [ -d "$SHARED" ]; }

# check_rc NAME EXPECTED_RC [STDERR_SUBSTRING] -- ARGS...
check_rc() {
    local name=$1 want=$2 needle=$3
    shift 4
    run "$@"
    if [ "$RC" -ne "$want" ]; then
        fail "$name" "exit status $RC, expected $want"
    elif [ -n "$needle" ] && ! grep -qF -- "$needle" "$TMP/err"; then
        fail "$name" "stderr lacks '$needle'"
    else
        ok "$name"
    fi
}


# ------------------------------------------------- llama.cpp peer programs
# The prebuilt llama.cpp of node-llama-cpp 3.21.1 (bench/peer/node_modules):
# its libraries and the git bundle of the source it was built from.
PEER_BINS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bench/peer/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
PEER_BUNDLE="$(dirname "$PEER_BINS")/../../../node-llama-cpp/llama/gitRelease.bundle"

# peer_build OUT SRC [DEP...]: compile the C program SRC against llama.h of
# the bundled source and link the prebuilt libllama (RPATH to it) into OUT,
# unless OUT is newer than SRC and every DEP and was linked against this
# checkout's PEER_BINS (OUT.bins records it: OUT lives in a shared temporary
# folder, and a binary built by another checkout points its RPATH at that
# checkout's libraries, which may be gone). Returns non-zero (compiler
# output in $TMP/err) when it cannot. Cost: a checkout of two include
# folders from the bundle and one compile, the first time only.
peer_build() {
    local out=$1 src=$2 dep stale=0
    shift 2
    [ -x "$out" ] && [ ! "$src" -nt "$out" ] || stale=1
    for dep in "$@"; do [ "$dep" -nt "$out" ] && stale=1; done
    [ "$(cat "$out.bins" 2>/dev/null)" = "$PEER_BINS" ] || stale=1
    [ "$stale" -eq 1 ] || return 0
    local tree
    tree=$(mktemp -d "${TMPDIR:-/tmp}/cs-peer-src.XXXXXX") || return 1
    {
        git clone -q --no-checkout "$PEER_BUNDLE" "$tree/src" &&
            git -C "$tree/src" -c advice.detachedHead=false checkout -q HEAD -- include ggml/include &&
            mkdir -p "$(dirname "$out")" &&
            ${CC:-cc} -std=c11 -O2 -Wall -Wextra -Werror -I"$tree/src/include" \
                -I"$tree/src/ggml/include" "$src" -o "$out" "$PEER_BINS/libllama.v0.4.0.so" \
                "$PEER_BINS/libggml.v0.4.0.so" "$PEER_BINS/libggml-base.so" -lm -Wl,-rpath,"$PEER_BINS" &&
            printf '%s\n' "$PEER_BINS" >"$out.bins"
    } >"$TMP/err" 2>&1
    local rc=$?
    rm -rf "$tree"
    return $rc
}

# test_outdir NAME [DIR]: the scratch folder of a test script in OUT: DIR when
# given (kept), else a fresh temporary one removed at exit.
test_outdir() {
    if [ -n "${2:-}" ]; then
        OUT=$2
        mkdir -p "$OUT"
    else
        OUT=$(mktemp -d "${TMPDIR:-/tmp}/cs-$1.XXXXXX")
        # shellcheck disable=SC2064 # expand now: the folder of this run
        trap "rm -rf '$OUT'" EXIT
    fi
}
