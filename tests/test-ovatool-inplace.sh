#!/bin/bash
# ovatool import reads a plain ustar disk member where it lies in the .ova
# (vd_open_opts.window_*), without extracting it, its manifest digest
# computed while it converts:
#  - the image reader never reads the .ova outside the member's bytes
#    (strace: every pread on the descriptor the member is opened through),
#    for a good import and for every hostile case below;
#  - two disks in one .ova each convert to their own data (each member's
#    end is its own: a reader that took the file's end would find the
#    other disk's or the archive's last bytes);
#  - hostile: a member cut short (its header size covers less than the
#    image), one whose header size swallows the next member, an image whose
#    grain directory lies past the member's end, a tar cut inside the member,
#    a reference to a member the archive lacks, a member stored twice: one
#    line naming the .ova, the member and (but for the last) an offset,
#    nothing left in the output folder;
#  - convert too reads the disks in place: copied from their members when
#    they pass through, converted from them otherwise, nothing extracted;
#  - a VMDK descriptor that names an extent member is still extracted (read
#    in place, it could not open its extent).
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3 strace
requires_ovatool

qemu-img create -q -f raw "$T/a.raw" 16M
qemu-io -f raw -c "write -P 0x5a 0 1M" -c "write -P 0xa5 15M 1M" "$T/a.raw" >/dev/null
qemu-img create -q -f raw "$T/b.raw" 8M
qemu-io -f raw -c "write -P 0x3c 1M 2M" "$T/b.raw" >/dev/null
"$OVA" export -n x --disk "$T/a.raw" --disk "$T/b.raw" -o "$T/x.ova" >/dev/null
members=$(tar -tf "$T/x.ova")
grep -qx x-disk2.vmdk <<<"$members" || fail "export wrote no x-disk2.vmdk: $(tar -tf "$T/x.ova")"

