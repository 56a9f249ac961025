/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The verdict function: the order of evaluation of ../shared/PRODUCT.md,
 * shared unchanged by the XDP and TC entry points. pc_judge() decides;
 * pc_record() is the one exit that counts, samples and (in simulation)
 * reports the verdict.
 */
#ifndef PORTCULLIS_VERDICT_H
#define PORTCULLIS_VERDICT_H

#include "maps.h"
#include "parsing.h"

/* Load-time constants (rodata), set by user space before load. */
const volatile __u8 use_user_clock = 0; /* read now from user_clock */
const volatile __u8 record_last_verdict = 0; /* write last_verdict */
const volatile __u64 sample_interval_ns = 10 * 1000 * 1000; /* 100/s */
const volatile __u64 sample_burst = 100;

/* Compare-and-swap attempts on one bucket before giving up. Giving up counts
 * as "over the limit": under that much contention the bucket is being hit by
 * every CPU at once, and failing closed keeps a flood from slipping through. */
#define PC_CAS_RETRIES 8

struct pc_result {
	__u8 reason;
	__u8 verdict;
	__u64 version;
};

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

/* The bucket pair of `key` in `map`, created full on first use. Another CPU
 * may create it first (EEXIST); either way, it is looked up again. */
static __always_inline struct pc_bucket *pc_bucket_of(void *map, const void *key)
{
	struct pc_bucket *b = bpf_map_lookup_elem(map, key);

	if (b)
		return b;
	struct pc_bucket fresh = { .syn_empty_at = PC_BUCKET_FULL,
				   .conn_empty_at = PC_BUCKET_FULL };

	bpf_map_update_elem(map, key, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

/* The per-source bucket pair of the packet's source prefix. */
static __always_inline struct pc_bucket *
pc_source_bucket(const struct pc_packet *p, const struct pc_config *cfg, __u32 override_id)
{
	if (p->family == PC_FAMILY_V4) {
		struct pc_bucket_key_v4 key = { .rate_override_id = override_id };
		__u32 bits = cfg->source_prefix_v4;
		__u32 addr;

		__builtin_memcpy(&addr, p->src, 4);
		addr = bpf_ntohl(addr);
		if (bits < 32)
			addr &= bits ? ~0U << (32 - bits) : 0;
		addr = bpf_htonl(addr);
		__builtin_memcpy(key.addr, &addr, 4);
		return pc_bucket_of(&source_buckets_v4, &key);
	} else {
		struct pc_bucket_key_v6 key = { .rate_override_id = override_id };
		__u32 bits = cfg->source_prefix_v6;
		__u64 hi, lo;

		/* The source masked to `bits`, as two big-endian words. */
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
		__builtin_memcpy(key.addr, &hi, 8);
		__builtin_memcpy(key.addr + 8, &lo, 8);
		return pc_bucket_of(&source_buckets_v6, &key);
	}
}

/* Which sets (and the blocklist) hold the source: exact hosts first, then the
 * longest prefix. The compiler folds enclosing prefixes into every entry.
 * Tables the policy leaves empty are not looked up. */
static __always_inline pc_set_mask pc_source_sets(const struct pc_packet *p, __u32 slot,
						  __u32 cfg_flags)
{
	pc_set_mask *m = NULL;

	if (p->family == PC_FAMILY_V4) {
		if (cfg_flags & PC_CFG_SRC_V4_EXACT) {
			struct pc_src_v4_key key = { .slot = slot };

			__builtin_memcpy(key.addr, p->src, 4);
			m = bpf_map_lookup_elem(&src_v4_exact, &key);
			if (m)
				return *m;
		}
		if (cfg_flags & PC_CFG_SRC_V4_PREFIX) {
			struct pc_lpm_v4_key key = { .prefixlen = PC_LPM_SLOT_BITS + 32,
						     .slot = slot };

			__builtin_memcpy(key.addr, p->src, 4);
			m = bpf_map_lookup_elem(&src_v4_prefix, &key);
		}
	} else {
		if (cfg_flags & PC_CFG_SRC_V6_EXACT) {
			struct pc_src_v6_key key = { .slot = slot };

			__builtin_memcpy(key.addr, p->src, 16);
			m = bpf_map_lookup_elem(&src_v6_exact, &key);
			if (m)
				return *m;
		}
		if (cfg_flags & PC_CFG_SRC_V6_PREFIX) {
			struct pc_lpm_v6_key key = { .prefixlen = PC_LPM_SLOT_BITS + 128,
						     .slot = slot };

			__builtin_memcpy(key.addr, p->src, 16);
			m = bpf_map_lookup_elem(&src_v6_prefix, &key);
		}
	}
	return m ? *m : 0;
}

static __always_inline int pc_destination_policed(const struct pc_packet *p, __u32 slot)
{
	if (p->family == PC_FAMILY_V4) {
		struct pc_lpm_v4_key key = { .prefixlen = PC_LPM_SLOT_BITS + 32, .slot = slot };

		__builtin_memcpy(key.addr, p->dst, 4);
		return bpf_map_lookup_elem(&dst_v4, &key) != NULL;
	} else {
		struct pc_lpm_v6_key key = { .prefixlen = PC_LPM_SLOT_BITS + 128, .slot = slot };

		__builtin_memcpy(key.addr, p->dst, 16);
		return bpf_map_lookup_elem(&dst_v6, &key) != NULL;
	}
}

/* The flow key of a packet as it arrives (src = remote peer); with `reply`,
 * of its replies (for a packet leaving the node). */
static __always_inline void pc_flow_key_of(const struct pc_packet *p, int reply,
					   struct pc_flow_key *k)
{
	k->family = p->family;
	k->proto = p->proto;
	k->sport = reply ? p->dport : p->sport;
	k->dport = reply ? p->sport : p->dport;
	__builtin_memcpy(k->src, reply ? p->dst : p->src, 16);
	__builtin_memcpy(k->dst, reply ? p->src : p->dst, 16);
}

/* ICMP that must always pass: ICMPv6 neighbour discovery, and the path-MTU
 * signals ("fragmentation needed", "packet too big") that keep TCP working. */
static __always_inline int pc_is_essential_icmp(const struct pc_packet *p)
{
	if (p->non_first_fragment)
		return 0;
	if (p->family == PC_FAMILY_V4 && p->proto == IPPROTO_ICMP)
		return p->icmp_type == PC_ICMP_DEST_UNREACH && p->icmp_code == PC_ICMP_FRAG_NEEDED;
	if (p->family == PC_FAMILY_V6 && p->proto == IPPROTO_ICMPV6)
		return p->icmp_type == PC_ICMPV6_PKT_TOOBIG ||
		       (p->icmp_type >= PC_ICMPV6_ND_FIRST && p->icmp_type <= PC_ICMPV6_ND_LAST);
	return 0;
}

static __always_inline int pc_is_icmp(const struct pc_packet *p)
{
	return (p->family == PC_FAMILY_V4 && p->proto == IPPROTO_ICMP) ||
	       (p->family == PC_FAMILY_V6 && p->proto == IPPROTO_ICMPV6);
}

static __always_inline int pc_rule_l4(__u8 proto)
{
	if (proto == IPPROTO_TCP)
		return PC_L4_TCP;
	if (proto == IPPROTO_UDP)
		return PC_L4_UDP;
	return -1;
}

/* Where a drop is counted by port: in a counted_ports row (row = 1 + the
 * row), or in the hash under the real port (named) or under 0. */
struct pc_port_count {
	__u16 row;
	__u8 named;
	__u8 pad;
};

/* Evaluation order of PRODUCT.md, steps 3-14, for a parsed IP packet judged
 * by the policy in `slot`. *count says where a drop is counted by port. */
static __noinline __u8 pc_evaluate(struct pc_packet *p, const struct pc_config *cfg, __u32 slot,
				   struct pc_port_count *count)
{
	static const struct pc_port_policy no_rule = {};
	const struct pc_port_policy *port = &no_rule;
	int l4 = pc_rule_l4(p->proto);
	int is_syn;
	pc_set_mask sets;
	__s64 now;

	/* 3. destinations */
	if ((cfg->flags & PC_CFG_HAS_DESTINATIONS) && !pc_destination_policed(p, slot))
		return PC_REASON_NOT_POLICED;

	is_syn = p->proto == IPPROTO_TCP &&
		 (p->tcp_flags & (PC_TCP_SYN | PC_TCP_ACK)) == PC_TCP_SYN;

	/* 4. return traffic of flows this node opened. A bare SYN opens a
	 * connection towards this node, so it is never return traffic: skipping
	 * the lookup keeps a SYN flood off the flow table. */
	if (p->has_ports && !is_syn) {
		struct pc_flow_key fk = {};

		pc_flow_key_of(p, 0, &fk);
		if (bpf_map_lookup_elem(&egress_flows, &fk))
			return PC_REASON_ESTABLISHED;
	}

	/* 5. */
	if (pc_is_essential_icmp(p))
		return PC_REASON_ALLOWED;

	if (l4 >= 0 && p->has_ports) {
		__u32 idx = slot * PC_PORT_ENTRIES + (__u32)l4 * PC_PORTS_PER_PROTO +
			    bpf_ntohs(p->dport);
		const struct pc_port_policy *pp = bpf_map_lookup_elem(&port_policy, &idx);

		if (pp)
			port = pp;
	}
	count->named = (port->flags & PC_PORT_NAMED) != 0;
	count->row = port->counter_row;

	sets = pc_source_sets(p, slot, cfg->flags);

	/* 6. failsafe */
	if ((port->flags & PC_PORT_HAS_FAILSAFE) &&
	    ((port->flags & PC_PORT_FAILSAFE_ANY) || (sets & port->failsafe_from)))
		return PC_REASON_FAILSAFE;

	/* 7. */
	if (sets & (1ULL << PC_BLOCKLIST_BIT))
		return PC_REASON_BLOCKLIST;

	/* 8. */
	if (p->non_first_fragment)
		return (cfg->flags & PC_CFG_FRAGMENTS_DENY) ? PC_REASON_FRAGMENT :
							      PC_REASON_ALLOWED;

	/* 9. ICMP has no ports: icmp decides it either way. */
	if (pc_is_icmp(p))
		return (cfg->flags & PC_CFG_ICMP_DENY) ? PC_REASON_ICMP_DENIED : PC_REASON_ALLOWED;

	/* 10. */
	if (!(port->flags & PC_PORT_HAS_RULE)) {
		if (!(cfg->flags & PC_CFG_DEFAULT_ALLOW))
			return PC_REASON_PORT_CLOSED;
	} else if (!(port->flags & PC_PORT_ALLOW_ANY) && !(sets & port->allow_from)) {
		/* 11. */
		return PC_REASON_NOT_ALLOWLISTED;
	}

	if (!p->has_ports)
		return PC_REASON_ALLOWED;

	/* 12-13. rate limits */
	{
		const struct pc_rate *syn_rate = &cfg->syn_per_source;
		const struct pc_rate *conn_rate = &cfg->conn_per_source;
		struct pc_flow_key fk = {};
		int new_flow = is_syn;
		struct pc_bucket *b = NULL;

		if (port->rate_override_id) {
			__u32 idx = slot * PC_MAX_RATE_OVERRIDES +
				    (port->rate_override_id & (PC_MAX_RATE_OVERRIDES - 1));
			const struct pc_rate_override *ov =
				bpf_map_lookup_elem(&rate_overrides, &idx);

			if (ov) {
				syn_rate = &ov->syn_per_source;
				conn_rate = &ov->conn_per_source;
			}
		}
		if (p->proto == IPPROTO_UDP) {
			pc_flow_key_of(p, 0, &fk);
			new_flow = bpf_map_lookup_elem(&ingress_flows, &fk) == NULL;
		}
		if (!new_flow)
			return PC_REASON_ALLOWED;
		if (!(is_syn && (syn_rate->interval_ns || cfg->syn_global.interval_ns)) &&
		    !conn_rate->interval_ns && p->proto != IPPROTO_UDP)
			return PC_REASON_ALLOWED; /* no bucket applies: no clock read */

		now = pc_now();
		if ((is_syn && syn_rate->interval_ns) || conn_rate->interval_ns) {
			b = pc_source_bucket(p, cfg, port->rate_override_id);
			if (!b)
				return PC_REASON_ALLOWED; /* bucket map full: LRU evicts, so only transient */
			if (is_syn && !pc_take_token(&b->syn_empty_at, syn_rate, now))
				return PC_REASON_SYN_RATE_SOURCE;
		}
		if (is_syn && cfg->syn_global.interval_ns) {
			__u32 k = PC_GLOBAL_SYN_BUCKET;
			struct pc_bucket *g = bpf_map_lookup_elem(&global_buckets, &k);

			if (g && !pc_take_token(&g->syn_empty_at, &cfg->syn_global, now))
				return PC_REASON_SYN_RATE_GLOBAL;
		}
		if (conn_rate->interval_ns && b &&
		    !pc_take_token(&b->conn_empty_at, conn_rate, now))
			return PC_REASON_CONN_RATE_SOURCE;

		if (p->proto == IPPROTO_UDP) {
			__u64 ts = (__u64)now;

			bpf_map_update_elem(&ingress_flows, &fk, &ts, BPF_ANY);
		}
	}
	return PC_REASON_ALLOWED;
}

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
	__u32 k = PC_SAMPLE_BUCKET;
	struct pc_bucket *b = bpf_map_lookup_elem(&global_buckets, &k);
	struct pc_sample *s;
	__s64 now = pc_now();

	if (!b || !pc_take_token(&b->syn_empty_at, &rate, now))
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

/* Judges one frame and records the verdict. The one entry for both hooks. */
static __always_inline struct pc_result pc_judge(void *data, void *data_end, __u32 ifindex,
						 __u8 hook)
{
	struct pc_packet p = {};
	struct pc_result r = { .reason = PC_REASON_NOT_POLICED, .verdict = PC_VERDICT_PASS };
	const struct pc_config *cfg = NULL;
	struct pc_port_count port_count = {};
	__u32 zero = 0, slot = 0;
	__u32 *active;
	int parsed;

	/* The slot is read once: every later lookup uses this policy only. */
	active = bpf_map_lookup_elem(&active_slot, &zero);
	if (active) {
		slot = *active & (PC_POLICY_SLOTS - 1);
		cfg = bpf_map_lookup_elem(&policy_config, &slot);
		if (cfg && !(cfg->flags & PC_CFG_VALID))
			cfg = NULL; /* no policy applied yet: nothing is policed */
	}

	parsed = pc_parse(data, data_end, &p);
	if (!cfg)
		r.reason = PC_REASON_NOT_POLICED;
	else if (parsed == PC_PARSE_NON_IP)
		r.reason = PC_REASON_NON_IP;
	else if (parsed == PC_PARSE_MALFORMED)
		r.reason = PC_REASON_MALFORMED;
	else
		r.reason = pc_evaluate(&p, cfg, slot, &port_count);

	if (r.reason >= PC_FIRST_DROP_REASON)
		r.verdict = (cfg->flags & PC_CFG_AUDIT) ? PC_VERDICT_AUDIT : PC_VERDICT_DROP;
	if (cfg)
		r.version = cfg->version;

	pc_count(ifindex, hook, r.verdict, r.reason, data_end - data);
	if (r.verdict != PC_VERDICT_PASS) {
		pc_count_port(&p, r.reason, &port_count);
		pc_sample(&p, ifindex, hook, r.verdict, r.reason);
	}
	if (record_last_verdict) {
		struct pc_last_verdict *lv = bpf_map_lookup_elem(&last_verdict, &zero);

		if (lv) {
			lv->verdict = r.verdict;
			lv->reason = r.reason;
			lv->version = r.version;
		}
	}
	return r;
}

/* Records a flow this node opened, from a packet leaving it, so that the
 * flow's return traffic passes as `established` (step 4). The key is the
 * 5-tuple as the replies will arrive. Packets of connections the node
 * *serves* are not recorded: a SYN-ACK leaving marks its flow as served, and
 * UDP replies to admitted inbound flows are known from ingress_flows. An
 * outbound connection that predates the agent is recorded at its next
 * packet. Known flows are refreshed at most once a second. */
static __always_inline void pc_record_egress(void *data, void *data_end)
{
	struct pc_packet p = {};
	struct pc_flow_key key = {};
	__u64 now, *seen;

	if (pc_parse(data, data_end, &p) != PC_PARSE_OK || !p.has_ports)
		return;
	if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP)
		return;
	pc_flow_key_of(&p, 1, &key);
	now = (__u64)pc_now();
	if (p.proto == IPPROTO_TCP) {
		if ((p.tcp_flags & (PC_TCP_SYN | PC_TCP_ACK)) == (PC_TCP_SYN | PC_TCP_ACK)) {
			bpf_map_update_elem(&served_flows, &key, &now, BPF_ANY);
			return;
		}
		if (bpf_map_lookup_elem(&served_flows, &key))
			return;
	} else if (bpf_map_lookup_elem(&ingress_flows, &key)) {
		return;
	}
	seen = bpf_map_lookup_elem(&egress_flows, &key);
	if (seen && now - *seen < PC_FLOW_REFRESH_NS)
		return;
	bpf_map_update_elem(&egress_flows, &key, &now, BPF_ANY);
}

#endif /* PORTCULLIS_VERDICT_H */
