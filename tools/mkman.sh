#!/bin/sh
# mkman.sh PROGRAM OUT — write the manual page of a dkv program (dkvd, dkvctl,
# dkv-cluster) to OUT, generated with help2man from the program's own --help
# and --version, so the page never drifts from the program.
#
# The programs' --help is already laid out like a manual page (NAME,
# SYNOPSIS, DESCRIPTION, OPTIONS, … headings in capitals, bodies indented
# four spaces). help2man expects GNU-style help ("Usage:", "Options:",
# "*Section*"), so help2man is pointed at this script itself in filter mode
# (mkman.sh --filter PROGRAM --help), which rewrites the text:
#   NAME            dropped; its one-line description becomes help2man -n
#   SYNOPSIS        "Usage: …" and "  or: …" lines (wrapped lines joined)
#   DESCRIPTION     the initial section: heading dropped, body dedented
#   OPTIONS, ENVIRONMENT, EXAMPLES, FILES   help2man's own names
#   other headings  "*HEADING*" (help2man's custom sections)
#   EXAMPLES        prose lines (ending in ':') stay prose; commands get "$ "
#                   so that help2man sets them verbatim, one per line
#   SEE ALSO        "prog --help" becomes "prog(1)"
set -eu

if [ "${1:-}" = "--filter" ]; then
	prog=$2
	opt=$3
	if [ "$opt" != "--help" ]; then
		exec "$prog" "$opt"
	fi
	"$prog" --help | awk '
	/^[A-Z][A-Z ]*[A-Z]$/ {
		sect = $0
		if (sect == "NAME") next
		if (sect == "SYNOPSIS") { nsyn = 0; next }
		if (prev_sect == "SYNOPSIS") flush_syn()
		prev_sect = sect
		if (sect == "DESCRIPTION") next
		if (sect == "OPTIONS") { print "Options:"; next }
		if (sect == "ENVIRONMENT") { print "Environment:"; next }
		if (sect == "EXAMPLES") { print "Examples:"; next }
		if (sect == "FILES") { print "Files:"; next }
		print "*" sect "*"
		next
	}
	function flush_syn(   i) {
		for (i = 0; i < nsyn; i++)
			print (i == 0 ? "Usage: " : "   or: ") syn[i]
		print ""
		nsyn = 0
	}
	sect == "NAME" { next }
	sect == "SYNOPSIS" {
		prev_sect = "SYNOPSIS"
		if ($0 ~ /^ *$/) next
		line = $0
		sub(/^ +/, "", line)
		gsub(/  +/, " ", line)
		# A line indented deeper than the first continues the one before.
		if (nsyn > 0 && match($0, /^ */) && RLENGTH > 4) syn[nsyn - 1] = syn[nsyn - 1] " " line
		else syn[nsyn++] = line
		next
	}
	sect == "EXAMPLES" {
		if ($0 ~ /^ *$/) { print ""; next }
		line = $0
		sub(/^ +/, "", line)
		if (line ~ /:$/) { print ""; print line; print "" }
		else print "  $ " line
		next
	}
	sect == "SEE ALSO" {
		line = $0
		sub(/^ +/, "", line)
		gsub(/ --help/, "(1)", line)
		print line
		next
	}
	{
		line = $0
		# The description is plain paragraphs; elsewhere a two-space indent
		# keeps "TAG  text" lines as tagged paragraphs for help2man.
		if (sect == "DESCRIPTION" || sect == "") sub(/^    /, "", line)
		else if (sect != "OPTIONS" && line ~ /^    [^ ]/ && line !~ /^    [^ ]+( [^ ]+)*  /)
			sub(/^    /, "", line) # plain prose in a section of tags
		else sub(/^  /, "", line)
		print line
	}
	END { if (prev_sect == "SYNOPSIS") flush_syn() }
	'
	exit 0
fi

prog=$1
out=$2
name=$(basename "$prog")
# The NAME line: "    prog - what it does".
what=$("$prog" --help | awk '/^NAME$/ { getline; sub(/^ *[^ ]+ - /, ""); print; exit }')
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
command -v help2man >/dev/null 2>&1 || {
	echo "mkman.sh: help2man is missing (tools/ensure-deps.sh installs it)" >&2
	exit 1
}
tmp="$out.tmp"
help2man --no-info --section=1 --source="dkv" --name="$what" \
	--output="$tmp" "$self --filter $prog"
# help2man names the page after the executable string it ran: fix the title.
sed -i "s/^\.TH [^ ]* /.TH $(echo "$name" | tr '[:lower:]' '[:upper:]' | sed 's/-/\\\\-/g') /" "$tmp"
# Lines of JSON (dkvctl's OUTPUT) are examples of output: set them verbatim
# (.nf/.fi), one per line, instead of filled into one unbreakable paragraph;
# the same for the command lines of EXAMPLES.
awk '
	{ l[NR] = $0 }
	END {
		for (i = 1; i <= NR; i++) {
			# Examples: command lines unfilled (a long command wraps as it is).
			if (l[i] ~ /^\.SH/) {
				if (ex) print ".fi"
				ex = l[i] == ".SH EXAMPLES"
				print l[i]
				if (ex) print ".nf"
				continue
			}
			if (ex && l[i] == ".br") continue
			if (l[i] == ".IP" && l[i + 1] ~ /^[{"]/) {
				print ".IP"; print ".nf"; i++
				while (i <= NR && (l[i] ~ /^[{"]/ || (l[i] == ".IP" && l[i + 1] ~ /^[{"]/))) {
					if (l[i] != ".IP") print l[i]
					i++
				}
				print ".fi"; i--
				continue
			}
			print l[i]
		}
		if (ex) print ".fi"
	}' "$tmp" > "$tmp.2"
mv "$tmp.2" "$tmp"
mv "$tmp" "$out"
