#!/bin/bash
# The library's one helper per job, seen from the tools: the metadata-table
# cache with its memory bound, the JSON writer, the size parser.
#  - A 75 GiB VMDK with a grain in each of its 2400 grain tables (4.7 MiB of
#    tables, over the 1 MiB cache) is written through eviction (dirty tables
#    written back after the grains are synced), reads identically in
#    qemu-img, and reads in about the memory of a 1 GiB one.
#  - info --output=json escapes a backing name holding a control character
#    and a byte that is not UTF-8 exactly as qemu-img does.
#  - Sizes read as qemu-img reads them (1g, 64K, 3M; 1x and 1KX refused).
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3
cd "$T"

qemu-img create -q -f qcow2 src.qcow2 75G
# -t unsafe: qemu's qcow2 driver flushes between its L2 and refcount
# updates, about 150 new L2 tables here, which made the source's writes
# 30 s of waiting on a busy disk (3 s without); the file qemu-io leaves is
# byte-identical either way (checked), and it is only the reference here.
python3 -c '
for i in range(2400): print("write -P %d %dM 4k" % (i % 250 + 1, i * 32 + 5))' |
    qemu-io -t unsafe -f qcow2 src.qcow2 >/dev/null
"$VDCONVERT" convert -t unsafe -O vmdk src.qcow2 big.vmdk
qemu-img compare -q src.qcow2 big.vmdk || fail "VMDK written through the table cache differs"
qemu-img check -q big.vmdk || fail "qemu-img check finds big.vmdk damaged"
qemu-img create -q -f vmdk small.vmdk 1G
qemu-io -f vmdk -c "write -P 9 5M 4k" small.vmdk >/dev/null

# Peak RSS (KiB) of reading every byte; ASan's shadow memory makes it
# meaningless there, so only the plain build compares it.  Every table
# kept would be 4.7 MiB more.
# (The copy goes to a sparse file here: OUT is replaced by a rename, and
# vdconvert refuses to rename over /dev/null, which it used to replace.)
rss() {
    rm -f rss.raw
    /usr/bin/time -o rss.kib -f %M "$VDCONVERT" convert -t unsafe -O raw "$1" rss.raw ||
        fail "vdconvert convert -O raw $1 failed"
    rm -f rss.raw
    tail -1 rss.kib
}
if [ -x /usr/bin/time ] && ! ldd "$VDCONVERT" | matches libasan; then
    small=$(rss small.vmdk) big=$(rss big.vmdk)
    echo "peak RSS reading: 1 GiB $small KiB, 75 GiB $big KiB"
    [ $((big - small)) -lt 3072 ] ||
        fail "reading a 75 GiB VMDK took $((big - small)) KiB more than a 1 GiB one (grain tables not evicted?)"
fi
"$VDCONVERT" convert -O qcow2 big.vmdk back.qcow2
qemu-img compare -q src.qcow2 back.qcow2 || fail "big.vmdk read through the table cache differs"
echo "ok: 75 GiB VMDK written and read through the bounded grain-table cache"

# JSON strings: a control character and an invalid byte in a backing name.
name=$(printf 'base\001\377.raw')
truncate -s 1M "$name"
qemu-img create -q -f qcow2 -b "$name" -F raw top.qcow2 1M
want=$(qemu-img info --output=json top.qcow2 | grep '"backing-filename":')
got=$("$VDCONVERT" info --output=json top.qcow2 | grep '"backing-filename":')
[ "$(echo $got)" = "$(echo $want)" ] ||
    fail "backing-filename in JSON: got [$got], qemu-img prints [$want]"
"$VDCONVERT" info --output=json top.qcow2 | python3 -c 'import json, sys; json.load(sys.stdin)' ||
    fail "info --output=json is not valid JSON"
echo "ok: JSON escaping matches qemu-img ($want)"

# Sizes: the same bytes as qemu-img for what it accepts, refusals alike.
for sz in 1g 64K 3M 512 2k 1T; do
    qemu-img create -q -f raw "q$sz.raw" "$sz"
    "$VDCONVERT" create -f raw "v$sz.raw" "$sz" >/dev/null
    [ "$(stat -c %s "v$sz.raw")" = "$(stat -c %s "q$sz.raw")" ] ||
        fail "size $sz: $(stat -c %s "v$sz.raw") bytes, qemu-img makes $(stat -c %s "q$sz.raw")"
done
for sz in 1x 1KX -1 ''; do
    ! "$VDCONVERT" create -f raw "bad.raw" "$sz" >/dev/null 2>&1 || fail "size '$sz' accepted"
done
echo "ok: sizes read as qemu-img reads them"
