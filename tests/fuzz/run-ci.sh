#!/bin/bash
# run-ci.sh [SECONDS] - the short fuzz run for CI: builds the libFuzzer
# targets with clang and ASan+UBSan (in $VD_FUZZ_BUILD, default
# build-fuzz/), makes the seed corpora (make-seeds.sh, once), then runs every
# target for SECONDS (default 5) from its seeds.  Exit 1 if any target finds
# a crash, a leak, a timeout (10 s for one input) or an out-of-memory (2 GiB);
# the input is kept under $VD_FUZZ_BUILD/fuzz-artifacts/ and the run's log
# printed.  Each finding becomes a regression test (see tests/fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD
B=${VD_FUZZ_BUILD:-$SRC/build-fuzz}
SECS=${1:-5}
command -v clang >/dev/null || { echo "run-ci: clang not installed (apt-get install clang)"; exit 1; }
if [ ! -f "$B/build.ninja" ]; then
    CC=clang meson setup "$B" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
ninja -C "$B" fuzz-targets >/dev/null   # only the fuzz targets (tests/fuzz/meson.build)
seeds=$B/fuzz-seeds
[ -d "$seeds" ] || "$SRC/tests/fuzz/make-seeds.sh" "$seeds"
mkdir -p "$B/fuzz-artifacts"
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# One target per core at a time (each is single-threaded; -max_total_time
# is wall time, so a target that shared a core would get half the inputs).
jobs=$(nproc 2>/dev/null || echo 1)
# run_target TARGET: its result line in $B/fuzz-artifacts/NAME.result,
# "ok: ..." or "FAIL: ..." with what the log says.
run_target() {
    local t=$1 name fmt corpus log runs cov
    name=$(basename "$t")
    fmt=${name#fuzz-open-}
    corpus=$B/fuzz-corpus/$name
    mkdir -p "$corpus"
    # Seeds: the format's own folder, or every folder for probe/open.
    if [ -d "$seeds/$name" ]; then         # a parser target's own seeds
        cp -n "$seeds/$name"/* "$corpus"/ 2>/dev/null || true
    elif [ "$fmt" != "$name" ]; then
        cp -n "$seeds/$fmt"/* "$corpus"/ 2>/dev/null || true
    else
        for d in "$seeds"/*/; do cp -n "$d"* "$corpus"/ 2>/dev/null || true; done
    fi
    log=$B/fuzz-artifacts/$name.log
    if "$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=4194304 \
            -print_final_stats=1 -artifact_prefix="$B/fuzz-artifacts/$name-" \
            "$corpus" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
        echo "ok: $name: ${runs:-?} inputs in ${SECS}s, $cov"
    else
        echo "FAIL: $name (log $log):"
        grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | sed -n 1,8p
    fi >"$B/fuzz-artifacts/$name.result"
}
targets=()
for t in "$B"/tests/fuzz/fuzz-*; do
    [ -x "$t" ] && [ -f "$t" ] || continue
    targets+=("$t")
    rm -f "$B/fuzz-artifacts/$(basename "$t").result"
    while [ "$(jobs -pr | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    run_target "$t" &
done
wait
bad=0
for t in "${targets[@]}"; do
    r=$B/fuzz-artifacts/$(basename "$t").result
    if [ -s "$r" ]; then cat "$r"; else echo "FAIL: $(basename "$t"): no result"; fi
    grep -q '^ok: ' "$r" 2>/dev/null || bad=1
done
exit $bad
