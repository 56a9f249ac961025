/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The verdict function: the order of evaluation of ../shared/PRODUCT.md,
 * shared unchanged by the XDP and TC entry points. pc_judge() decides, from
 * the policy maps, the buckets (ratelimit.h) and the flow tables (flows.h);
 * pc_record() (record.h) is the one exit that counts, samples and (in
 * simulation) reports the verdict.
 */
#ifndef PORTCULLIS_VERDICT_H
#define PORTCULLIS_VERDICT_H

#include "flows.h"
#include "maps.h"
#include "parsing.h"
#include "ratelimit.h"
#include "record.h"
#include "shadow.h"
#include "synack.h"

/* pc_evaluate()'s flags. */
#define PC_EVAL_COOKIE_OK 1u /* this SYN can be answered with a cookie here */
/* This SYN reopens a connection in TIME_WAIT: where it would be answered
 * with a cookie, the kernel gets it instead (enum pc_syn_target). */
#define PC_EVAL_TIME_WAIT 2u
#define PC_EVAL_SHADOW PC_SHADOW_BUCKET_TAG /* judged for the shadow: its own buckets */

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

/* The ICMP of step 7: ICMPv6 neighbour discovery that comes from a neighbour
 * (hop limit 255: RFC 4861 has receivers discard any other), and the
 * path-MTU signals ("fragmentation needed", "packet too big") that keep TCP
 * working. */
static __always_inline int pc_is_essential_icmp(const struct pc_packet *p)
{
	if (p->non_first_fragment)
		return 0;
	if (p->family == PC_FAMILY_V4 && p->proto == IPPROTO_ICMP)
		return p->icmp_type == PC_ICMP_DEST_UNREACH && p->icmp_code == PC_ICMP_FRAG_NEEDED;
	if (p->family == PC_FAMILY_V6 && p->proto == IPPROTO_ICMPV6)
		return p->icmp_type == PC_ICMPV6_PKT_TOOBIG ||
		       (p->icmp_type >= PC_ICMPV6_ND_FIRST && p->icmp_type <= PC_ICMPV6_ND_LAST &&
			p->hop_limit == 255);
	return 0;
}

/* Step 7's budget: a token from the source's ICMP bucket. A full bucket map
 * (LRU: transient) conforms, as the other per-source buckets do. */
