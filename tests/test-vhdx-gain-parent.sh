#!/bin/bash
# test-vhdx-gain-parent: a dynamic VHDX whose BAT region is full (1 MiB:
# 131041 blocks of 1 MiB and 31 sector bitmap entries, 131072 entries) gets
# a parent in place (vdconvert rebase: same inode, mode and links): as
# a differencing disk it needs the last chunk's bitmap entry too, so its
# BAT moves to a larger region at the end of the file, as a grow moves it
# (written with the bitmap blocks and synced, then both region tables in
# the log entry that adds the parent).  A SIGKILL at the spread and cut
# points (every point in slow) leaves an image vdisk opens and checks
# clean (a pending log replayed), dynamic (qemu-img check clean too) or
# with the new parent, and the same guest view.
# VD_INPLACE_CRASH=all (the slow suite's vhdx-gain-parent-all): every point.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io strace taskset vhdiinfo
V=$VDCONVERT
cd "$T"
SYSCALLS=pwrite64,pwritev,ftruncate,fallocate,fsync,fdatasync,copy_file_range
qemu-img create -q -f vhdx -o block_size=1M fp.vhdx 131041M
qemu-io -f vhdx -c "write -P 0x11 0 3M" fp.vhdx >/dev/null
qemu-img create -q -f vhdx -o block_size=1M fb.vhdx 131041M
qemu-io -f vhdx -c "write -P 0x22 1M 1M" -c "write -P 0x23 131040M 1M" fb.vhdx >/dev/null
# bat_mib IMG MIB: both region tables give the BAT region MIB MiB
bat_mib() {
    python3 - "$1" "$2" <<'PY'
import struct, sys
b = open(sys.argv[1], 'rb').read(0x50000)
for off in (0x30000, 0x40000):
    rt = b[off:off + 0x10000]
    ents = [rt[16 + 32 * i:48 + 32 * i] for i in range(struct.unpack('<I', rt[8:12])[0])]
    bat = [e for e in ents if e[:4] == bytes.fromhex('6677c22d')][0]
    assert struct.unpack('<I', bat[24:28])[0] == int(sys.argv[2]) << 20
PY
}
bat_mib fb.vhdx 1 || fail "fixture: fb.vhdx's BAT region is not 1 MiB"
[ "$(qemu-img info fb.vhdx | sed -n 's/^virtual size: .*(\([0-9]*\) bytes)/\1/p')" = $((131041 << 20)) ] ||
    fail "fixture: fb.vhdx's size"
cp fb.vhdx fb0; chmod 600 fb.vhdx; ln fb.vhdx fb.link; m=$(stat -c '%i %a %h' fb.vhdx)
traced -f -qq -o trace.log -e trace=$SYSCALLS taskset -c 0 "$V" rebase -b fp.vhdx -F vhdx fb.vhdx ||
    fail "full-BAT vhdx rebase onto a parent failed"
[ "$(stat -c '%i %a %h' fb.vhdx)" = "$m" ] || fail "full-BAT vhdx rebase: the file changed identity"
vhdiinfo fb.vhdx >/dev/null 2>&1 || fail "full-BAT vhdx rebase: vhdiinfo cannot open it"
parent_of() { "$V" info "$1" | sed -n 's/^backing file: //p'; }   # (qemu opens no differencing VHDX)
[ "$(parent_of fb.vhdx)" = fp.vhdx ] || fail "full-BAT vhdx rebase: reference $(parent_of fb.vhdx)"
"$V" check -q fb.vhdx && "$V" compare fb.vhdx fb0 >/dev/null || fail "full-BAT vhdx rebase: check or view"
bat_mib fb.vhdx 2 || fail "full-BAT vhdx rebase: the BAT did not move to a 2 MiB region"
steps=$(grep -cv -e '+++' -e resumed trace.log || true)
if [ "${VD_INPLACE_CRASH:-}" = all ]; then pts=$(seq 1 "$steps")
else pts=$( { seq 1 $(( (steps + 4) / 5 )) "$steps"; echo "$steps"; cut_points trace.log; } | sort -nu); fi
kills=0 replayed=0
for n in $pts; do
    kills=$((kills + 1)); cp fb0 fb.vhdx
    run_killed trace.log $n taskset -c 0 "$V" rebase -b fp.vhdx -F vhdx fb.vhdx
    "$V" info fb.vhdx >info.txt 2>err || fail "full-BAT vhdx rebase killed at step $n: does not open: $(cat err)"
    ck=fb.vhdx
    if grep -q "log: replayed in memory" info.txt; then
        cp fb.vhdx replay.vhdx; ck=replay.vhdx; replayed=$((replayed + 1))
        "$V" check -q -r all $ck >/dev/null 2>&1 || fail "full-BAT vhdx rebase killed at step $n: replay"
    fi
    "$V" check -q $ck >/dev/null 2>&1 || fail "full-BAT vhdx rebase killed at step $n: check"
    case $(parent_of $ck) in
        "") rc=0; qemu-img check -q $ck >/dev/null 2>&1 || rc=$?
            [ $rc = 0 ] || [ $rc = 3 ] || fail "full-BAT vhdx rebase killed at step $n: qemu-img check: exit $rc" ;;
        fp.vhdx) ;;
        *) fail "full-BAT vhdx rebase killed at step $n: reference $(parent_of $ck)" ;;
    esac
    "$V" compare fb.vhdx fb0 >/dev/null || fail "full-BAT vhdx rebase killed at step $n: guest view changed"
done
echo "full-BAT vhdx rebase onto a parent: $kills of $steps kill points, $replayed logs replayed"
