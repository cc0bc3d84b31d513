#!/bin/bash
# Every image a fuzzer found (tests/fuzz/regressions/) goes through info, map,
# check and a conversion to raw within 2 s of CPU and 1 GiB of address space
# (outside the sanitizer build), ending with exit 0/1/2/3 and no crash.
. "$(dirname "$0")/lib.sh"
SAN=0
case "$(ldd "$VDCONVERT")" in *libasan*) SAN=1 ;; esac
n=0
for f in "$VD_SRC"/tests/fuzz/regressions/*; do
    [ -f "$f" ] || continue
    for cmd in "info $f" "map $f" "check $f" "-O raw $f $T/out.raw"; do
        rc=0
        if [ $SAN = 1 ]; then
            timeout 60 "$VDCONVERT" $cmd >/dev/null 2>"$T/err" || rc=$?
        else
            ( ulimit -t 2 -v 1048576; exec timeout 10 "$VDCONVERT" $cmd ) >/dev/null 2>"$T/err" || rc=$?
        fi
        [ $rc -le 3 ] || fail "vdconvert $cmd: exit $rc: $(head -3 "$T/err")"
        # ASan exits 1 too: its report is looked for
        if grep -q "Sanitizer" "$T/err"; then
            fail "vdconvert $cmd: $(grep -m3 -E 'ERROR|#[0-3] ' "$T/err")"
        fi
        rm -f "$T/out.raw"
    done
    n=$((n + 1))
done
# OVF descriptors a fuzzer found: ovatool info ends with 0 or 1 (ASan exits
# 1 too, so its report is looked for)
OVA=${OVATOOL:-$VD_BUILD/tools/ovatool/ovatool}
for f in "$VD_SRC"/tests/fuzz/regressions/ovf/*.ovf; do
    [ -f "$f" ] && [ -x "$OVA" ] || continue
    rc=0; timeout 60 "$OVA" info "$f" >/dev/null 2>"$T/err" || rc=$?
    if [ $rc -gt 1 ] || grep -q "Sanitizer" "$T/err"; then
        fail "ovatool info $f: exit $rc: $(grep -m3 -E 'ERROR|leak|#[0-3] ' "$T/err")"
    fi
    n=$((n + 1))
done
echo "$n regression inputs ok"
