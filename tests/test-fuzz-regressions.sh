#!/bin/bash
# Every input a fuzzer found (tests/fuzz/regressions/) goes through info, map,
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
        rm -f "$T/out.raw"
    done
    n=$((n + 1))
done
echo "$n regression inputs ok"