static __always_inline int pc_take_icmp_token(const struct pc_packet *p,
					      const struct pc_config *cfg, __u32 bucket_tag)
{
	struct pc_bucket *b, charged;
	__s64 now;

	if (!cfg->icmp_per_source.interval_ns)
		return 1;
	now = pc_now();
	charged.syn_empty_at = pc_one_token_taken(cfg->icmp_per_source.interval_ns,
						  cfg->icmp_per_source.burst, now);
	charged.conn_empty_at = PC_BUCKET_FULL;
	b = pc_source_bucket(p, cfg, PC_ICMP_BUCKET_ID ^ bucket_tag, &charged);
	return !b || pc_take_source_token(p, cfg, PC_ICMP_BUCKET_ID ^ bucket_tag, b,
					  &b->syn_empty_at, &cfg->icmp_per_source, now);
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

/* Evaluation order of PRODUCT.md, steps 3-14 (step 2's sources are the
 * parser's), for a parsed IP packet judged
 * by the policy in `slot`. *count says where a drop is counted by port.
 * A shadow evaluation (PC_EVAL_SHADOW) takes tokens from the shadow's own
 * buckets and admits no UDP flow: it changes nothing the live policy reads.
 * Without PC_EVAL_COOKIE_OK, `cookies` is off for this packet. */
__noinline int pc_evaluate(struct pc_packet *p, const struct pc_config *cfg, __u32 slot,
			   struct pc_port_count *count, __u32 flags)
{
	static const struct pc_port_policy no_rule = {};
	const struct pc_port_policy *port = &no_rule;
	__u32 bucket_tag = flags & PC_EVAL_SHADOW;
	int l4, is_syn;
	pc_set_mask sets;
	__s64 now;

	if (!p || !cfg || !count)
		return PC_REASON_NOT_POLICED;
	l4 = pc_rule_l4(p->proto);

	/* 3. destinations */
	if ((cfg->flags & PC_CFG_HAS_DESTINATIONS) && !pc_destination_policed(p, slot))
		return PC_REASON_NOT_POLICED;

	is_syn = p->proto == IPPROTO_TCP &&
		 (p->tcp_flags & (PC_TCP_SYN | PC_TCP_ACK)) == PC_TCP_SYN;

	/* 4. return traffic of flows this node opened. A bare SYN opens a
	 * connection towards this node, so it is never return traffic: skipping
	 * the lookup keeps a SYN flood off the flow table. A flow opened before
	 * the blocklist last changed is not one for a blocklisted source. */
	if (p->has_ports && !is_syn) {
		__s64 opened_at;

		if (pc_flow_opened_here(p, &opened_at) &&
		    (opened_at >= cfg->blocklist_since ||
		     !(pc_source_sets(p, slot, cfg->flags) & (1ULL << PC_BLOCKLIST_BIT))))
			return PC_REASON_ESTABLISHED;
	}

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

	/* 5. failsafe */
	if ((port->flags & PC_PORT_HAS_FAILSAFE) &&
	    ((port->flags & PC_PORT_FAILSAFE_ANY) || (sets & port->failsafe_from)))
		return PC_REASON_FAILSAFE;

	/* 6. */
	if (sets & (1ULL << PC_BLOCKLIST_BIT))
		return PC_REASON_BLOCKLIST;

	/* 7. */
	if (pc_is_essential_icmp(p))
		return pc_take_icmp_token(p, cfg, bucket_tag) ? PC_REASON_ALLOWED :
								PC_REASON_ICMP_RATE_SOURCE;

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
		__u32 id = port->rate_override_id ^ bucket_tag; /* the bucket's */
		__u32 cookies = is_syn && (flags & PC_EVAL_COOKIE_OK) ?
					cfg->flags & (PC_CFG_COOKIES_AUTO | PC_CFG_COOKIES_ALWAYS) :
					0;
		/* What a SYN answered with a cookie gets. */
		int cookie = (flags & PC_EVAL_TIME_WAIT) ? PC_REASON_ALLOWED : PC_REASON_SYN_COOKIE;

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
		if (!(is_syn &&
		      (syn_rate->interval_ns || cfg->syn_global.interval_ns || cookies)) &&
		    !conn_rate->interval_ns && p->proto != IPPROTO_UDP)
			return PC_REASON_ALLOWED; /* no bucket applies: no clock read */
		/* 12. A SYN answered with a cookie ends here: it takes no
		 * connection token, and with no source SYN limit it creates no
		 * bucket, so that a spoofed flood cannot fill the table. */
		if ((cookies & PC_CFG_COOKIES_ALWAYS) && !syn_rate->interval_ns)
			return cookie;

		now = pc_now();
		if ((is_syn && syn_rate->interval_ns) || conn_rate->interval_ns) {
			/* What this packet takes, if it creates the bucket. */
			struct pc_bucket charged = {
				.syn_empty_at = pc_one_token_taken(
					is_syn ? syn_rate->interval_ns : 0, syn_rate->burst, now),
				.conn_empty_at = pc_one_token_taken(conn_rate->interval_ns,
								    conn_rate->burst, now),
			};

			/* NULL (a first packet, or the map full) conforms to the
			 * source's limits; the global ones still apply. */
			b = pc_source_bucket(p, cfg, id, &charged);
			if (b && is_syn &&
			    !pc_take_source_token(p, cfg, id, b, &b->syn_empty_at, syn_rate, now))
				return PC_REASON_SYN_RATE_SOURCE;
		}
		if (cookies & PC_CFG_COOKIES_ALWAYS)
			return cookie;
		if (is_syn && cfg->syn_global.interval_ns &&
		    !pc_take_global_token(PC_GLOBAL_SYN_BUCKET, &cfg->syn_global, now,
					  bucket_tag != 0))
			return (cookies & PC_CFG_COOKIES_AUTO) ? cookie : PC_REASON_SYN_RATE_GLOBAL;
		if (conn_rate->interval_ns && b &&
		    !pc_take_source_token(p, cfg, id, b, &b->conn_empty_at, conn_rate, now))
			return PC_REASON_CONN_RATE_SOURCE;

		if (p->proto == IPPROTO_UDP && !bucket_tag) {
			__u64 ts = (__u64)now;

			bpf_map_update_elem(&ingress_flows, &fk, &ts, BPF_ANY);
		}
	}
	return PC_REASON_ALLOWED;
}

