#!/usr/bin/env bash
# avxvnni_twin_test.sh: the "avxvnni" kernels (VEX-encoded vpdpbusd /
# vpdpwssd, AVX-VNNI) run only on CPUs with AVX-VNNI, which the development
# and CI machines (Zen 4) lack; their bit-exact tests run the twin table
# "avxvnni_evex" instead, the same source with the EVEX encoding
# (src/kernels/x16_avxvnni.c). This checks, on the built objects, that the
# twin is the same machine code apart from that encoding, so what the tests
# verify is what an AVX-VNNI CPU runs:
#   1. both objects disassemble to the same instruction stream once the
#      "{vex}" mark, the "_evex" symbol suffix, addresses and alignment
#      padding (nops) are set aside;
#   2. every vpdpbusd / vpdpwssd in x16_avxvnni.c.o is VEX-encoded (first
#      byte c4 or c5) and every one in x16_avxvnni_evex.c.o EVEX (62), and
#      there are as many of each, more than none.
#
# usage: tests/avxvnni_twin_test.sh BUILD_DIR | OBJECT... (the objects, or
# a build folder to find them in; the two are picked by name). Exit 0 on
# success, 1 on a difference, 2 when the objects or objdump are missing.
set -u

objs=("$@")
if [ $# -eq 1 ] && [ -d "$1" ]; then
    mapfile -t objs < <(find "$1" -name 'x16_avxvnni*.c.o')
fi
vex="" evex=""
for o in "${objs[@]}"; do
    case "$o" in
        *x16_avxvnni.c.o) vex=$o ;;
        *x16_avxvnni_evex.c.o) evex=$o ;;
    esac
done
if [ -z "$vex" ] || [ -z "$evex" ] || [ ! -f "$vex" ] || [ ! -f "$evex" ]; then
    echo "error: x16_avxvnni.c.o / x16_avxvnni_evex.c.o not among the objects given" >&2
    exit 2
fi
command -v objdump >/dev/null || { echo "error: objdump (binutils) not found" >&2; exit 2; }

# the instruction stream: mnemonic and operands, no addresses, no nops
norm() {
    objdump -d --no-show-raw-insn "$1" |
        sed -n 's/^ *[0-9a-f]\+:\t//p' |
        sed 's/{vex} //; s/-\?0x[0-9a-f]\+(%rip)/(%rip)/g; s/_evex//g; s/[0-9a-f]\+ <\([^>+]*\)\(+0x[0-9a-f]*\)\?>/<\1>/g' |
        grep -vE '^(data16 |cs )*(nop|xchg +%ax,%ax)'
}
fail=0
a=$(mktemp) b=$(mktemp)
trap 'rm -f "$a" "$b"' EXIT
norm "$vex" >"$a"
norm "$evex" >"$b"
if ! cmp -s "$a" "$b"; then
    echo "FAIL: the two objects differ beyond the VNNI encoding:"
    diff "$a" "$b" | head -20
    fail=1
else
    echo "ok: same instruction stream ($(wc -l <"$a") instructions)"
fi

# the raw bytes of each VNNI instruction: its first byte names the encoding
first_bytes() {
    objdump -d "$1" | grep -E 'vpdp(busd|wssd)' | awk -F'\t' '{split($2, b, " "); print b[1]}'
}
nv=$(first_bytes "$vex" | grep -cE '^c[45]$')
nv_all=$(first_bytes "$vex" | wc -l)
ne=$(first_bytes "$evex" | grep -c '^62$')
ne_all=$(first_bytes "$evex" | wc -l)
if [ "$nv_all" -eq 0 ] || [ "$nv" -ne "$nv_all" ] || [ "$ne" -ne "$ne_all" ] ||
    [ "$nv_all" -ne "$ne_all" ]; then
    echo "FAIL: VNNI instructions: $nv of $nv_all VEX in $vex, $ne of $ne_all EVEX in $evex"
    fail=1
else
    echo "ok: $nv_all VNNI instructions, VEX in the avxvnni object and EVEX in its twin"
fi
exit $fail
