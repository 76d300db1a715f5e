#!/bin/sh
# fuzz/ensure-clang.sh CC — make sure CC can build libFuzzer targets
# (-fsanitize=fuzzer); install Debian's clang with apt-get when running as
# root, like tools/ensure-deps.sh; otherwise print the command and fail.
# Only `make fuzz` needs it.
set -u
cc=${1:-clang}
probe() {
	command -v "$cc" >/dev/null 2>&1 || return 1
	t=$(mktemp -d) || return 1
	printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' > "$t/p.c"
	"$cc" -fsanitize=fuzzer,address,undefined -o "$t/p" "$t/p.c" >/dev/null 2>&1
	r=$?
	rm -rf "$t"
	return $r
}
probe && exit 0
if [ "$(id -u)" = 0 ]; then
	echo "dkv: installing clang (libFuzzer) for make fuzz" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null 2>&1 || true
	apt-get install -y -qq clang >/dev/null || { echo "dkv: apt-get install clang failed" >&2; exit 1; }
	probe && exit 0
	echo "dkv: $cc still cannot build -fsanitize=fuzzer targets" >&2
	exit 1
fi
echo "dkv: make fuzz needs clang with libFuzzer. Run:" >&2
echo "    sudo apt-get install -y clang" >&2
exit 1
