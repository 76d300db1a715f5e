#!/bin/sh
# fuzz/run.sh SECONDS BINDIR TARGET... — run each libFuzzer target SECONDS
# seconds on its working corpus (build/fuzz/corpus/T, grows) plus the committed
# inputs (tests/fuzz-corpus/T, read-only; replayed by tests/test_storage.c).
# A crash, leak, sanitizer report or failed check stops with the input saved
# under build/fuzz/crashes/; once fixed, copy it to tests/fuzz-corpus/T/.
set -u
secs=$1; bindir=$2; shift 2
mkdir -p build/fuzz/crashes
failed=""
for t in "$@"; do
	corpus=build/fuzz/corpus/$t
	mkdir -p "$corpus"
	extra=""
	[ -d "tests/fuzz-corpus/$t" ] && extra="tests/fuzz-corpus/$t"
	log=build/fuzz/$t.log
	# shellcheck disable=SC2086
	"$bindir/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
		-artifact_prefix="build/fuzz/crashes/$t-" -print_final_stats=1 "$corpus" $extra >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
	units=$(ls "$corpus" | wc -l)
	if [ $rc -eq 0 ]; then
		echo "fuzz $t: ok, ${secs} s, ${runs:-?} runs, ${cov:-cov: ?}, corpus $units"
	else
		echo "fuzz $t: FAILED (exit $rc); log $log:"
		grep -E 'ERROR|SUMMARY|fuzz_xdr:|Test unit written|^#0|^    #[0-9] ' "$log" | head -30
		failed="$failed $t"
	fi
done
if [ -n "$failed" ]; then
	echo "fuzz: FAILED:$failed (inputs under build/fuzz/crashes/)"
	exit 1
fi
echo "fuzz: all $# targets ok"
