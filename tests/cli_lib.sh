# cli_lib.sh: helpers shared by the tests/*_test.sh scripts. Source it after
# setting BIN (the ctxshift binary), SHARED (the shared/ folder or "") and
# TMP (a scratch folder).

n_pass=0
n_fail=0
n_skip=0
ok() { n_pass=$((n_pass + 1)); echo "ok   $1"; }
skip() { n_skip=$((n_skip + 1)); echo "skip $1 ($2)"; }
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

