#!/usr/bin/env bash
# run.sh TARGET...: for each libFuzzer harness build/fuzz/fuzz_TARGET, runs
# every committed reproducer (tests/fuzz/repro/TARGET/*), then fuzzes for
# FUZZ_S seconds (default 10) from a copy of tests/fuzz/corpus/TARGET.
# Prints one line per target and ends with "fuzz: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=${FUZZ_S:-10}
passed=0 failed=0
for t in "$@"; do
	bin=build/fuzz/fuzz_$t
	log=build/fuzz/$t.log
	work=build/fuzz/corpus/$t
	rm -rf "$work" && mkdir -p "$work"
	cp tests/fuzz/corpus/"$t"/* "$work"/ 2>/dev/null
	ok=1
	repros=()
	for r in tests/fuzz/repro/"$t"/*; do [ -e "$r" ] && repros+=("$r"); done
	if [ ${#repros[@]} -gt 0 ] && ! "$bin" "${repros[@]}" >"$log" 2>&1; then
		ok=0
		echo "fuzz_$t: a reproducer fails again:"; tail -n 30 "$log"
	fi
	if [ $ok = 1 ]; then
		# -rss_limit_mb: the sanitizers' own memory counts; one process
		if ! "$bin" -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096 \
			-artifact_prefix="build/fuzz/$t-" "$work" >"$log" 2>&1; then
			ok=0
			echo "fuzz_$t: finding (input kept as build/fuzz/$t-*):"; tail -n 40 "$log"
		fi
	fi
	runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
	if [ $ok = 1 ]; then
		passed=$((passed + 1))
		echo "fuzz_$t: ${runs:-0} inputs in ${secs} s, ${#repros[@]} reproducers: nothing found"
	else
		failed=$((failed + 1))
	fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
