#!/bin/sh
# bench/report.sh BENCHDIR OUTDIR [BENCH...] — run the benches and write
# OUTDIR/report.md: the machine, the date and the load average, the floors
# measured in the same run (null RPC; 64-byte append + fdatasync in the
# benches' data directory), plots made with gnuplot (throughput and p50/p99
# latency against clients for kvpaxos and shardkv, in memory and — when a
# bench reports mode=durable rows — durable, beside the floors), and every
# bench's table as it printed it.
#
# BENCH... are names in BENCHDIR (default: every bench_* there, the floors
# first). Each bench's table also goes to stdout as it runs (make bench shows
# it), and to OUTDIR/NAME.txt. The machine-readable rows come from the
# benches through DKV_BENCH_OUT (bench/bench_out.h: tab-separated key=value).
# DKV_BENCH_SECONDS is passed through (a short run for tests: 1).
# Exit status: 0 when every bench exited 0 and the report was written, 1
# otherwise (the report is written in any case, with what there is).
set -u
benchdir=$1
out=$2
shift 2
mkdir -p "$out" || exit 1
res="$out/results.tsv"
: > "$res"
rm -f "$out"/*.png "$out"/*.dat "$out/report.md"

if [ $# -gt 0 ]; then
	benches="$*"
else
	# The floors first, then the rest in name order.
	benches=""
	for b in bench_floor bench_storage bench_rpc; do
		[ -x "$benchdir/$b" ] && benches="$benches $b"
	done
	for p in "$benchdir"/bench_*; do
		b=$(basename "$p")
		case " $benches " in *" $b "*) continue ;; esac
		[ -x "$p" ] && benches="$benches $b"
	done
fi

date_start=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)
t0=$(date +%s)
status=0
failed=""
for b in $benches; do
	echo "== $benchdir/$b"
	DKV_BENCH_OUT="$res" "$benchdir/$b" > "$out/$b.txt" 2>&1
	rc=$?
	cat "$out/$b.txt"
	echo "$rc" > "$out/$b.rc"
	if [ "$rc" -ne 0 ]; then
		status=1
		failed="$failed $b"
	fi
done
t1=$(date +%s)
load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)

# ---------------------------------------------------------------- data
# field KEY: the value of KEY= in the current line ("" if absent).
awk_lib='
function field(k,   i, n, kv) {
	n = split($0, kv, "\t")
	for (i = 1; i <= n; i++)
		if (index(kv[i], k "=") == 1)
			return substr(kv[i], length(k) + 2)
	return ""
}'
# Floors: the null RPC (unix, dkv pooled, 1 thread; else the lowest a bench
# measured beside its rows) and fdatasync (bench_floor or bench_storage).
null_p50=$(awk -F'\t' "$awk_lib"'
	field("bench") == "rpc" && field("net") == "unix" && field("row") ~ /^dkv pooled/ && field("clients") == 1 { print field("p50_us"); exit }' "$res")
null_p99=$(awk -F'\t' "$awk_lib"'
	field("bench") == "rpc" && field("net") == "unix" && field("row") ~ /^dkv pooled/ && field("clients") == 1 { print field("p99_us"); exit }' "$res")
null_what="unix socket, dkv pooled connection, 1 thread (bench_rpc)"
if [ -z "$null_p50" ]; then
	null_what="the lowest null RPC the benches measured beside their rows (bench_rpc not run)"
	null_p99="-"
	null_p50=$(awk -F'\t' "$awk_lib"'
		field("null_us") != "" && (m == "" || field("null_us") + 0 < m + 0) { m = field("null_us") }
		END { print m }' "$res")
fi
sync_p50=$(awk -F'\t' "$awk_lib"' field("kind") == "fdatasync" { print field("p50_us"); exit }' "$res")
sync_p99=$(awk -F'\t' "$awk_lib"' field("kind") == "fdatasync" { print field("p99_us"); exit }' "$res")

# One .dat per series: "clients ops_s p50 p99", sorted by clients.
# kvpaxos: a series per op and mode; shardkv: per row label and mode.
awk -F'\t' -v out="$out" "$awk_lib"'
	{
		b = field("bench")
		if (b != "kvpaxos" && b != "shardkv") next
		mode = field("mode"); if (mode == "") mode = "memory"
		name = (b == "kvpaxos") ? field("op") : field("row")
		gsub(/[^A-Za-z0-9]+/, "_", name)
		f = out "/" b "__" mode "__" name ".dat"
		print field("clients"), field("ops_s"), field("p50_us"), field("p99_us") >> f
	}' "$res"
for f in "$out"/*.dat; do
	[ -f "$f" ] || continue
	sort -n -k1,1 "$f" -o "$f"
done

# ---------------------------------------------------------------- plots
plots=""
plot_note=""
if ! command -v gnuplot >/dev/null 2>&1; then
	plot_note="gnuplot is missing (tools/ensure-deps.sh installs gnuplot-nox): no plots."
else
	for svc in kvpaxos shardkv; do
		set -- "$out/${svc}__"*.dat
		[ -f "$1" ] || continue
		png="$svc.png"
		gp="$out/$svc.gp"
		{
			echo "set terminal pngcairo size 1280,520 font 'sans,10' noenhanced"
			echo "set output '$out/$png'"
			echo "set multiplot layout 1,2 title '$svc — $(hostname), $date_start, DKV_BENCH_SECONDS=${DKV_BENCH_SECONDS:-default}'"
			echo "set grid"
			echo "set key top left"
			echo "set logscale x 2"
			echo "set xrange [0.7:48]"
			echo "set pointsize 1.5"
			echo "set xlabel 'clients (clerks)'"
			echo "set ylabel 'ops/s'"
			echo "set yrange [0:*]"
			echo "set title 'throughput'"
			printf "plot "
			sep=""
			for f in "$@"; do
				t=$(basename "$f" .dat | sed "s/^${svc}__//; s/__/ /; s/_/ /g")
				printf "%s'%s' using 1:2 with linespoints lw 2 title '%s'" "$sep" "$f" "$t"
				sep=", "
			done
			echo
			echo "set title 'latency: p50 (solid), p99 (dashed), floors (grey)'"
			echo "set ylabel 'microseconds'"
			echo "set logscale y 10"
			echo "set yrange [*:*]"
			echo "set key bottom right opaque font ',9'"
			printf "plot "
			sep=""
			i=1
			for f in "$@"; do
				t=$(basename "$f" .dat | sed "s/^${svc}__//; s/__/ /; s/_/ /g")
				printf "%s'%s' using 1:3 with linespoints lw 2 lc %d dt 1 title '%s p50'" "$sep" "$f" "$i" "$t"
				sep=", "
				printf "%s'%s' using 1:4 with linespoints lw 1 lc %d dt 2 title '%s p99'" "$sep" "$f" "$i" "$t"
				i=$((i + 1))
			done
			[ -n "$null_p50" ] && printf "%s%s with lines lw 2 lc rgb 'gray40' dt 3 title 'null RPC p50 (%s us)'" "$sep" "$null_p50" "$null_p50"
			[ -n "$sync_p50" ] && printf "%s%s with lines lw 2 lc rgb 'gray60' dt 4 title 'fdatasync p50 (%s us)'" "$sep" "$sync_p50" "$sync_p50"
			echo
			echo "unset multiplot"
		} > "$gp"
		if gnuplot "$gp" 2> "$out/$svc.gp.err"; then
			plots="$plots $png"
		else
			plot_note="$plot_note gnuplot failed for $svc: $(head -3 "$out/$svc.gp.err" | tr '\n' ' ')"
			status=1
		fi
	done
fi

# ---------------------------------------------------------------- report
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null)
{
	echo "# dkv bench report"
	echo
	echo "| | |"
	echo "|---|---|"
	echo "| date | $date_start ($((t1 - t0)) s) |"
	echo "| machine | $(hostname): $(uname -srm), ${cpu:-unknown CPU}, $(nproc) cores, ${mem:-? GiB} |"
	echo "| load average (1, 5, 15 min) | before: $load_start; after: $load_end |"
	echo "| DKV_BENCH_SECONDS | ${DKV_BENCH_SECONDS:-each bench's default} |"
	echo "| benches | $benches |"
	[ -n "$failed" ] && echo "| FAILED | $failed |"
	echo
	echo "The machine may be shared: compare rows with the floors measured in the same run, not with other runs."
	echo
	echo "## Floors (same run)"
	echo
	echo "| floor | p50 us | p99 us |"
	echo "|---|---|---|"
	echo "| null RPC: $null_what | ${null_p50:-n/a} | ${null_p99:-n/a} |"
	echo "| 64-byte append + fdatasync (benches' data directory) | ${sync_p50:-n/a} | ${sync_p99:-n/a} |"
	echo
	echo "## Plots"
	echo
	if [ -n "$plots" ]; then
		for p in $plots; do
			echo "![${p%.png}]($p)"
			echo
		done
	fi
	[ -n "$plot_note" ] && { echo "$plot_note"; echo; }
	if grep -q 'mode=durable' "$res"; then
		echo "Durable rows (mode=durable) are plotted beside the in-memory ones."
	else
		echo "No bench reported durable rows (mode=durable) in this run: only in-memory series are plotted."
	fi
	echo
	echo "## Tables"
	for b in $benches; do
		echo
		echo "### $b (exit $(cat "$out/$b.rc" 2>/dev/null || echo '?'))"
		echo
		echo '```'
		cat "$out/$b.txt"
		echo '```'
	done
	echo
	echo "Machine-readable rows: results.tsv (tab-separated key=value, one line per table row)."
} > "$out/report.md"
echo "bench report: $out/report.md${plots:+ (plots:$plots)}"
exit $status
