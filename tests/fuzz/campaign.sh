#!/bin/bash
# campaign.sh SECONDS TARGET... - the long fuzz campaign: each TARGET runs
# for SECONDS in turn, one process (one core), niced, from its seeds plus the
# corpus grown by earlier campaigns ($VD_FUZZ_FAST/campaign-corpus/TARGET).
# For throughput it uses a build with UBSan but without ASan ($VD_FUZZ_FAST,
# default build-fuzz-fast/); afterwards every corpus input is replayed once
# through the ASan+UBSan build (build-fuzz/, run-ci.sh makes it), so memory
# errors that did not crash the fast build are still caught.  Prints one
# line per target: inputs run, inputs/s, coverage, corpus size, findings.
# With VD_FUZZ_RUNS=N each target instead runs exactly N inputs (SECONDS is
# then ignored: write 0), so a count such as 10 million is met exactly.
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD
SECS=${1:?usage: campaign.sh SECONDS TARGET...}; shift
FAST=${VD_FUZZ_FAST:-$SRC/build-fuzz-fast}
ASAN=${VD_FUZZ_BUILD:-$SRC/build-fuzz}
if [ ! -f "$FAST/build.ninja" ]; then
    CC=clang meson setup "$FAST" -Dfuzz=true -Db_sanitize=undefined -Db_lundef=false \
        -Dbuildtype=release >/dev/null
fi
ninja -C "$FAST" >/dev/null
[ -f "$ASAN/build.ninja" ] || CC=clang meson setup "$ASAN" -Dfuzz=true \
    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
ninja -C "$ASAN" >/dev/null
seeds=$ASAN/fuzz-seeds
[ -d "$seeds" ] || "$SRC/tests/fuzz/make-seeds.sh" "$seeds" >/dev/null
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
mkdir -p "$FAST/campaign-artifacts"
bad=0
for name in "$@"; do
    corpus=$FAST/campaign-corpus/$name
    mkdir -p "$corpus"
    fmt=${name#fuzz-open-}
    if [ -d "$seeds/$name" ]; then src=$seeds/$name
    elif [ "$fmt" != "$name" ]; then src=$seeds/$fmt
    else src=$seeds; fi
    find "$src" -type f -exec cp -n {} "$corpus"/ \; 2>/dev/null || true
    log=$FAST/campaign-artifacts/$name.log
    rc=0
    if [ -n "${VD_FUZZ_RUNS:-}" ]; then limit=-runs=$VD_FUZZ_RUNS
    else limit=-max_total_time=$SECS; fi
    t0=$(date +%s)
    nice -n 19 "$FAST/tests/fuzz/$name" "$limit" -timeout=10 -rss_limit_mb=2048 \
        -max_len=4194304 -print_final_stats=1 -artifact_prefix="$FAST/campaign-artifacts/$name-" \
        "$corpus" >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    secs=$(( $(date +%s) - t0 )); [ "$secs" -gt 0 ] || secs=1
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
    # the grown corpus once through ASan+UBSan
    arc=0
    nice -n 19 "$ASAN/tests/fuzz/$name" -runs=0 -timeout=10 -rss_limit_mb=2048 "$corpus" \
        >"$log.asan" 2>&1 || arc=$?
    found="none"
    [ $rc = 0 ] || { found="fast build: $(grep -m1 -E 'ERROR|runtime error|Test unit written' "$log")"; bad=1; }
    [ $arc = 0 ] || { found="$found; asan replay: $(grep -m1 -E 'ERROR|runtime error' "$log.asan")"; bad=1; }
    printf '%s: %s inputs in %ss (%s/s), %s, corpus %s, findings: %s\n' "$name" "${runs:-?}" "$secs" \
        "$(( ${runs:-0} / secs ))" "${cov:-cov ?}" "$(ls "$corpus" | wc -l)" "$found"
done
exit $bad