# window OVA MEMBER: "offset size" of the member's data in the archive
window() { python3 -c 'import sys, tarfile
m = tarfile.open(sys.argv[1]).getmember(sys.argv[2]); print(m.offset_data, m.size)' "$1" "$2"; }

# calls TRACE: the system calls of an strace -f log, one a line, without
# the pid; a call that strace split ("<unfinished ...>", then "<... NAME
# resumed>" when another thread ran between) joined again
calls() {
    python3 - "$1" <<'PY'
import re, sys
pending = {}
for line in open(sys.argv[1]):
    pid, _, rest = line.rstrip("\n").partition(" ")
    rest = rest.lstrip()
    if rest.endswith("<unfinished ...>"):
        pending[pid] = rest[: -len("<unfinished ...>")]
        continue
    r = re.match(r"<\.\.\. \w+ resumed>(.*)", rest)
    print(pending.pop(pid, "") + r.group(1) if r else rest)
PY
}

# confined STRACE OVA MEMBER: each descriptor the import opened as
# /proc/self/fd/N (a member read in place) reads inside one member's bytes
# only, from its open to its close; one of them read MEMBER
confined() {
    calls "$1" >"$T/calls" || fail "cannot read the strace log $1"
    python3 - "$T/calls" "$2" "$3" <<'PY' || fail "read outside a member's window (see above)"
import re, sys, tarfile
calls, ova, member = sys.argv[1:]
win = {m.name: (m.offset_data, m.offset_data + m.size) for m in tarfile.open(ova)}
open_fds, reads, bad = {}, {}, 0
for rest in open(calls):
    rest = rest.rstrip("\n")
    o = re.match(r'openat\(.*"/proc/self/fd/\d+".*\) = (\d+)<', rest)
    if o:
        open_fds[o.group(1)] = None      # the member it reads: from its first read
        continue
    c = re.match(r"close\((\d+)", rest)
    if c:
        open_fds.pop(c.group(1), None)
        continue
    c = re.match(r"(pread64|read)\((\d+)<([^>]*)>, .*?(\d+)(?:, (\d+))?\) = (-?\d+)", rest)
    if not c or c.group(2) not in open_fds or not c.group(3).endswith(".ova"):
        continue
    off, got = int(c.group(5) or -1), max(int(c.group(6)), 0)
    fd = c.group(2)
    if open_fds[fd] is None:
        open_fds[fd] = next((n for n, (lo, hi) in win.items() if lo <= off < hi), "?")
    lo, hi = win.get(open_fds[fd], (0, 0))
    reads[open_fds[fd]] = reads.get(open_fds[fd], 0) + 1
    if c.group(1) != "pread64" or off < lo or off + got > hi:
        print("outside %s [%d, %d): %s" % (open_fds[fd], lo, hi, rest[:160]))
        bad += 1
if not reads.get(member):
    print("no read of %s in place: %s" % (member, reads))
    bad += 1
print("in place, inside their windows: " + ", ".join("%d reads of %s" % (n, m) for m, n in reads.items()))
sys.exit(1 if bad else 0)
PY
}

# import_traced OVA OUT: import under strace ($T/trace), stderr in $T/err
import_traced() {
    traced -f -y -qq -s 0 -e trace=openat,close,read,pread64 -o "$T/trace" \
        "$OVA" import -O qcow2 -d "$2" "$1" >/dev/null 2>"$T/err"
}

# --- the good import: in place, confined, both disks right
import_traced "$T/x.ova" "$T/good" || fail "import: $(cat "$T/err")"
qemu-img compare -q "$T/a.raw" "$T/good/x-disk1.qcow2" || fail "disk 1 differs"
qemu-img compare -q "$T/b.raw" "$T/good/x-disk2.qcow2" || fail "disk 2 differs"
confined "$T/trace" "$T/x.ova" x-disk1.vmdk
confined "$T/trace" "$T/x.ova" x-disk2.vmdk
[ -z "$(ls -A "$T/good" | grep -v -e '^x-disk[12].qcow2$' -e '^x.xml$' -e '^x.sh$')" ] ||
    fail "import left other files: $(ls -A "$T/good")"

# tampered: one byte of x-disk1.vmdk's compressed data flipped, the manifest
# kept (its digest is computed while the member converts): refused by the
# digest, whatever the conversion made of the byte, and nothing left
python3 - "$T/x.ova" "$T/bad.ova" <<'PY'
import sys, tarfile
src, out = sys.argv[1:]
m = tarfile.open(src).getmember("x-disk1.vmdk")
b = bytearray(open(src, "rb").read())
b[m.offset_data + m.size // 2] ^= 0xff
open(out, "wb").write(b)
PY
rc=0; "$OVA" import -O qcow2 -d "$T/bad" "$T/bad.ova" >/dev/null 2>"$T/err" || rc=$?
[ $rc = 1 ] && [ "$(grep -c '^ovatool: ' "$T/err")" = 1 ] &&
    grep -q "^ovatool: .*SHA256 digest of x-disk1.vmdk does not match" "$T/err" ||
    fail "tampered member (rc $rc): $(cat "$T/err")"
[ -z "$(ls -A "$T/bad" 2>/dev/null)" ] || fail "tampered member: left $(ls -A "$T/bad")"

# retar SRC OUT CASE: SRC rewritten (ustar, manifest dropped: these cases are
# about the archive, not the digests) with x-disk1.vmdk changed by CASE
retar() {
    python3 - "$@" <<'PY'
import io, struct, sys, tarfile
src, out, case = sys.argv[1:]
t = tarfile.open(src)
members = [(m, t.extractfile(m).read()) for m in t.getmembers() if not m.name.endswith(".mf")]
with open(out, "wb") as f:
    for m, data in members:
        if m.name == "x-disk1.vmdk" and case == "short":     # the footer left out
            data = data[:-1024]
        if m.name == "x-disk1.vmdk" and case == "gd-past-end":
            # a monolithicSparse header's grain directory past the member
            data = bytearray(data)
            for at in (48, 56):     # the redundant and the main directory
                struct.pack_into("<Q", data, at, (len(data) + 4096) // 512)
            data = bytes(data)
        h = tarfile.TarInfo(m.name)
        h.size, h.mtime, h.mode = len(data), m.mtime, m.mode
        hb = bytearray(h.tobuf(tarfile.USTAR_FORMAT))
        if m.name == "x-disk1.vmdk" and case in ("long", "damaged"):
            # its header size covers the next member whole (a valid tar
            # without x-disk2.vmdk), or that member's header only
            nxt = members[[n.name for n, _ in members].index(m.name) + 1][1]
            extra = 512 + (len(nxt) + 511) // 512 * 512 if case == "long" else 512
            hb[124:136] = b"%011o\0" % (len(data) + (-len(data) % 512) + extra)
            hb[148:156] = b"        "
            hb[148:156] = b"%06o\0 " % sum(hb)
        if m.name == "x-disk1.vmdk" and case == "base256":  # as sizes >= 8 GiB are written
            hb[124:136] = b"\x80" + len(data).to_bytes(11, "big")
            hb[148:156] = b"        "
            hb[148:156] = b"%06o\0 " % sum(hb)
        if m.name == "x-disk1.vmdk" and case == "pax":      # an extension header before it
            h.pax_headers = {"comment": "x"}
            hb = bytearray(h.tobuf(tarfile.PAX_FORMAT))
        f.write(hb + data + b"\0" * (-len(data) % 512))
    f.write(b"\0" * 1024)
PY
}

# refused OVA WHAT WORDS...: import fails with one "ovatool:" line (besides
# the missing manifest's warning) holding
# every word, leaves nothing, and read in place only inside the window
refused() {
    local ova=$1 what=$2 rc=0
    shift 2
    rm -rf "$T/out"
    import_traced "$ova" "$T/out" || rc=$?
    [ $rc = 1 ] || fail "$what: exit status $rc: $(cat "$T/err")"
    grep -v ': warning: no manifest' "$T/err" >"$T/err1" || true
    [ "$(grep -c '^ovatool: ' "$T/err1")" = 1 ] || fail "$what: not one error line: $(cat "$T/err")"
    for w in "$@"; do
        grep '^ovatool: ' "$T/err1" | matches -- "$w" || fail "$what: no '$w' in: $(cat "$T/err")"
    done
    [ -z "$(ls -A "$T/out" 2>/dev/null)" ] || fail "$what: left $(ls -A "$T/out")"
    echo "$what: $(grep '^ovatool: ' "$T/err1")"
}

# a base-256 size field: still read in place; a pax header before the
# member: extracted (nothing read in place), the same disk either way
retar "$T/x.ova" "$T/b256.ova" base256
import_traced "$T/b256.ova" "$T/b256" || fail "base-256 size: $(cat "$T/err")"
qemu-img compare -q "$T/a.raw" "$T/b256/x-disk1.qcow2" || fail "base-256 size: disk 1 differs"
confined "$T/trace" "$T/b256.ova" x-disk1.vmdk
retar "$T/x.ova" "$T/pax.ova" pax
import_traced "$T/pax.ova" "$T/pax" || fail "pax header: $(cat "$T/err")"
qemu-img compare -q "$T/a.raw" "$T/pax/x-disk1.qcow2" || fail "pax header: disk 1 differs"
if (confined "$T/trace" "$T/pax.ova" x-disk1.vmdk) >/dev/null 2>&1; then
    fail "a member behind a pax header was read in place"
fi

retar "$T/x.ova" "$T/short.ova" short
refused "$T/short.ova" "member cut short" "short.ova: member x-disk1.vmdk" "0x"
confined "$T/trace" "$T/short.ova" x-disk1.vmdk

# the header size swallows x-disk2.vmdk: ovf:size refuses it; or only its
# header: the tar is damaged
retar "$T/x.ova" "$T/long.ova" long
refused "$T/long.ova" "header size too long" "long.ova: member x-disk1.vmdk" "offset 0x" "ovf:size"
retar "$T/x.ova" "$T/damaged.ova" damaged
refused "$T/damaged.ova" "header size into the next member" "damaged.ova" "after member x-disk1.vmdk" \
    "offset 0x"

qemu-img convert -O vmdk "$T/a.raw" "$T/sparse.vmdk"       # monolithicSparse
python3 - "$T/x.ova" "$T/sparse.vmdk" "$T/sp.ova" <<'PY'
import hashlib, io, re, sys, tarfile
src, disk, out = sys.argv[1:]
t = tarfile.open(src)
d = open(disk, "rb").read()
with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as o:
    for m in t.getmembers():
        if m.name.endswith(".mf"):
            continue
        data = d if m.name == "x-disk1.vmdk" else t.extractfile(m).read()
        if m.name.endswith(".ovf"):     # the new size; no stream format claimed
            data = re.sub(rb'(ovf:href="x-disk1.vmdk"[^>]*ovf:size=")\d+', rb"\g<1>%d" % len(d), data)
        i = tarfile.TarInfo(m.name)
        i.size = len(data)
        o.addfile(i, io.BytesIO(data))
PY
"$OVA" import -O qcow2 -d "$T/sp" "$T/sp.ova" >/dev/null 2>"$T/err" || fail "monolithicSparse member: $(cat "$T/err")"
qemu-img compare -q "$T/a.raw" "$T/sp/x-disk1.qcow2" || fail "monolithicSparse member differs"
# convert reads its disks where they lie too: x.ova's stream VMDKs are
# copied from their members into the output, sp.ova's monolithicSparse one
# converted from its member; nothing is extracted.
convert_traced() {
    traced -f -y -qq -s 200 -e trace=openat,pread64 -o "$T/trace" \
        "$OVA" convert --target vmware -o "$2" "$1" >"$T/cout" 2>&1 || fail "convert $1: $(cat "$T/cout")"
    grep -qF "$3" "$T/cout" || fail "convert $1: $(cat "$T/cout")"
}
# convert_confined OVA MEMBER...: every pread of OVA lies inside one member
# (its header and data), each MEMBER's data is read, no file named as a
# member is created
convert_confined() {
    calls "$T/trace" >"$T/calls" || fail "cannot read the strace log"
    python3 - "$T/calls" "$@" <<'PY' || fail "convert of $1: see above"
import os, re, sys, tarfile
calls, ova, want = sys.argv[1], os.path.realpath(sys.argv[2]), sys.argv[3:]
ms = tarfile.open(ova).getmembers()
bad, seen = 0, {}
for rest in open(calls):
    rest = rest.rstrip("\n")
    o = re.match(r'openat\(.*?"([^"]*)", ([A-Z_|]+)', rest)
    if o and "O_CREAT" in o.group(2) and os.path.basename(o.group(1)) in {m.name for m in ms}:
        print("extracted: " + rest[:200])
        bad += 1
    c = re.match(r"pread64\(\d+<([^>]*)>, .*, (\d+), (\d+)\) = (-?\d+)", rest)
    if not c or c.group(1) != ova:
        continue
    off, end = int(c.group(3)), int(c.group(3)) + max(int(c.group(4)), 0)
    m = next((m for m in ms if m.offset <= off and end <= m.offset_data + m.size), None)
    if not m:
        print("outside every member: " + rest[:160])
        bad += 1
    elif off >= m.offset_data:
        seen[m.name] = seen.get(m.name, 0) + end - off
for w in want:
    if not seen.get(w):
        print("%s not read in place: %s" % (w, seen))
        bad += 1
print("convert read in place: " + ", ".join("%d bytes of %s" % (n, m) for m, n in seen.items()))
sys.exit(1 if bad else 0)
PY
}
convert_traced "$T/x.ova" "$T/xc.ova" "2 disk(s) (2 passed through"
convert_confined "$T/x.ova" x-disk1.vmdk x-disk2.vmdk
cmp <(tar -xOf "$T/x.ova" x-disk2.vmdk) <(tar -xOf "$T/xc.ova" x-disk2.vmdk) ||
    fail "convert changed a passed-through disk"
convert_traced "$T/sp.ova" "$T/spc.ova" "(1 passed through, 1 converted)"
convert_confined "$T/sp.ova" x-disk1.vmdk x-disk2.vmdk
"$OVA" import -O qcow2 -d "$T/spc" "$T/spc.ova" >/dev/null 2>"$T/err" || fail "import of the converted: $(cat "$T/err")"
qemu-img compare -q "$T/a.raw" "$T/spc/x-disk1.qcow2" || fail "converted monolithicSparse member differs"

retar "$T/sp.ova" "$T/gd.ova" gd-past-end
refused "$T/gd.ova" "grain directory past the member" "gd.ova: member x-disk1.vmdk" "0x"
confined "$T/trace" "$T/gd.ova" x-disk1.vmdk

# x-disk1.vmdk twice, a changed copy first, the manifest kept (it vouches
# for the second): refused, though both could be read in place
python3 - "$T/x.ova" "$T/twice.ova" <<'PY'
import io, sys, tarfile
src, out = sys.argv[1:]
t = tarfile.open(src)
with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as o:
    for m in t.getmembers():
        data = t.extractfile(m).read()
        if m.name == "x-disk1.vmdk":
            o.addfile(m, io.BytesIO(data[:-1] + bytes([data[-1] ^ 1])))
        o.addfile(m, io.BytesIO(data))
PY
refused "$T/twice.ova" "a member twice" "twice.ova: member 'x-disk1.vmdk' appears twice"

# the tar ends 4 KiB into x-disk1.vmdk's data
read -r off _ < <(window "$T/x.ova" x-disk1.vmdk)
head -c $((off + 4096)) "$T/x.ova" >"$T/cut.ova"
refused "$T/cut.ova" "tar cut inside the member" "cut.ova: member x-disk1.vmdk" "offset 0x"

# the descriptor references x-disk3.vmdk, which the archive lacks
python3 - "$T/x.ova" "$T/absent.ova" <<'PY'
import io, sys, tarfile
src, out = sys.argv[1:]
t = tarfile.open(src)
with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as o:
    for m in t.getmembers():
        if m.name.endswith(".mf"):
            continue
        data = t.extractfile(m).read()
        if m.name.endswith(".ovf"):
            data = data.replace(b'ovf:href="x-disk2.vmdk"', b'ovf:href="x-disk3.vmdk"')
        i = tarfile.TarInfo(m.name)
        i.size = len(data)
        o.addfile(i, io.BytesIO(data))
PY
refused "$T/absent.ova" "reference to a missing member" "absent.ova: member x-disk3.vmdk" "missing" \
    "offset 0x"

# a monolithicFlat descriptor naming its extent member: extracted, as before
qemu-img convert -O vmdk -o subformat=monolithicFlat "$T/b.raw" "$T/flat.vmdk"
python3 - "$T/x.ova" "$T" "$T/flat.ova" <<'PY'
import io, re, sys, tarfile
src, d, out = sys.argv[1:]
t = tarfile.open(src)
desc = open(d + "/flat.vmdk", "rb").read().replace(b'"flat-flat.vmdk"', b'"x-disk2-flat.vmdk"')
ext = open(d + "/flat-flat.vmdk", "rb").read()
with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as o:
    for m in t.getmembers():
        if m.name.endswith(".mf"):
            continue
        data = desc if m.name == "x-disk2.vmdk" else t.extractfile(m).read()
        if m.name.endswith(".ovf"):
            data = re.sub(rb'(ovf:href="x-disk2.vmdk"[^>]*ovf:size=")\d+', rb"\g<1>%d" % len(desc), data)
        i = tarfile.TarInfo(m.name)
        i.size = len(data)
        o.addfile(i, io.BytesIO(data))
        if m.name == "x-disk2.vmdk":
            i = tarfile.TarInfo("x-disk2-flat.vmdk")
            i.size = len(ext)
            o.addfile(i, io.BytesIO(ext))
PY
"$OVA" import -O qcow2 -d "$T/flat" "$T/flat.ova" >/dev/null 2>"$T/err" || fail "descriptor + extent member: $(cat "$T/err")"
qemu-img compare -q "$T/b.raw" "$T/flat/x-disk2.qcow2" || fail "descriptor + extent member differs"
qemu-img compare -q "$T/a.raw" "$T/flat/x-disk1.qcow2" || fail "disk 1 of the flat OVA differs"
"$OVA" convert --target vmware -o "$T/flatc.ova" "$T/flat.ova" >"$T/cout" 2>&1 &&
    grep -qF "(1 passed through, 1 converted)" "$T/cout" || fail "convert of the flat OVA: $(cat "$T/cout")"
"$OVA" import -O qcow2 -d "$T/flatc" "$T/flatc.ova" >/dev/null 2>"$T/err" || fail "flat convert import: $(cat "$T/err")"
qemu-img compare -q "$T/b.raw" "$T/flatc/x-disk2.qcow2" || fail "convert of descriptor + extent member differs"
echo "ok"
