#!/bin/bash
# test.sh - the one command that tests vdisk on a fresh Debian 12 machine:
# installs what is missing (apt-get, only when missing), builds, runs the whole
# test suite, then runs it again under ASan+UBSan.  .ci/run calls exactly this.
#
#   ./test.sh            everything (default and sanitizer runs)
#   ./test.sh --quick    the default build only
#   ./test.sh --deps     only install what is missing (demo.sh uses it)
set -euo pipefail
cd "$(dirname "$0")"
export LC_ALL=C

# Build dependencies and test peers (Debian package names).
PKGS="python3-libvhdi gcc meson ninja-build pkg-config python3 zlib1g-dev libzstd-dev libdeflate-dev libisal-dev
      libarchive-dev liblzma-dev liblz4-dev libxml2-dev libssl-dev libfuse3-dev fuse3 libext2fs-dev e2fsprogs
      libcmocka-dev qemu-utils libvhdi-utils libvmdk-utils python3-libvmdk libqcow-utils fdisk bzip2 xz-utils
      util-linux nbdkit nbdkit-plugin-dev libnbd-dev libnbd-bin libxml2-utils openssl
      qemu-system-x86 grub-common grub-pc-bin cpio binutils kmod lz4 zstd xfsprogs
      clang libclang-rt-14-dev libvirt-clients
      genisoimage fio attr strace linux-image-amd64 busybox-static seabios ovmf systemd-boot-efi
      mtools dosfstools"

install_missing() {
    # One dpkg-query for the whole list, not one per package: a
    # package it does not know, or knows but not as installed, is missing.
    local -A have=()
    local p st missing=()
    while read -r p st; do
        [ "$st" = "install ok installed" ] && have[$p]=1
    done < <(dpkg-query -W -f='${Package} ${Status}\n' $PKGS 2>/dev/null || true)
    for p in $PKGS; do
        [ -n "${have[$p]:-}" ] || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "test.sh: installing ${missing[*]}"
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}

configure() {  # configure BUILDDIR [meson options...]
    local dir=$1; shift
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
}
setup() {  # setup BUILDDIR [meson options...]: configure, and build everything
    configure "$@"
    ninja -C "$1"
}

# results LOG RUN: from a meson test log, "passed failed skipped" on the
# first line, then one line per skipped test, "  RUN NAME: reason", the
# reason being the test's last "SKIP: ..." line (tests/lib.sh skip()).
# Debian's python3 (installed above), one start a run: a python3 first on
# PATH may be a version manager's shim that costs ~0.4 s of CPU a start.
results() {
    local py=/usr/bin/python3
    [ -x $py ] || py=python3
    $py - "$1" "$2" <<'PY'
import json, sys
p = f = s = 0
skips = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["result"] in ("OK", "EXPECTEDFAIL"): p += 1
    elif r["result"] == "SKIP":
        s += 1
        why = [l for l in (r.get("stdout") or "").splitlines() if l.startswith("SKIP")]
        skips.append("  %s %s: %s" % (sys.argv[2], r["name"], why[-1] if why else "exit 77"))
    else: f += 1
print(p, f, s)
for l in skips: print(l)
PY
}

# phase NAME: one line, the wall time and the CPU time (user+sys of test.sh
# and all it waited for: builds, tests, their children) since the last phase:
# every run shows where its time went, and whether the cores were busy (on a
# 2-core machine a CPU-bound phase shows about twice its wall time in CPU).
phase_file=$(mktemp)
trap 'rm -f "$phase_file"' EXIT
phase_w=$EPOCHREALTIME phase_c=0
phase() {
    local c w=$EPOCHREALTIME
    times >"$phase_file"    # (in this shell: a subshell's children are not its)
    c=$(awk '{ gsub(/[ms]/, " "); c += $1 * 60 + $2 + $3 * 60 + $4 } END { printf "%.2f", c }' "$phase_file")
    awk -v n="$1" -v w="$w" -v w0="$phase_w" -v c="$c" -v c0="$phase_c" \
        'BEGIN { printf "test.sh: %s: %.0f s wall, %.0f CPU-s\n", n, w - w0, c - c0 }'
    phase_w=$w phase_c=$c
}

# run_suite BUILDDIR ARGS...: meson test.  A test that fails fails the run:
# nothing is rerun (a flaky test is a bug to fix, not to retry).
run_suite() {
    local dir=$1; shift
    meson test -C "$dir" --print-errorlogs "$@"
}

