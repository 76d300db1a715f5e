#!/bin/sh
# Check the build dependencies of dkv; install the missing ones with apt-get when
# running as root, otherwise print the exact command and fail.
set -u
missing=""
[ -f /usr/include/tirpc/rpc/rpc.h ] || missing="$missing libtirpc-dev"
[ -f /usr/include/cmocka.h ] || missing="$missing libcmocka-dev"
[ -f /usr/include/uthash.h ] || missing="$missing uthash-dev"
command -v rpcgen >/dev/null 2>&1 || missing="$missing rpcsvc-proto"
command -v cc >/dev/null 2>&1 || missing="$missing gcc"
command -v make >/dev/null 2>&1 || missing="$missing make"
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
# Manual pages are generated from the programs' --help; make bench plots.
command -v help2man >/dev/null 2>&1 || missing="$missing help2man"
command -v gnuplot >/dev/null 2>&1 || missing="$missing gnuplot-nox"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
	echo "dkv: installing build dependencies:$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null 2>&1 || true
	# shellcheck disable=SC2086
	apt-get install -y -qq $missing >/dev/null || { echo "dkv: apt-get install$missing failed" >&2; exit 1; }
	exit 0
fi
echo "dkv: missing build dependencies. Run:" >&2
echo "    sudo apt-get install -y$missing" >&2
exit 1
