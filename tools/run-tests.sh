#!/bin/sh
# run-tests.sh TIMEOUT FILTER WRAPPER BIN... — run each suite binary (under
# WRAPPER, e.g. valgrind, when not empty) with a time limit; FILTER (a substring
# of test names) reaches the suites as DKV_TEST_FILTER. Prints a summary; fails
# when any suite fails or times out.
set -u
limit=$1; filter=$2; wrapper=$3; shift 3
[ -n "$filter" ] && export DKV_TEST_FILTER="$filter"
failed=""; n=0
for bin in "$@"; do
	if [ ! -x "$bin" ]; then echo "no such suite: $bin" >&2; failed="$failed $bin"; continue; fi
	n=$((n + 1))
	name=$(basename "$bin")
	echo "=== $name"
	start=$(date +%s)
	# shellcheck disable=SC2086
	# A suite may have a limit of its own: SUITE_TIMEOUT_<name> in the environment.
	eval "slimit=\${SUITE_TIMEOUT_$name:-$limit}"
	timeout --kill-after=10 "$slimit" $wrapper "$bin"
	rc=$?
	end=$(date +%s)
	if [ $rc -eq 0 ]; then
		echo "=== $name: passed ($((end - start)) s)"
	else
		[ $rc -eq 124 ] && echo "=== $name: TIMED OUT after $slimit s" || echo "=== $name: FAILED (exit $rc, $((end - start)) s)"
		failed="$failed $name"
	fi
done
if [ -n "$failed" ]; then
	echo "FAILED suites:$failed"
	exit 1
fi
echo "all $n suites passed"
