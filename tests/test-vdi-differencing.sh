#!/bin/bash
# test-vdi-differencing: `vdconvert create -O vdi -b parent.vdi child.vdi`
# makes a differencing VDI (type 4) whose link UUID is the parent's creation
# UUID and whose parent-modification UUID is the parent's modification UUID;
# opening it finds the parent among the *.vdi files of its folder by that
# UUID (not by name: decoys and renames are handled), reads through the
# chain, and refuses a missing parent, a parent outside the folder, and UUID
# loops.  qemu-img cannot open differencing VDIs ("unsupported image type"),
# so the chain's content is checked against the parent's qemu-img view.
# Writes landing in the child (and not the parent) are checked by unit-vdi.
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3

D=$T/vms
mkdir -p "$D" "$T/elsewhere"
qemu-img create -q -f raw "$T/src.raw" 6M
qemu-io -f raw -c "write -P 0x5a 0 1M" -c "write -P 0xa5 3M 1536K" "$T/src.raw" >/dev/null
"$VDCONVERT" -O vdi "$T/src.raw" "$D/base disk.vdi" || fail "parent"
"$VDCONVERT" create -O vdi -b "base disk.vdi" "$D/child.vdi" || fail "create child"

uuids() {  # IMG -> "type create modify link parentmod"
    python3 - "$1" <<'EOF'
import struct, sys, uuid
h = open(sys.argv[1], 'rb').read(512)
u = lambda o: str(uuid.UUID(bytes_le=h[o:o + 16]))
print(struct.unpack_from('<I', h, 76)[0], u(392), u(408), u(424), u(440))
EOF
}
read -r ptype pcreate pmodify _ _ <<<"$(uuids "$D/base disk.vdi")"
read -r ctype ccreate _ clink cparent <<<"$(uuids "$D/child.vdi")"
[ "$ptype" = 1 ] && [ "$ctype" = 4 ] || fail "types $ptype/$ctype, want 1/4"
[ "$clink" = "$pcreate" ] || fail "child link UUID $clink != parent's UUID $pcreate"
[ "$cparent" = "$pmodify" ] || fail "child parent-modification UUID $cparent != $pmodify"
[ "$ccreate" != "$pcreate" ] || fail "child reuses the parent's UUID"
echo "ok: child header links to the parent"

read_chain() {  # IMG -> compares with the source
    rm -f "$T/out.raw"
    "$VDCONVERT" "$1" "$T/out.raw" || fail "read $1"
    cmp "$T/out.raw" "$T/parent-by-qemu.raw" || fail "$1: chain content != qemu's view of the parent"
}
qemu-img convert -f vdi -O raw "$D/base disk.vdi" "$T/parent-by-qemu.raw"
cmp "$T/parent-by-qemu.raw" "$T/src.raw" || fail "parent content"
"$VDCONVERT" info "$D/child.vdi" | matches "backing file: base disk.vdi" || fail "info: backing"
read_chain "$D/child.vdi"
echo "ok: child reads through its parent"

# decoys: other VDIs in the folder, and the parent renamed
"$VDCONVERT" create -O vdi "$D/decoy-a.vdi" 6M
qemu-img create -q -f vdi "$D/decoy-b.VDI" 6M
echo "not a vdi" >"$D/zz-garbage.vdi"
mv "$D/base disk.vdi" "$D/renamed.vdi"
read_chain "$D/child.vdi"
"$VDCONVERT" info "$D/child.vdi" | matches "backing file: renamed.vdi" || fail "renamed parent not found"
echo "ok: parent found by UUID among decoys after a rename"

# a chain of two: grandchild -> child -> parent
"$VDCONVERT" create -O vdi -b child.vdi "$D/grandchild.vdi" || fail "grandchild"
read_chain "$D/grandchild.vdi"
echo "ok: two-level chain"

expect_error() {  # PATTERN CMD...
    local pat=$1 msg
    shift
    if msg=$("$@" 2>&1); then fail "$*: succeeded, expected '$pat'"; fi
    grep -q -- "$pat" <<<"$msg" || fail "$*: error '$msg' lacks '$pat'"
    [ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] || fail "$*: error not one line: $msg"
    echo "ok (refused): $msg"
}

# parent outside the child's folder: refused at creation
cp "$D/renamed.vdi" "$T/elsewhere/p.vdi"
expect_error "child's folder" "$VDCONVERT" create -O vdi --allow-host-paths -b ../elsewhere/p.vdi "$D/x.vdi"
# a non-VDI parent
qemu-img create -q -f qcow2 "$D/q.qcow2" 6M
expect_error "must be a VDI" "$VDCONVERT" create -O vdi -b q.qcow2 "$D/y.vdi"

# parent missing
mv "$D/renamed.vdi" "$T/elsewhere/"
expect_error "no parent with UUID $pcreate" "$VDCONVERT" info "$D/child.vdi"
mv "$T/elsewhere/renamed.vdi" "$D/"

# qemu-img cannot read differencing VDIs (the reason there is no qemu peer)
if qemu-img info -f vdi "$D/child.vdi" >/dev/null 2>&1; then
    echo "note: this qemu-img opens differencing VDIs"
fi

# UUID loops: an image naming itself, and two images naming each other
python3 - "$D/renamed.vdi" "$D/self.vdi" "$D/loop-a.vdi" "$D/loop-b.vdi" <<'EOF'
import struct, sys, uuid
src = open(sys.argv[1], 'rb').read()
def make(path, me, parent):
    b = bytearray(src)
    struct.pack_into('<I', b, 76, 4)
    b[392:408] = me.bytes_le
    b[424:440] = parent.bytes_le
    open(path, 'wb').write(b)
a, b = uuid.uuid4(), uuid.uuid4()
make(sys.argv[2], a, a)
make(sys.argv[3], a, b)
make(sys.argv[4], b, a)
EOF
expect_error "own UUID" "$VDCONVERT" info "$D/self.vdi"
expect_error "loop" "$VDCONVERT" info "$D/loop-a.vdi"
expect_error "loop" "$VDCONVERT" "$D/loop-b.vdi" "$T/loop.raw"
