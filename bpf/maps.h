/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of the Portcullis datapath.
 *
 * Every policy map holds two policies side by side ("slots"): arrays by
 * index, hashes and tries by a slot in the key. Packets read active_slot[0]
 * once and look up only that slot. User space fills the idle slot, flips
 * active_slot in one write, and waits out an RCU grace period (a map-in-map
 * update, which the kernel completes only after running programs finish)
 * before it touches the retired slot again. All maps are global, so the
 * verifier inlines array and hash lookups; nothing is freed or rebuilt on a
 * policy change. See docs/ATOMIC_SWITCH.md.
 */
#ifndef PORTCULLIS_MAPS_H
#define PORTCULLIS_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "cookie_maps.h"
#include "portcullis/abi.h"

/* ---- policy maps (both slots) ---- */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} active_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_POLICY_SLOTS);
	__type(key, __u32);
	__type(value, struct pc_config);
} policy_config SEC(".maps");

/* Exact source hosts: hashes, cheap to update in bulk. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_POLICY_SLOTS * PC_MAX_SRC_EXACT_V4);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pc_src_v4_key);
	__type(value, pc_set_mask);
} src_v4_exact SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_POLICY_SLOTS * PC_MAX_SRC_EXACT_V6);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pc_src_v6_key);
	__type(value, pc_set_mask);
} src_v6_exact SEC(".maps");

/* Shorter source prefixes. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PC_POLICY_SLOTS * PC_MAX_SRC_PREFIX_V4);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pc_lpm_v4_key);
	__type(value, pc_set_mask);
} src_v4_prefix SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PC_POLICY_SLOTS * PC_MAX_SRC_PREFIX_V6);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pc_lpm_v6_key);
	__type(value, pc_set_mask);
} src_v6_prefix SEC(".maps");

/* spec.destinations (any match = policed). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PC_POLICY_SLOTS * PC_MAX_DESTINATIONS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pc_lpm_v4_key);
	__type(value, __u8);
} dst_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PC_POLICY_SLOTS * PC_MAX_DESTINATIONS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pc_lpm_v6_key);
	__type(value, __u8);
} dst_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_POLICY_SLOTS * PC_PORT_ENTRIES);
	__type(key, __u32);
	__type(value, struct pc_port_policy);
} port_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_POLICY_SLOTS * PC_MAX_RATE_OVERRIDES);
	__type(key, __u32);
	__type(value, struct pc_rate_override);
} rate_overrides SEC(".maps");

/* ---- state shared by all policies ---- */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PC_MAX_BUCKETS_V4);
	__type(key, struct pc_bucket_key_v4);
	__type(value, struct pc_bucket);
} source_buckets_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PC_MAX_BUCKETS_V6);
	__type(key, struct pc_bucket_key_v6);
	__type(value, struct pc_bucket);
} source_buckets_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PC_MAX_DRY_BUCKETS);
	__type(key, struct pc_bucket_key_v4);
	__type(value, struct pc_bucket);
} dry_buckets_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PC_MAX_DRY_BUCKETS);
	__type(key, struct pc_bucket_key_v6);
	__type(value, struct pc_bucket);
} dry_buckets_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_FIRST_SIGHT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} first_sight SEC(".maps");

/* Indexed by enum pc_global_bucket_id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_GLOBAL_BUCKETS);
	__type(key, __u32);
	__type(value, struct pc_global_bucket);
} global_buckets SEC(".maps");

/* Flows this node opened, written by the recorder (bpf/flows.h), keyed as
 * their return traffic arrives (src = remote peer). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PC_MAX_FLOWS);
	__type(key, struct pc_flow_key);
	__type(value, struct pc_flow);
} egress_flows SEC(".maps");

/* Inbound UDP flows already admitted; a miss is a new connection. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PC_MAX_FLOWS);
	__type(key, struct pc_flow_key);
	__type(value, __u64);
} ingress_flows SEC(".maps");

/* The interfaces XDP judges (the policed uplinks), written by the agent as
 * it attaches. A packet that arrived on one was judged there: the pod-facing
 * TC program lets it through without judging or counting it again. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_MAX_XDP_IFACES);
	__type(key, __u32); /* ifindex */
	__type(value, __u32); /* 1 */
} xdp_ifaces SEC(".maps");

/* Which interface owns each block of verdict_counters_fast (0: free). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_IFACE_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} iface_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PC_FAST_COUNTERS);
	__type(key, __u32);
	__type(value, struct pc_counter);
} verdict_counters_fast SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, PC_MAX_VERDICT_COUNTERS);
	__type(key, struct pc_verdict_key);
	__type(value, struct pc_counter);
} verdict_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, PC_MAX_PORT_COUNTERS);
	__type(key, struct pc_port_key);
	__type(value, __u64);
} port_drop_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_MAX_COUNTED_PORTS);
	__type(key, __u32);
	__type(value, struct pc_counted_port);
} counted_ports SEC(".maps");

/* Row r, reason n: index r * PC_REASON_COUNT + n. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PC_MAX_COUNTED_PORTS * PC_REASON_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} named_port_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PC_SAMPLE_RINGBUF_BYTES);
} drop_samples SEC(".maps");

/* Shadow evaluation (bpf/shadow.h): what the candidate would change. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, PC_MAX_SHADOW_TRANSITIONS);
	__type(key, struct pc_shadow_key);
	__type(value, __u64);
} shadow_transitions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, PC_MAX_SHADOW_SOURCES);
	__type(key, struct pc_shadow_source_key);
	__type(value, __u64);
} shadow_sources SEC(".maps");

/* The settable clock (ns), read instead of bpf_ktime_get_coarse_ns() when
 * the load-time constant use_user_clock is set (ratelimit.h: pc_now). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} user_clock SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pc_last_verdict);
} last_verdict SEC(".maps");

#endif /* PORTCULLIS_MAPS_H */
