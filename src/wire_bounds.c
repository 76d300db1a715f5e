/*
 * wire_bounds.c — compile-time checks that the bounds written as literal
 * numbers in the .x files (rpcgen needs literals or .x consts) equal the C
 * macros they stand for. Every variable-length XDR field is bounded so that a
 * tiny malicious record cannot make a decoder allocate gigabytes, or free a
 * huge array element by element (found by `make fuzz`); tests/test_xdr.c sends
 * such records to live servers. Nothing here runs.
 */
#include "dkv/common.h"
#include "dkv/shardmaster.h"
#include "dkv_internal.h"

#include "kv_prot.h"
#include "pb_prot.h"
#include "rsm_prot.h"
#include "skv_prot.h"
#include "sm_prot.h"
#include "status_prot.h"
#include "vs_prot.h"

#define SAME(x, c) _Static_assert((x) == (c), #x " (.x) differs from " #c)

SAME(KV_KEY_MAX, DKV_KEY_MAX);
SAME(KV_VALUE_MAX, DKV_VALUE_MAX);

SAME(PB_KEY_LEN, DKV_KEY_MAX);
SAME(PB_VALUE_LEN, DKV_VALUE_MAX);
SAME(PB_NAME_LEN, DKV_NAME_MAX - 1);
SAME(PB_TRANSFER_KEYS, DKV_STATE_KEYS_MAX);
SAME(PB_STATE_MAX, DKV_STATE_MAX);

SAME(VS_NAME_LEN, DKV_NAME_MAX - 1);

SAME(RSM_STATE_MAX, DKV_STATE_MAX);

SAME(SKV_NSHARDS, SHARDMASTER_NSHARDS);
SAME(SKV_KEY_MAX, DKV_KEY_MAX);
SAME(SKV_VALUE_MAX, DKV_VALUE_MAX);
SAME(SKV_NAME_MAX, DKV_NAME_MAX - 1);
SAME(SKV_MAX_SERVERS, SM_WIRE_MAX_SERVERS);
SAME(SKV_MAX_GROUPS, SM_WIRE_MAX_GROUPS);
SAME(SKV_STATE_MAX, DKV_STATE_MAX);
SAME(SKV_SHARD_KEYS, DKV_STATE_KEYS_MAX);

SAME(SM_WIRE_NSHARDS, SHARDMASTER_NSHARDS);
SAME(SM_WIRE_NAME_MAX, DKV_NAME_MAX - 1);

/* One decoded whole-state array stays within one value's worth of memory. */
_Static_assert((unsigned long long)DKV_STATE_KEYS_MAX * sizeof(pb_kv) <= DKV_VALUE_MAX, "pb kvs");
_Static_assert((unsigned long long)DKV_STATE_KEYS_MAX * sizeof(skv_kv) <= DKV_VALUE_MAX, "skv kvs");
_Static_assert((unsigned long long)SM_WIRE_MAX_CONFIGS * sizeof(sm_wire_config) <= DKV_VALUE_MAX, "sm configs");

/* (ISO C wants at least one declaration that is not an assertion.) */
extern const int dkv_wire_bounds_checked;
const int dkv_wire_bounds_checked = 1;
