#!/bin/bash
# test-error-messages: what a message shows from image metadata stays one
# line: control characters in a backing file name (newline, ESC sequences)
# come out escaped, in errors and in `info`; a backing chain deeper than 64
# files says so first, naming the top file and the one too deep, however
# long the names are.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img

cd "$T"
# --- control characters from a backing file name ---------------------------
qemu-img create -q -f qcow2 -u -b $'evil\n\e[31mname\x7f.raw' -F raw ctl.qcow2 1M
rc=0; msg=$("$VDCONVERT" info ctl.qcow2 2>&1 >/dev/null) || rc=$?
[ $rc != 0 ] || fail "a missing backing file was accepted"
[ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] || fail "not one line: $msg"
printf '%s' "$msg" | matches $'[\x01-\x1f\x7f]' && fail "control characters in: $(printf '%q' "$msg")"
grep -qF 'evil\n\e[31mname\x7f.raw' <<<"$msg" || fail "not escaped as expected: $msg"
echo "ok: $msg"

# --- a chain deeper than 64 files -------------------------------------------
# Long names: with every level's name in front, the reason would be cut off.
long=$(printf 'l%.0s' $(seq 1 40))
"$VDCONVERT" create -O qcow2 "c0-$long.qcow2" 1M >/dev/null
for i in $(seq 1 64); do
    qemu-img create -q -f qcow2 -u -b "c$((i - 1))-$long.qcow2" -F qcow2 "c$i-$long.qcow2" 1M
done
"$VDCONVERT" info "c63-$long.qcow2" >/dev/null || fail "a chain of 64 files does not open"
rc=0; msg=$("$VDCONVERT" info "c64-$long.qcow2" 2>&1 >/dev/null) || rc=$?
[ $rc != 0 ] || fail "a chain of 65 files opened"
[ "$msg" = "vdconvert: c64-$long.qcow2: backing chain deeper than 64 files (c0-$long.qcow2 is file 65)" ] ||
    fail "chain depth message: $msg"
echo "ok: $msg"
