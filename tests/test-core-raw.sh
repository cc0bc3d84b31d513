#!/bin/bash
# Raw driver and core basics through vdconvert: probing, holes, round trips,
# errors for missing files and unknown formats, no temp files left behind.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img

# A raw disk with data, a hole and explicit zeroes.
python3 - "$T/a.raw" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    f.truncate(64 << 20)
    f.seek(1 << 20); f.write(os.urandom(3 << 20))
    f.seek(10 << 20); f.write(b"\0" * (2 << 20))
    f.seek((64 << 20) - 4096); f.write(b"end" * 100)
PY
"$VDCONVERT" "$T/a.raw" "$T/b.raw"
cmp "$T/a.raw" "$T/b.raw" || fail "raw -> raw differs"
# holes stay holes: the copy allocates about what the data needs (3 MiB + tail)
used=$(du -k "$T/b.raw" | cut -f1)
[ "$used" -lt 8192 ] || fail "raw copy not sparse: ${used} KiB allocated"
qemu-img compare -f raw -F raw "$T/a.raw" "$T/b.raw" >/dev/null || fail "qemu-img compare"

# info
"$VDCONVERT" info "$T/a.raw" | matches "file format: raw" || fail "info format"
"$VDCONVERT" info --json "$T/a.raw" | matches '"virtual-size": 67108864' || fail "info json"

# create
"$VDCONVERT" create -O raw "$T/c.raw" 1M
[ "$(stat -c %s "$T/c.raw")" = 1048576 ] || fail "create size"
if "$VDCONVERT" create -O raw "$T/c.raw" 1M 2>"$T/err"; then fail "create over existing file succeeded"; fi
grep -q "already exists" "$T/err" || fail "create error message: $(cat "$T/err")"

# errors: missing input, unknown format; nothing left behind
if "$VDCONVERT" "$T/missing.raw" "$T/out.raw" 2>"$T/err"; then fail "missing input accepted"; fi
grep -q "missing.raw" "$T/err" || fail "error does not name the file: $(cat "$T/err")"
if "$VDCONVERT" -O nosuchformat "$T/a.raw" "$T/out.img" 2>"$T/err"; then fail "unknown format accepted"; fi
grep -q "nosuchformat" "$T/err" || fail "error does not name the format"
ls "$T" | matches vdtmp && fail "temp file left behind"
[ ! -e "$T/out.img" ] || fail "output left after failure"
echo "ok"
