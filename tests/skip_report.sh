#!/usr/bin/env bash
# skip_report.sh: the skipped tests of `make test`, by name and count, from
# ctest's JUnit files (ctest --output-junit). A skipped test is one that
# exited 77 (tests/test.h, tests/cli_lib.sh): its "skip" lines say why.
# usage: tests/skip_report.sh LABEL=JUNIT.xml ...
# Always exits 0: whether a skip fails the run is decided by the tests.
set -u
total=0
report=""
for arg in "$@"; do
    label=${arg%%=*}
    file=${arg#*=}
    if [ ! -f "$file" ]; then
        report+="$label: no results ($file missing)"$'\n'
        continue
    fi
    # "T name" per skipped test, "R reason" per "skip" line of its output
    # (a cmocka test's function name appended), XML entities decoded.
    lines=$(awk '
        /<testcase / {
            inside = index($0, "status=\"notrun\"") > 0
            match($0, /name="[^"]*"/)
            if (inside) print "T " substr($0, RSTART + 6, RLENGTH - 7)
            next
        }
        { sub(/^.*<system-out>/, "") }
        inside && /^skip / { if (why != "") print "R " why; why = $0 }
        # cmocka names the test right after the skip (its closing list is left out)
        inside && why != "" && /\[  SKIPPED \] / {
            sub(/^.*\[  SKIPPED \] */, ""); print "R " why " [" $0 "]"; why = ""
        }
        /<\/testcase>/ { if (inside && why != "") print "R " why; inside = 0; why = "" }
    ' "$file" | sed -e 's/&apos;/'"'"'/g' -e 's/&quot;/"/g' -e 's/&lt;/</g' -e 's/&gt;/>/g' \
        -e 's/&amp;/\&/g')
    n=$(printf '%s\n' "$lines" | grep -c '^T ')
    total=$((total + n))
    report+="$label: $n skipped"$'\n'
    while read -r kind text; do
        case "$kind" in
        T) report+="  $text"$'\n' ;;
        R) report+="      $text"$'\n' ;;
        esac
    done <<<"$lines"
done
echo
echo "== skipped tests: $total"
printf '%s' "$report"