install_missing
[ "${1:-}" = "--deps" ] && exit 0
phase "dependencies"
export VD_MATRIX_DIR="$PWD/build/matrix"
# Peers' results that the ASan run reuses from the plain run (tests/lib.sh
# peer_in_place: qemu's own work, keyed by its inputs and version)
export VD_PEER_CACHE="$PWD/build/peer-cache"
status=0
setup build -Dwerror=true
phase "plain build"
# Four tests at once on a 2-core machine: most tests spend much of their
# time waiting (on qemu-img and qemu-io, fsync, guests booting); in the
# last quiet CI all four slots were busy for 664 of the plain run's 668 s
# (the phase lines below say whether the cores were).  The long ones start
# first (tests/meson.build, priorities), and every test's timeout is at
# least twice what it took in a full CI run.
run_suite build --no-suite slow --num-processes 4 || status=1
phase "plain suite"
r=$(results build/meson-logs/testlog.json plain)
read -r p f s <<<"$r"
tp=$p tf=$f ts=$s
skips=$(sed 1d <<<"$r")

if [ "${1:-}" != "--quick" ]; then
    # The same suite under AddressSanitizer + UndefinedBehaviorSanitizer.
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    # What the ASan run repeats, and what it does not (the budget: the whole
    # of test.sh under 20 minutes on a 2-core machine):
    # - Crash and power-loss trials judge write ordering, which the plain run
    #   covers (20 kills per layout, 30 cuts per format); what ASan adds is
    #   the writers, the reopen and the checks of crashed images, the same
    #   code in every trial: 6 kills and 8 cuts drive every writer, layout
    #   and judge.
    # - Suite 'nosan' (tests/meson.build names them and why) is not repeated:
    #   guest boots under qemu's TCG, where the time is qemu's own and the
    #   C code they run is run under ASan by other tests.
    # - vdconvert-inplace kills each format's commit at every step (the
    #   plain run: also rebase -u of every format and all of qcow2's).
    # - qcow2-hostile, hostile-inputs and ovatool-os shorten themselves when
    #   they find the sanitizers (each says how and why).
    export VD_CRASH_TRIALS=6 VD_POWER_TRIALS=8 VD_INPLACE_CRASH=commit
    # debugoptimized (-O2 -g), as sanitizer runs usually are: the same checks
    # on every access the code makes, about 17 % less CPU than -O0 (measured
    # on qcow2-write + vmdk-read), and the warnings of an optimising build.
    setup build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized
    phase "ASan build"
    run_suite build-asan --no-suite slow --no-suite nosan --timeout-multiplier 3 \
        --num-processes 4 || status=1
    phase "ASan suite"
    r=$(results build-asan/meson-logs/testlog.json asan)
    read -r p f s <<<"$r"
    skips+=$'\n'$(sed 1d <<<"$r")
    echo "asan+ubsan: $p passed, $f failed, $s skipped"
    tp=$((tp + p)) tf=$((tf + f)) ts=$((ts + s))

    unset VD_CRASH_TRIALS VD_POWER_TRIALS VD_INPLACE_CRASH

    # The threaded tests under ThreadSanitizer (no -Werror: gcc's -Wtsan
    # warns about the fences of vdboot's virtio ring, which TSan cannot model).
    unset ASAN_OPTIONS
    export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
    # Only configured: meson test builds what the threads suite runs (the
    # tests' depends in tests/meson.build: threaded-io, vdconvert, vdmount), not
    # vdboot, ovatool, the nbd plugin, the unit tests or the other test programs.
    configure build-tsan -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug
    run_suite build-tsan --suite threads --timeout-multiplier 3 --num-processes 1 || status=1
    phase "TSan build and suite"
    r=$(results build-tsan/meson-logs/testlog.json tsan)
    read -r p f s <<<"$r"
    skips+=$'\n'$(sed 1d <<<"$r")
    echo "tsan: $p passed, $f failed, $s skipped"
    tp=$((tp + p)) tf=$((tf + f)) ts=$((ts + s))

    # Every libFuzzer target for a few seconds from its seeds (clang).
    if tests/fuzz/run-ci.sh 5; then tp=$((tp + 1)); else tf=$((tf + 1)); status=1; fi
    phase "fuzz build and run"
fi
skips=$(grep -v '^$' <<<"$skips" || true)
if [ -n "$skips" ]; then
    echo "skipped tests (run, name: reason):"
    echo "$skips"
fi
echo "$tp passed, $tf failed, $ts skipped"
exit $status
