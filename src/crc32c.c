/*
 * src/crc32c.c — CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected
 * 0x82F63B78), the checksum of the storage layer's log records and snapshots.
 *
 * Why not zlib's crc32: libdkvrpc is linked by programs outside this
 * repository with exactly `-lviewservice -ldkvrpc -ltirpc -lpthread` (API.md);
 * a -lz dependency would break them. CRC-32C is also the checksum of iSCSI,
 * ext4 metadata and LevelDB/RocksDB, and x86 has an instruction for it.
 *
 * Two implementations with one result: a portable slicing-by-8 table version
 * (tables computed once, thread-safely) and the SSE4.2 `crc32` instruction,
 * chosen at run time (__builtin_cpu_supports). tests/test_storage.c checks the
 * RFC 3720 values and table against hardware on random buffers.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "storage.h"

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
		table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

uint32_t dkv_crc32c_sw(uint32_t crc, const void *buf, size_t n)
{
	pthread_once(&table_once, table_init);
	const uint8_t *p = buf;
	uint32_t c = ~crc;
	while (n > 0 && ((uintptr_t)p & 7) != 0) {
		c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
		n--;
	}
	while (n >= 8) {
		uint32_t lo, hi;
		memcpy(&lo, p, 4);
		memcpy(&hi, p + 4, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
		lo = __builtin_bswap32(lo);
		hi = __builtin_bswap32(hi);
#endif
		lo ^= c;
		c = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^
		    table[4][lo >> 24] ^ table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^
		    table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
		p += 8;
		n -= 8;
	}
	while (n-- > 0)
		c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
	return ~c;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_HW 1
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	uint64_t c = (uint32_t)~crc;
	while (n > 0 && ((uintptr_t)p & 7) != 0) {
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
		n--;
	}
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		c = __builtin_ia32_crc32di(c, w);
		p += 8;
		n -= 8;
	}
	while (n-- > 0)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return ~(uint32_t)c;
}

static bool hw_ok;
static pthread_once_t hw_once = PTHREAD_ONCE_INIT;
static void hw_init(void)
{
	__builtin_cpu_init();
	hw_ok = __builtin_cpu_supports("sse4.2");
}
#else
#define HAVE_HW 0
#endif

bool dkv_crc32c_hw_available(void)
{
#if HAVE_HW
	pthread_once(&hw_once, hw_init);
	return hw_ok;
#else
	return false;
#endif
}

uint32_t dkv_crc32c(uint32_t crc, const void *buf, size_t n)
{
#if HAVE_HW
	if (dkv_crc32c_hw_available())
		return crc32c_hw(crc, buf, n);
#endif
	return dkv_crc32c_sw(crc, buf, n);
}
