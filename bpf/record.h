/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one exit of the verdict function: pc_record() counts the verdict (by
 * interface, hook, verdict and reason), counts drops by destination port,
 * samples drops to the ring buffer and, in simulation, reports the verdict.
 */
#ifndef PORTCULLIS_RECORD_H
#define PORTCULLIS_RECORD_H

#include "maps.h"
#include "parsing.h"
#include "ratelimit.h"

/* Load-time constants (rodata), set by user space before load. */
const volatile __u8 record_last_verdict = 0; /* write last_verdict */
const volatile __u64 sample_interval_ns = 10 * 1000 * 1000; /* 100/s */
const volatile __u64 sample_burst = 100;

struct pc_result {
	__u8 reason;
	__u8 verdict;
	__u64 version;
};

/* Where a drop is counted by port: in a counted_ports row (row = 1 + the
 * row), or in the hash under the real port (named) or under 0. */
struct pc_port_count {
	__u16 row;
	__u8 named;
	__u8 pad;
};

static __always_inline void pc_count(__u32 ifindex, __u8 hook, __u8 verdict, __u8 reason,
				     __u64 bytes)
{
	struct pc_verdict_key key = {
		.ifindex = ifindex, .hook = hook, .verdict = verdict, .reason = reason
	};
	struct pc_counter *c;

	__u32 slot = ifindex % PC_IFACE_SLOTS;
	__u32 *owner = bpf_map_lookup_elem(&iface_slots, &slot);

	/* Inlined array lookups instead of hashing the key: the interface's
	 * block, claimed once by its first packet. */
	if (owner && (*owner == ifindex ||
		      (*owner == 0 && __sync_val_compare_and_swap(owner, 0, ifindex) == 0))) {
		__u32 idx = PC_FAST_COUNTER_INDEX(slot, hook & 1, verdict % PC_VERDICT_COUNT,
						  reason % PC_REASON_COUNT);

		c = bpf_map_lookup_elem(&verdict_counters_fast, &idx);
		if (c) {
			c->packets++;
			c->bytes += bytes;
		}
		return;
	}
	c = bpf_map_lookup_elem(&verdict_counters, &key);
	if (!c) {
		struct pc_counter zero = {};

		bpf_map_update_elem(&verdict_counters, &key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&verdict_counters, &key);
		if (!c)
			return;
	}
	/* Per-CPU value: no other CPU writes it. */
	c->packets++;
	c->bytes += bytes;
}

static __always_inline void pc_count_port(const struct pc_packet *p, __u8 reason,
					  const struct pc_port_count *count)
{
	struct pc_port_key key = { .port = count->named ? bpf_ntohs(p->dport) : 0,
				   .proto = p->proto,
				   .reason = reason };
	__u64 *c;

	if (count->row) {
		/* Named port with a row: an inlined per-CPU array increment. */
		__u32 idx = ((__u32)count->row - 1) % PC_MAX_COUNTED_PORTS * PC_REASON_COUNT +
			    reason % PC_REASON_COUNT;

		c = bpf_map_lookup_elem(&named_port_drops, &idx);
		if (c)
			(*c)++;
		return;
	}
	c = bpf_map_lookup_elem(&port_drop_counters, &key);
	if (!c) {
		__u64 zero = 0;

		bpf_map_update_elem(&port_drop_counters, &key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&port_drop_counters, &key);
		if (!c)
			return;
	}
	(*c)++;
}

static __always_inline void pc_sample(const struct pc_packet *p, __u32 ifindex, __u8 hook,
				      __u8 verdict, __u8 reason)
{
	const struct pc_rate rate = { .interval_ns = sample_interval_ns, .burst = sample_burst };
	struct pc_sample *s;
	__s64 now = pc_now();

	if (!pc_take_global_token(PC_SAMPLE_BUCKET, &rate, now, 0))
		return;
	s = bpf_ringbuf_reserve(&drop_samples, sizeof(*s), 0);
	if (!s)
		return;
	s->timestamp_ns = (__u64)now;
	s->ifindex = ifindex;
	s->hook = hook;
	s->verdict = verdict;
	s->reason = reason;
	s->family = p->family;
	s->proto = p->proto;
	s->sport = bpf_ntohs(p->sport);
	s->dport = bpf_ntohs(p->dport);
	__builtin_memcpy(s->src, p->src, 16);
	__builtin_memcpy(s->dst, p->dst, 16);
	bpf_ringbuf_submit(s, 0);
}

/* Records the verdict `r` of the packet `p` (`bytes` long) judged at `hook`
 * on `ifindex`: every path of pc_judge() ends here. */
static __always_inline void pc_record(const struct pc_packet *p, __u32 ifindex, __u8 hook,
				      const struct pc_result *r, __u64 bytes,
				      const struct pc_port_count *port_count)
{
	pc_count(ifindex, hook, r->verdict, r->reason, bytes);
	if (pc_reason_drops(r->reason)) { /* dropped, or audited */
		pc_count_port(p, r->reason, port_count);
		pc_sample(p, ifindex, hook, r->verdict, r->reason);
	}
	if (record_last_verdict) {
		__u32 zero = 0;
		struct pc_last_verdict *lv = bpf_map_lookup_elem(&last_verdict, &zero);

		if (lv) {
			lv->verdict = r->verdict;
			lv->reason = r->reason;
			lv->version = r->version;
		}
	}
}

#endif /* PORTCULLIS_RECORD_H */
