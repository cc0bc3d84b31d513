#!/bin/bash
# vdboot on /dev/kvm: the probe kernel installed in /boot of an ext4
# partition (grub.cfg names it), found by discovery, boots after vdconvert
# to every format vdconvert writes (a fixed list); the checksum the probe reads through
# virtio-blk equals the sectors' real checksum; a guest write lands in the
# overlay and the image file's sha256 stays the same.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd python3 mkfs.ext4 sfdisk
requires_kvm
[ -x "$VDBOOT" ] || skip "vdboot not built"

make_probe_fs "$T/root" grub "probe.sectors=2048+64 probe.write=4000 root=/dev/vda1 ro"
mkfs.ext4 -q -F -L probe-root -d "$T/root" "$T/fs.img" 6M
make_disk "$T/disk.raw" "$T/fs.img"
want=$(crc32_of "$T/disk.raw" $((2048 * 512)) $((64 * 512)))

# A fixed list: a format vdconvert cannot write fails the test.
variants=(raw qcow2 vmdk vdi vhd vhdx parallels qed vmdk:subformat=streamOptimized)
echo "formats: ${variants[*]}"

booted=0
for v in "${variants[@]}"; do
    fmt=${v%%:*}
    img=$T/img.$fmt
    make_variant "$T/disk.raw" "$v" "$img"
    before=$(sha256sum <"$img")
    rc=0
    "$VDBOOT" --accel kvm --timeout 30 --json --console "$T/con.$fmt" "$img" >"$T/json" 2>"$T/err" || rc=$?
    [ $rc = 0 ] || { cat "$T/json" "$T/err" "$T/con.$fmt"; fail "$v: vdboot exited $rc"; }
    got=$(sed -n 's/^probe: sectors 2048+64 crc32 \(0x[0-9a-f]*\).*/\1/p' "$T/con.$fmt")
    [ "$got" = "$want" ] || { cat "$T/con.$fmt"; fail "$v: probe read crc32 '$got', want $want"; }
    grep -q '^probe: wrote sector 4000, read back ok' "$T/con.$fmt" || fail "$v: overlay write failed"
    grep -q '^probe: cmdline probe.sectors=2048+64 probe.write=4000 root=/dev/vda1 ro console=ttyS0,115200' \
        "$T/con.$fmt" || { cat "$T/con.$fmt"; fail "$v: command line not as discovered"; }
    python3 - "$T/json" <<'PY' || fail "$v: json: $(cat "$T/json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["outcome"] == "login", j
assert "partition 1 (ext4)" in j["kernel"] and "/boot/grub/grub.cfg" in j["kernel"], j["kernel"]
assert "Probe 1.0" in j["kernel"] and "/boot/initrd.img-1.0-probe" in j["kernel"], j["kernel"]
PY
    after=$(sha256sum <"$img")
    [ "$before" = "$after" ] || fail "$v: the image changed"
    echo "$v: login, crc32 $got, image unchanged"
    booted=$((booted + 1))
done
[ $booted = ${#variants[@]} ] || fail "only $booted of ${#variants[@]} formats booted"
echo "ok: $booted variants"