/* What the policy `cfg` (live or shadow) does with `reason`. */
static __always_inline __u8 pc_verdict_of(const struct pc_config *cfg, __u8 reason)
{
	if (pc_reason_drops(reason))
		return (cfg->flags & PC_CFG_AUDIT) ? PC_VERDICT_AUDIT : PC_VERDICT_DROP;
	if (reason == PC_REASON_SYN_COOKIE)
		return (cfg->flags & PC_CFG_AUDIT) ? PC_VERDICT_AUDIT : PC_VERDICT_COOKIE;
	return PC_VERDICT_PASS;
}

static __always_inline int pc_cookies_on(const struct pc_config *cfg)
{
	return cfg && (cfg->flags & (PC_CFG_COOKIES_AUTO | PC_CFG_COOKIES_ALWAYS));
}

/* Judges one frame and records the verdict; *p is the parsed packet. The
 * one entry for both hooks. Only XDP (`ctx` its context) answers SYNs with
 * cookies, sent back out of the uplink: a SYN judged at a pod's interface
 * (from another pod, the overlay, the node) is judged as with cookies off. */
static __always_inline struct pc_result pc_judge(void *ctx, void *data, void *data_end,
						 __u32 ifindex, __u8 hook, struct pc_packet *p)
{
	struct pc_result r = { .reason = PC_REASON_NOT_POLICED, .verdict = PC_VERDICT_PASS };
	const struct pc_config *cfg = NULL, *shadow_cfg = NULL;
	struct pc_port_count port_count = {};
	__u32 zero = 0, slot = 0, shadow = 0, flags = 0;
	__u8 shadow_reason = PC_REASON_COUNT, shadow_verdict = PC_VERDICT_PASS;
	__u32 *active;
	int parsed;

	/* The slot is read once: every later lookup uses this policy only. */
	active = bpf_map_lookup_elem(&active_slot, &zero);
	if (active) {
		slot = *active & (PC_POLICY_SLOTS - 1);
		shadow = *active & PC_ACTIVE_SHADOW;
		cfg = bpf_map_lookup_elem(&policy_config, &slot);
		if (cfg && !(cfg->flags & PC_CFG_VALID))
			cfg = NULL; /* no policy applied yet: nothing is policed */
		if (cfg && shadow) {
			__u32 other = slot ^ 1;

			shadow_cfg = bpf_map_lookup_elem(&policy_config, &other);
			if (shadow_cfg && !(shadow_cfg->flags & PC_CFG_VALID))
				shadow_cfg = NULL;
		}
	}

	parsed = pc_parse(data, data_end, p);
	if (!cfg)
		r.reason = PC_REASON_NOT_POLICED;
	else if (parsed == PC_PARSE_NON_IP)
		r.reason = PC_REASON_NON_IP;
	else if (parsed == PC_PARSE_MALFORMED)
		r.reason = PC_REASON_MALFORMED;
	else {
		/* A SYN is looked up only when some policy could answer it. */
		if (hook == PC_HOOK_XDP && p->proto == IPPROTO_TCP &&
		    (p->tcp_flags & (PC_TCP_SYN | PC_TCP_ACK)) == PC_TCP_SYN &&
		    (pc_cookies_on(cfg) || pc_cookies_on(shadow_cfg)) && pc_cookie_state()) {
			enum pc_syn_target target = pc_syn_target(ctx, p);

			if (target == PC_SYN_LISTENER)
				flags |= PC_EVAL_COOKIE_OK;
			else if (target == PC_SYN_TIME_WAIT)
				flags |= PC_EVAL_COOKIE_OK | PC_EVAL_TIME_WAIT;
		}
		/* The shadow first: once the live policy admits a UDP flow, its
		 * first datagram would look like a known flow to the shadow.
		 * Non-IP and malformed frames are judged alike by any policy. */
		if (shadow_cfg) {
			struct pc_port_count ignored = {};

			shadow_reason = pc_evaluate(p, shadow_cfg, slot ^ 1, &ignored,
						    flags | PC_EVAL_SHADOW);
			shadow_verdict = pc_verdict_of(shadow_cfg, shadow_reason);
		}
		r.reason = pc_evaluate(p, cfg, slot, &port_count, flags);
	}

	if (cfg) {
		r.verdict = pc_verdict_of(cfg, r.reason);
		r.version = cfg->version;
	}

	if (shadow_reason != PC_REASON_COUNT)
		pc_shadow_record(p, r.verdict, r.reason, shadow_verdict, shadow_reason);

	pc_record(p, ifindex, hook, &r, data_end - data, &port_count);
	return r;
}

#endif /* PORTCULLIS_VERDICT_H */
