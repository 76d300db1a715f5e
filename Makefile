# dkv — build, test, bench, install.
#
#   make                      build every library (build/lib/*.a, build/lib/pkgconfig/dkv.pc)
#   make test [T=suite] [F=substring]   build and run the test suites (alias: make check)
#   make SAN=address,undefined test     the same under sanitizers (objects in build/san-*/)
#   make valgrind [T=suite]   the suites under valgrind memcheck
#   make bench                benchmarks; print tables, write build/bench/report.md with plots
#   make bench-smoke          every benchmark briefly (CI); fails if a call failed
#   make run                  the main job: a local cluster and a workload
#   make install PREFIX=/usr/local DESTDIR=   (manual pages under share/man/man1)
#   make clean
#
# Missing build dependencies (libtirpc-dev, libcmocka-dev, rpcsvc-proto) are installed
# by tools/ensure-deps.sh (apt-get when run as root; otherwise it prints the command).

CC       ?= cc
# GNU spells it prefix; PREFIX is accepted too.
prefix   ?= /usr/local
PREFIX   ?= $(prefix)
DESTDIR  ?=
SAN      ?=
WERROR   ?=
T        ?=
F        ?=
VERSION  := $(shell sed -n 's/^\#define DKV_VERSION_STRING "\(.*\)"/\1/p' include/dkv/common.h)

comma := ,
ifeq ($(SAN),)
BUILD := build
else
BUILD := build/san-$(subst $(comma),-,$(SAN))
endif

# Libraries in dependency order (a library may use the ones after it).
LIBS := shardkv shardmaster kvpaxos paxos pbservice viewservice dkvrpc
dir_dkvrpc := src
dir_viewservice := viewservice
dir_pbservice := pbservice
dir_paxos := paxos
dir_kvpaxos := kvpaxos
dir_shardmaster := shardmaster
dir_shardkv := shardkv

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wformat=2 -Wstrict-prototypes \
        -Wmissing-prototypes -Wpointer-arith -Wvla -Wundef -Wno-cast-function-type
ifneq ($(WERROR),)
WARN += -Werror
endif
OPT      ?= -O2 -g
SANFLAGS := $(if $(SAN),-fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all)
TIRPC_INC := -I/usr/include/tirpc
BASEFLAGS := -std=c11 -D_GNU_SOURCE -pthread $(OPT) $(SANFLAGS) -Iinclude -Isrc -I$(BUILD)/gen $(TIRPC_INC) -MMD -MP
CFLAGS_ALL := $(BASEFLAGS) $(WARN) $(CFLAGS)
# rpcgen output: relaxed warnings (rpcgen code is not ours to fix).
CFLAGS_GEN := $(BASEFLAGS) -w $(CFLAGS)
LDLIBS_ALL := -ltirpc -lpthread $(LDLIBS)
LDFLAGS_ALL := -pthread $(SANFLAGS) $(LDFLAGS)

