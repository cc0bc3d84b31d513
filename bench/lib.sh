# bench/lib.sh - sourced by the ovatool benches (strict mode, C locale).
#   SRC                 the source tree
#   bench_init [BUILD]  BUILD (absolute: the benches cd), RUNS (default 5),
#                       and cd into BENCH_DIR (default
#                       /var/tmp/vdisk-bench-ova, made if missing)
#   median              the median of the numbers on stdin, one a line
#   ratio A B           A / B to three decimals
set -euo pipefail
export LC_ALL=C
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

bench_init() {
    BUILD=$(cd "${1:-$SRC/build}" && pwd)
    RUNS=${RUNS:-5}
    D=${BENCH_DIR:-/var/tmp/vdisk-bench-ova}
    mkdir -p "$D"
    cd "$D"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "scale=3; $1 / $2" | bc; }
