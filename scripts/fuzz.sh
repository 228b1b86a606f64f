#!/usr/bin/env bash
# The documented fuzzing run (not part of the test suite): every cargo-fuzz
# target, one after the other on one core, each until 10 million executions
# or its time limit, whichever comes first; then its corpus is minimised
# (what `cargo test` replays). Prints executions, rate, corpus size and
# crashes per target, and keeps libFuzzer's log in target/fuzz-logs/.
#   scripts/fuzz.sh [--minutes M] [--runs N] [--cpu C] [TARGET...]
# Defaults: 60 minutes, 10 000 000 runs, CPU 1, every target. Targets:
#   netstack: tcp_parse tcp_conn frames
#   proxy: http_request http_response http_chunked
#   config: config_yaml admin_request
#   control-agent: xds_resource
# Needs cargo-fuzz (`cargo install cargo-fuzz`); `--sanitizer none` builds
# on the stable toolchain. A crash leaves its input in
# <crate>/fuzz/artifacts/<target>/ and makes the script exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=60
runs=10000000
cpu=1
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --cpu) cpu="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        -*) echo "fuzz: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done

crate_of() {
    case "$1" in
        tcp_parse|tcp_conn|frames) echo netstack ;;
        http_request|http_response|http_chunked) echo proxy ;;
        config_yaml|admin_request) echo config ;;
        xds_resource) echo control-agent ;;
        *) echo "fuzz: unknown target $1 (see --help)" >&2; exit 2 ;;
    esac
}

if [ ${#targets[@]} -eq 0 ]; then
    targets=(tcp_parse tcp_conn frames http_request http_response http_chunked
             config_yaml admin_request xds_resource)
fi
command -v cargo-fuzz >/dev/null || {
    echo "fuzz: cargo-fuzz is missing; install it with: cargo install cargo-fuzz" >&2
    exit 1
}
logs="$PWD/target/fuzz-logs"
mkdir -p "$logs"
failed=0
printf '%-14s %12s %10s %8s %8s %s\n' target executions exec/s seconds corpus result
for t in "${targets[@]}"; do
    crate=$(crate_of "$t")
    dir="$crate/fuzz"
    log="$logs/$t.log"
    start=$(date +%s)
    result=ok
    if ! (cd "$dir" && taskset -c "$cpu" cargo fuzz run --sanitizer none "$t" -- \
            -runs="$runs" -max_total_time=$((minutes * 60)) -print_final_stats=1 \
            >"$log" 2>&1); then
        result="CRASH (see $log and $dir/artifacts/$t/)"
        failed=1
    fi
    secs=$(( $(date +%s) - start ))
    execs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)
    rate=$(grep -a 'stat::average_exec_per_sec' "$log" | awk '{print $2}' | tail -1)
    if [ "$result" = ok ]; then
        # Keep only inputs that add coverage: what `cargo test` replays.
        (cd "$dir" && cargo fuzz cmin --sanitizer none "$t" >>"$log" 2>&1) ||
            result="cmin failed (see $log)"
    fi
    corpus=$(ls "$dir/corpus/$t" | wc -l)
    printf '%-14s %12s %10s %8s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "$secs" "$corpus" "$result"
done
exit $failed