# ---------------------------------------------------------------- discovery
XFILES := $(foreach l,$(LIBS),$(wildcard $(dir_$(l))/*.x))
GEN_H  := $(patsubst %.x,$(BUILD)/gen/%.h,$(notdir $(XFILES)))
lib_srcs = $(wildcard $(dir_$(1))/*.c)
lib_xs   = $(wildcard $(dir_$(1))/*.x)
lib_objs = $(patsubst %.c,$(BUILD)/obj/%.o,$(call lib_srcs,$(1))) \
           $(patsubst %.x,$(BUILD)/obj/gen/%_xdr.o,$(notdir $(call lib_xs,$(1))))
PRESENT_LIBS := $(foreach l,$(LIBS),$(if $(call lib_srcs,$(l)),$(l)))
LIBFILES := $(foreach l,$(PRESENT_LIBS),$(BUILD)/lib/lib$(l).a)
LINK_LIBS := -L$(BUILD)/lib $(foreach l,$(PRESENT_LIBS),-l$(l))

TLIB_SRCS := $(wildcard tests/lib/*.c)
TLIB_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(TLIB_SRCS))
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))
CMD_SRCS := $(wildcard cmd/*.c)
CMD_BINS := $(patsubst cmd/%.c,$(BUILD)/bin/%,$(CMD_SRCS))
CMDLIB_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard cmd/lib/*.c))
MAN_PAGES := $(patsubst cmd/%.c,$(BUILD)/man/%.1,$(CMD_SRCS))
EX_SRCS := $(wildcard examples/*.c)
EX_BINS := $(patsubst examples/%.c,$(BUILD)/examples/%,$(EX_SRCS))

DEPS_STAMP := build/.deps-ok

# Generated sources are kept (no intermediate-file deletion).
.SECONDARY:

.PHONY: all libs tests test check check-headers valgrind bench benches bench-smoke run examples install uninstall clean deps soak
all: libs $(BUILD)/lib/pkgconfig/dkv.pc $(CMD_BINS) $(MAN_PAGES)

deps: $(DEPS_STAMP)
$(DEPS_STAMP): tools/ensure-deps.sh
	@tools/ensure-deps.sh
	@mkdir -p $(dir $@) && touch $@

libs: $(LIBFILES)

# ---------------------------------------------------------------- rpcgen
vpath %.x $(foreach l,$(LIBS),$(dir_$(l)))
# rpcgen refuses to overwrite its output: remove it first.
$(BUILD)/gen/%.h: %.x | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@rm -f $@
	rpcgen -M -h -o $@ $<

$(BUILD)/gen/%_xdr.c: %.x | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@rm -f $@
	rpcgen -M -i 0 -c -o $@ $<
	@sed -i 's|^#include ".*/\([^/"]*\.h\)"|#include "\1"|' $@

$(BUILD)/obj/gen/%_xdr.o: $(BUILD)/gen/%_xdr.c | $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_GEN) -c -o $@ $<

# ---------------------------------------------------------------- objects
# Generated headers must exist before the first compile (order-only); after that
# the -MMD dependency files say which object needs which header.
$(BUILD)/obj/%.o: %.c | $(GEN_H) $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

define lib_rule
$(BUILD)/lib/lib$(1).a: $(call lib_objs,$(1))
	@mkdir -p $$(dir $$@)
	@rm -f $$@
	ar rcs $$@ $$^
endef
$(foreach l,$(PRESENT_LIBS),$(eval $(call lib_rule,$(l))))

# write_pc(file, prefix): the pkg-config file. The libraries are static, so
# their own dependencies go in Libs (a plain `pkg-config --libs dkv` links).
define write_pc
	@mkdir -p $(dir $(1))
	@printf '%s\n' 'prefix=$(2)' 'exec_prefix=$${prefix}' 'libdir=$${exec_prefix}/lib' \
	  'includedir=$${prefix}/include' '' 'Name: dkv' \
	  'Description: fault-tolerant key/value services over Sun RPC' 'Version: $(VERSION)' \
	  'Cflags: -I$${includedir}' \
	  'Libs: -L$${libdir} $(foreach l,$(PRESENT_LIBS),-l$(l)) -ltirpc -lpthread' > $(1)
endef

$(BUILD)/lib/pkgconfig/dkv.pc: Makefile $(LIBFILES)
	$(call write_pc,$@,$(PREFIX))

# ---------------------------------------------------------------- programs
$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TLIB_OBJS) $(LIBFILES)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(TLIB_OBJS) $(LINK_LIBS) -lcmocka $(LDLIBS_ALL) -lm

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIBFILES)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(LINK_LIBS) $(LDLIBS_ALL) -lm

$(BUILD)/bin/%: $(BUILD)/obj/cmd/%.o $(CMDLIB_OBJS) $(LIBFILES)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(CMDLIB_OBJS) $(LINK_LIBS) $(LDLIBS_ALL)

# Manual pages: generated with help2man from each program's own --help.
$(BUILD)/man/%.1: $(BUILD)/bin/% tools/mkman.sh | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	tools/mkman.sh $< $@

$(BUILD)/examples/%: $(BUILD)/obj/examples/%.o $(LIBFILES)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(LINK_LIBS) $(LDLIBS_ALL)

# The ops suite runs a short bench report: it needs the bench programs.
$(BUILD)/tests/test_ops: | $(BENCH_BINS)

tests: all $(TEST_BINS)
examples: all $(EX_BINS)

# ---------------------------------------------------------------- running
# T=<suite> picks build/tests/test_<suite>; F=<substring> filters test names.
SEL_TESTS := $(if $(T),$(BUILD)/tests/test_$(T),$(TEST_BINS))
SUITE_TIMEOUT ?= 1200
# The diskv suite (lab 5) sleeps ~4.6 min by itself and runs 9-15 daemons: more room.
export SUITE_TIMEOUT_test_diskv ?= 2400
# Only the selected suites are built, so one suite that does not link blocks no other.
test check: deps
	@$(MAKE) --no-print-directory all $(SEL_TESTS) check-headers
	@TSAN_OPTIONS="suppressions=$(CURDIR)/tools/tsan.supp $$TSAN_OPTIONS" tools/run-tests.sh "$(SUITE_TIMEOUT)" "$(F)" "" $(SEL_TESTS)

# Every public header compiles on its own with -Iinclude and includes no rpc header.
check-headers:
	@for h in include/dkv/*.h; do \
	  if grep -q '#include <rpc/' $$h; then echo "$$h includes an rpc header" >&2; exit 1; fi; \
	  printf '#include "%s"\n' $${h#include/} | $(CC) -std=c11 -Wall -Wextra -Wpedantic -Werror -Iinclude -x c -fsyntax-only - \
	    || { echo "$$h does not compile on its own" >&2; exit 1; }; \
	done
	@echo "public headers: each compiles on its own"

VALGRIND := valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect --track-origins=no
valgrind: deps
	@$(MAKE) --no-print-directory all $(SEL_TESTS)
	@command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
	@DKV_UNDER_VALGRIND=1 tools/run-tests.sh "$$(( $(SUITE_TIMEOUT) * 4 ))" "$(F)" "$(VALGRIND)" $(SEL_TESTS)

# Long randomised fault schedules, outside CI: SOAK_RUNS runs per service, fresh seed.
SOAK_RUNS ?= 50
soak: deps
	@$(MAKE) --no-print-directory tests
	@seed=$${DKV_TEST_SEED:-$$(date +%s)}; echo "soak: DKV_TEST_SEED=$$seed DKV_CHAOS_RUNS=$(SOAK_RUNS)"; \
	  DKV_TEST_SEED=$$seed DKV_CHAOS_RUNS=$(SOAK_RUNS) $(BUILD)/tests/test_chaos

# Runs every bench (tables on stdout) and writes $(BUILD)/bench/report.md with the
# floors of the same run and gnuplot plots (bench/report.sh).
bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_BINS)
	@bench/report.sh $(BUILD)/bench $(BUILD)/bench

# Every bench briefly (CI's smoke test: about a second each, bench_shardkv's rows take whole
# seconds); a bench with failed calls exits non-zero and fails it.
benches: all $(BENCH_BINS)
bench-smoke: deps
	@$(MAKE) --no-print-directory benches
	@for b in $(BENCH_BINS); do s=0.1; case $$b in *shardkv) s=1;; esac; \
	  echo "== $$b (smoke, DKV_BENCH_SECONDS=$$s)"; DKV_BENCH_SECONDS=$$s $$b > /dev/null || \
	  { echo "$$b failed" >&2; exit 1; }; done

# The main job: a local cluster of dkvd processes on loopback TCP and a workload.
# make run RUN_ARGS="--duration 60 --clients 16" changes the run.
RUN_ARGS ?=
run: deps
	@$(MAKE) --no-print-directory all examples
	@$(BUILD)/bin/dkv-cluster $(RUN_ARGS)

# ---------------------------------------------------------------- install
install: all
	install -d $(DESTDIR)$(PREFIX)/include/dkv $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/dkv/*.h $(DESTDIR)$(PREFIX)/include/dkv/
	install -m 644 $(LIBFILES) $(DESTDIR)$(PREFIX)/lib/
	$(if $(CMD_BINS),install -d $(DESTDIR)$(PREFIX)/bin && install -m 755 $(CMD_BINS) $(DESTDIR)$(PREFIX)/bin/)
	$(call write_pc,$(DESTDIR)$(PREFIX)/lib/pkgconfig/dkv.pc,$(PREFIX))
	$(if $(MAN_PAGES),install -d $(DESTDIR)$(PREFIX)/share/man/man1 && install -m 644 $(MAN_PAGES) $(DESTDIR)$(PREFIX)/share/man/man1/)

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/include/dkv/,$(notdir $(wildcard include/dkv/*.h)))
	-rmdir $(DESTDIR)$(PREFIX)/include/dkv
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/lib/,$(notdir $(LIBFILES))) $(DESTDIR)$(PREFIX)/lib/pkgconfig/dkv.pc
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(notdir $(CMD_BINS)))
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/share/man/man1/,$(notdir $(MAN_PAGES)))

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)

# ---------------------------------------------------------------- fuzzing
# make fuzz [FUZZ_SECONDS=N]: build the libFuzzer targets with clang (installed
# by fuzz/ensure-clang.sh when missing) and run each N seconds: the log reader,
# the snapshot reader, and every XDR type of every .x file (one target per .x,
# found by XFILES: new .x files are picked up). Inputs that crashed, once fixed,
# go to tests/fuzz-corpus/<target>/ (replayed by tests/test_storage.c).
FUZZ_SECONDS ?= 30
FUZZ_CC ?= clang
FUZZ_DIR := build/fuzz
FUZZ_SAN := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -pthread -g -O1 -fno-omit-frame-pointer -w \
               -Iinclude -Isrc -Itests/lib -Ifuzz -I$(BUILD)/gen $(TIRPC_INC)
FUZZ_LIB_SRCS := src/storage.c src/crc32c.c src/util.c tests/lib/simdisk.c
FUZZ_XBASES := $(basename $(notdir $(XFILES)))
FUZZ_TARGETS := log snap $(addprefix xdr_,$(FUZZ_XBASES))
FUZZ_BINS := $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_TARGETS))

.PHONY: fuzz fuzz-build fuzz-deps
fuzz-deps:
	@fuzz/ensure-clang.sh $(FUZZ_CC)
fuzz-build: deps fuzz-deps
	@$(MAKE) --no-print-directory $(GEN_H) $(FUZZ_BINS)
fuzz: fuzz-build
	@fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_DIR) $(FUZZ_TARGETS)

$(FUZZ_DIR)/fuzz_log $(FUZZ_DIR)/fuzz_snap: $(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_LIB_SRCS) src/storage.h tests/lib/simdisk.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -o $@ $(filter %.c,$^) -ltirpc -lpthread

$(FUZZ_DIR)/gen/fuzz_xdr_%.c: %.x fuzz/xdr-types.sh
	@mkdir -p $(dir $@)
	fuzz/xdr-types.sh target $< > $@

$(FUZZ_DIR)/fuzz_xdr_%: $(FUZZ_DIR)/gen/fuzz_xdr_%.c $(BUILD)/gen/%_xdr.c fuzz/fuzz_xdr.h | $(GEN_H)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -o $@ $(filter %.c,$^) -ltirpc -lpthread

# The regression replay in test_storage includes the tables of every .x file.
$(BUILD)/gen/fuzz_xdr_tables.c: $(XFILES) fuzz/xdr-types.sh
	@mkdir -p $(dir $@)
	fuzz/xdr-types.sh tables $(XFILES) > $@
$(BUILD)/obj/tests/test_storage.o: $(BUILD)/gen/fuzz_xdr_tables.c
