/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Token buckets (GCRA) and the clock they run on: the per-source buckets of
 * steps 12-13 and the global limiters (the global SYN budget, drop samples).
 */
#ifndef PORTCULLIS_RATELIMIT_H
#define PORTCULLIS_RATELIMIT_H

#include "maps.h"
#include "parsing.h"

/* Load-time constant (rodata): read now from user_clock instead of the
 * kernel's coarse monotonic clock (simulation and tests replay time). */
const volatile __u8 use_user_clock = 0;

/* Compare-and-swap attempts on one bucket before giving up. Giving up counts
 * as "over the limit": under that much contention the bucket is being hit by
 * every CPU at once, and failing closed keeps a flood from slipping through. */
#define PC_CAS_RETRIES 8

static __always_inline __s64 pc_now(void)
{
	if (use_user_clock) {
		__u32 zero = 0;
		__u64 *t = bpf_map_lookup_elem(&user_clock, &zero);

		return t ? (__s64)*t : 0;
	}
	return (__s64)bpf_ktime_get_coarse_ns();
}

/* Takes one token from a GCRA bucket whose state is *empty_at.
 * Returns 1 if the packet conforms (a token was taken), 0 if over. */
static __always_inline int pc_take_token(__s64 *empty_at, const struct pc_rate *rate, __s64 now)
{
	__s64 interval = (__s64)rate->interval_ns;
	__s64 full_at = now - interval * (__s64)rate->burst;

	if (interval == 0)
		return 1; /* no limit configured */

	for (int i = 0; i < PC_CAS_RETRIES; i++) {
		__s64 old = *(volatile __s64 *)empty_at;
		__s64 base = old < full_at ? full_at : old; /* refill caps at burst */

		if (now - base < interval)
			return 0; /* less than one whole token */
		if (__sync_val_compare_and_swap(empty_at, old, base + interval) == old)
			return 1;
	}
	return 0;
}

/* Load-time constant (rodata): the seed of first_sight's hash, random per
 * load so that an attacker cannot aim a collision at a source's slot (fixed
 * under use_user_clock, so that replays see the same collisions). */
const volatile __u64 first_sight_seed = 0;

