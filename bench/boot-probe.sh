#!/bin/bash
# boot-probe.sh [ROUNDS] - time from process start to the probe kernel's
# first serial byte: vdboot's built-in VMM against qemu-system-x86_64
# -enable-kvm loading the same bzImage, taking turns, ROUNDS each (default
# 5).  Prints each run, the medians, the ratio, and each one's peak RSS.
#   VD_BUILD  build directory (default ./build)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${VD_BUILD:-build}
rounds=${1:-5}
vdboot=$B/boot-check/vdboot
probe=$B/boot-check/probe.bzImage
[ -x "$vdboot" ] && [ -f "$probe" ] || { echo "build first: ninja -C $B" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 missing" >&2; exit 1; }
[ -w /dev/kvm ] || { echo "/dev/kvm not usable" >&2; exit 1; }

python3 - "$rounds" "$vdboot" "$probe" <<'PY'
import os, select, signal, statistics, subprocess, sys, time
rounds, vdboot, probe = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cmds = {
    "vdboot": [vdboot, "--accel", "kvm", "--kernel", probe, "--console", "-",
               "--timeout", "300"],
    # the CPU model hides what a nested software KVM cannot run, as vdboot does
    "qemu-kvm": ["qemu-system-x86_64", "-enable-kvm", "-cpu", "qemu64,-cx16,-xsave",
                 "-m", "512", "-nodefaults", "-no-user-config", "-display", "none",
                 "-serial", "stdio", "-monitor", "none", "-no-reboot", "-kernel", probe],
}

def first_byte(cmd):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    r, _, _ = select.select([p.stdout], [], [], 300)
    t = time.monotonic() - t0 if r and os.read(p.stdout.fileno(), 1) else float("nan")
    p.send_signal(signal.SIGKILL)
    _, _, ru = os.wait4(p.pid, 0)
    p.stdout.close()
    return t, ru.ru_maxrss / 1024.0

res = {k: [] for k in cmds}
rss = {k: 0.0 for k in cmds}
for i in range(rounds):
    for name, cmd in cmds.items():          # in turns: same conditions for both
        t, m = first_byte(cmd)
        res[name].append(t)
        rss[name] = max(rss[name], m)
        print(f"round {i + 1} {name:9s} first serial byte after {t * 1000:9.1f} ms  "
              f"(peak RSS {m:6.1f} MiB)", flush=True)
med = {k: statistics.median(v) for k, v in res.items()}
for k in cmds:
    print(f"median {k:9s} {med[k] * 1000:9.1f} ms   peak RSS {rss[k]:6.1f} MiB")
print(f"vdboot is {med['qemu-kvm'] / med['vdboot']:.1f}x faster to the first byte")
PY
