#!/bin/bash
# --keep-uuid: a VDI converted to VDI keeps its image UUID (VirtualBox
# migrations); without it every new image gets a fresh one; formats without
# an image UUID refuse the flag with one line and leave nothing behind.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img
uuid() { "$VDCONVERT" info "$1" | sed -n 's/^ *uuid: //p'; }
qemu-img create -q -f raw "$T/a.raw" 8M
qemu-img convert -O vdi "$T/a.raw" "$T/a.vdi"
"$VDCONVERT" --keep-uuid "$T/a.vdi" "$T/kept.vdi"
"$VDCONVERT" "$T/a.vdi" "$T/fresh.vdi"
u=$(uuid "$T/a.vdi")
[ -n "$u" ] || fail "no uuid in info"
[ "$(uuid "$T/kept.vdi")" = "$u" ] || fail "--keep-uuid did not keep $u"
[ "$(uuid "$T/fresh.vdi")" != "$u" ] || fail "a plain conversion reused the UUID"
qemu-img check -q "$T/kept.vdi" && qemu-img compare -q "$T/a.vdi" "$T/kept.vdi" || fail "kept.vdi"
# python reads the header field directly: creation UUID at 0x188
python3 - "$T/kept.vdi" "$u" <<'PY'
import sys, uuid
d = open(sys.argv[1], "rb").read(0x198)
assert str(uuid.UUID(bytes_le=d[0x188:0x198])) == sys.argv[2], "header UUID differs"
PY
for bad in "$T/a.raw:$T/x.vdi" "$T/a.vdi:$T/x.qcow2"; do
    if "$VDCONVERT" --keep-uuid "${bad%%:*}" "${bad##*:}" 2>"$T/err"; then fail "accepted $bad"; fi
    [ "$(grep -cv '^WARNING: \|^         ' "$T/err")" = 1 ] || fail "error not one line"
    [ ! -e "${bad##*:}" ] || fail "output left behind"
done
echo ok