static __always_inline __u64 pc_mix64(__u64 x)
{
	/* MurmurHash3's finalizer: every input bit moves every output bit. */
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* 1 the first time a source (`h`, its key's hash) is seen, as far as
 * first_sight remembers: it records it. 0 the second time: its bucket is due,
 * and the record goes.
 * Compare-and-swap, so that of two CPUs seeing a new source at once only one
 * lets its packet go without a bucket. */
static __always_inline int pc_first_sight(__u64 h)
{
	__u32 slot = (__u32)h & (PC_FIRST_SIGHT_SLOTS - 1);
	__u64 *seen = bpf_map_lookup_elem(&first_sight, &slot);
	__u64 old;

	h |= 1; /* never 0, an empty slot */
	if (!seen)
		return 0;
	old = *(volatile __u64 *)seen;
	if (old == h) {
		/* Its bucket is created now: should LRU evict it, the source
		 * starts over from its first packet. */
		__sync_val_compare_and_swap(seen, h, 0);
		return 0;
	}
	return __sync_val_compare_and_swap(seen, old, h) == old;
}

/* The bucket pair of `key` (its hash `h`) in `map`. A source without one
 * gets none for its first packet (NULL: it conforms), so that the one-SYN
 * sources of a spoofed flood never churn `map` and cost one array write. Its
 * second packet creates it: from its record in `dry` if it ran dry before
 * being evicted, else as `charged`, with the first packet's tokens taken.
 * Another CPU may create it first (EEXIST); either way, it is looked up
 * again. */
static __always_inline struct pc_bucket *pc_bucket_of(void *map, void *dry, const void *key,
						      __u64 h, const struct pc_bucket *charged)
{
	struct pc_bucket *b = bpf_map_lookup_elem(map, key);
	const struct pc_bucket *was;

	if (b)
		return b;
	if (pc_first_sight(h))
		return NULL;
	was = bpf_map_lookup_elem(dry, key);
	if (!was)
		was = charged;
	bpf_map_update_elem(map, key, was, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

/* The "empty at" of a bucket of `rate` that has given one token at `now`:
 * its burst less one. A rate of 0 (no limit) is full. */
static __always_inline __s64 pc_one_token_taken(__u64 interval, __u64 burst, __s64 now)
{
	return interval ? now - (__s64)interval * ((__s64)burst - 1) : PC_BUCKET_FULL;
}

/* The packet's source masked to the policy's sourcePrefix, as bucket keys. */
static __always_inline void pc_bucket_key_v4_of(const struct pc_packet *p,
						const struct pc_config *cfg, __u32 override_id,
						struct pc_bucket_key_v4 *key)
{
	__u32 bits = cfg->source_prefix_v4;
	__u32 addr;

	key->rate_override_id = override_id;
	__builtin_memcpy(&addr, p->src, 4);
	addr = bpf_ntohl(addr);
	if (bits < 32)
		addr &= bits ? ~0U << (32 - bits) : 0;
	addr = bpf_htonl(addr);
	__builtin_memcpy(key->addr, &addr, 4);
}

static __always_inline void pc_bucket_key_v6_of(const struct pc_packet *p,
						const struct pc_config *cfg, __u32 override_id,
						struct pc_bucket_key_v6 *key)
{
	__u32 bits = cfg->source_prefix_v6;
	__u64 hi, lo;

	/* The source masked to `bits`, as two big-endian words. */
	key->rate_override_id = override_id;
	__builtin_memcpy(&hi, p->src, 8);
	__builtin_memcpy(&lo, p->src + 8, 8);
	hi = bpf_be64_to_cpu(hi);
	lo = bpf_be64_to_cpu(lo);
	if (bits < 64)
		hi &= bits ? ~0ULL << (64 - bits) : 0;
	if (bits < 128)
		lo &= bits > 64 ? ~0ULL << (128 - bits) : 0;
	hi = bpf_cpu_to_be64(hi);
	lo = bpf_cpu_to_be64(lo);
	__builtin_memcpy(key->addr, &hi, 8);
	__builtin_memcpy(key->addr + 8, &lo, 8);
}

/* The per-source bucket pair of the packet's source prefix; NULL for a
 * source seen for the first time (pc_bucket_of) or when the map is full
 * (LRU: transient). Either conforms. */
static __always_inline struct pc_bucket *pc_source_bucket(const struct pc_packet *p,
							  const struct pc_config *cfg,
							  __u32 override_id,
							  const struct pc_bucket *charged)
{
	if (p->family == PC_FAMILY_V4) {
		struct pc_bucket_key_v4 key;
		__u64 word;

		pc_bucket_key_v4_of(p, cfg, override_id, &key);
		__builtin_memcpy(&word, &key, sizeof(word));
		return pc_bucket_of(&source_buckets_v4, &dry_buckets_v4, &key,
				    pc_mix64(word ^ first_sight_seed), charged);
	} else {
		struct pc_bucket_key_v6 key;
		__u64 hi, lo;

		pc_bucket_key_v6_of(p, cfg, override_id, &key);
		__builtin_memcpy(&hi, key.addr, 8);
		__builtin_memcpy(&lo, key.addr + 8, 8);
		return pc_bucket_of(&source_buckets_v6, &dry_buckets_v6, &key,
				    pc_mix64(pc_mix64(pc_mix64(hi ^ first_sight_seed) ^ lo) ^
					     key.rate_override_id),
				    charged);
	}
}

/* Records bucket b of the packet's source as run dry. */
static __always_inline void pc_source_ran_dry(const struct pc_packet *p,
					      const struct pc_config *cfg, __u32 override_id,
					      const struct pc_bucket *b)
{
	if (p->family == PC_FAMILY_V4) {
		struct pc_bucket_key_v4 key;

		pc_bucket_key_v4_of(p, cfg, override_id, &key);
		bpf_map_update_elem(&dry_buckets_v4, &key, b, BPF_ANY);
	} else {
		struct pc_bucket_key_v6 key;

		pc_bucket_key_v6_of(p, cfg, override_id, &key);
		bpf_map_update_elem(&dry_buckets_v6, &key, b, BPF_ANY);
	}
}

/* Takes one token from *empty_at, a bucket of b (the source bucket `id`
 * of packet p), as pc_take_token does. When the token was the last whole
 * one, records b as run dry: so at most once per token taken, never for a
 * refused packet (a flood from one source writes nothing), and never for a
 * source that sends fewer SYNs than the burst (a spoofed flood's). */
static __always_inline int pc_take_source_token(const struct pc_packet *p,
						const struct pc_config *cfg, __u32 id,
						const struct pc_bucket *b, __s64 *empty_at,
						const struct pc_rate *rate, __s64 now)
{
	if (!pc_take_token(empty_at, rate, now))
		return 0;
	if (now - *(volatile __s64 *)empty_at < (__s64)rate->interval_ns)
		pc_source_ran_dry(p, cfg, id, b);
	return 1;
}

/* Takes one token from the global limiter `id` (the shadow policy's own
 * word of it when `shadow`); 1 if it conforms. A missing entry (never: it is
 * an array) conforms. */
static __always_inline int pc_take_global_token(__u32 id, const struct pc_rate *rate, __s64 now,
						int shadow)
{
	struct pc_global_bucket *g = bpf_map_lookup_elem(&global_buckets, &id);

	return !g || pc_take_token(shadow ? &g->shadow_empty_at : &g->empty_at, rate, now);
}

#endif /* PORTCULLIS_RATELIMIT_H */
