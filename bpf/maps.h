/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of the Portcullis datapath.
 *
 * Policy maps come in PC_POLICY_SLOTS copies, reached through ARRAY_OF_MAPS
 * outer maps indexed by slot. The live slot is named by the pc_config that
 * active_policy points to: user space fills the idle slot, then swaps
 * active_policy[0] in one write. The kernel waits for running programs
 * before that write returns (map-in-map updates synchronize RCU), so the
 * slot just retired is idle when user space next writes it.
 * See docs/ATOMIC_SWITCH.md.
 */
#ifndef PORTCULLIS_MAPS_H
#define PORTCULLIS_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "portcullis/abi.h"

/* ---- per-slot policy maps (inner templates + outer arrays) ---- */

/* Inner templates give sizes, not BTF types: clang 14 emits structs that are
 * only named in an uninstantiated template as forward declarations, which
 * libbpf cannot size. */
struct pc_config_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct pc_config));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct pc_config_inner);
} active_policy SEC(".maps");

#define PC_SLOT_MAP(name, inner_type, key_t, value_t, entries, flags)      \
	struct name##_inner {                                              \
		__uint(type, inner_type);                                  \
		__uint(max_entries, entries);                              \
		__uint(map_flags, flags);                                  \
		__uint(key_size, sizeof(key_t));                           \
		__uint(value_size, sizeof(value_t));                       \
	};                                                                 \
	struct {                                                           \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);                  \
		__uint(max_entries, PC_POLICY_SLOTS);                      \
		__type(key, __u32);                                        \
		__array(values, struct name##_inner);                      \
	} name SEC(".maps")

/* Exact source hosts: hashes, cheap to update in bulk. */
PC_SLOT_MAP(src_v4_exact, BPF_MAP_TYPE_HASH, __u32, pc_set_mask, PC_MAX_SRC_EXACT_V4,
	    BPF_F_NO_PREALLOC);
PC_SLOT_MAP(src_v6_exact, BPF_MAP_TYPE_HASH, __u8[16], pc_set_mask,
	    PC_MAX_SRC_EXACT_V6, BPF_F_NO_PREALLOC);
/* Shorter source prefixes. */
PC_SLOT_MAP(src_v4_prefix, BPF_MAP_TYPE_LPM_TRIE, struct pc_lpm_v4_key, pc_set_mask,
	    PC_MAX_SRC_PREFIX_V4, BPF_F_NO_PREALLOC);
PC_SLOT_MAP(src_v6_prefix, BPF_MAP_TYPE_LPM_TRIE, struct pc_lpm_v6_key, pc_set_mask,
	    PC_MAX_SRC_PREFIX_V6, BPF_F_NO_PREALLOC);
/* spec.destinations (any match = policed). */
PC_SLOT_MAP(dst_v4, BPF_MAP_TYPE_LPM_TRIE, struct pc_lpm_v4_key, __u8, PC_MAX_DESTINATIONS,
	    BPF_F_NO_PREALLOC);
PC_SLOT_MAP(dst_v6, BPF_MAP_TYPE_LPM_TRIE, struct pc_lpm_v6_key, __u8, PC_MAX_DESTINATIONS,
	    BPF_F_NO_PREALLOC);
/* (proto, port) -> class index; index = pc_l4 * 65536 + port. */
PC_SLOT_MAP(port_class, BPF_MAP_TYPE_ARRAY, __u32, __u16, PC_PORT_CLASS_ENTRIES, 0);
PC_SLOT_MAP(port_classes, BPF_MAP_TYPE_ARRAY, __u32, struct pc_port_class,
	    PC_MAX_PORT_CLASSES, 0);

/* ---- state shared by all policies ---- */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PC_MAX_BUCKETS);
	__type(key, struct pc_bucket_key);
	__type(value, struct pc_bucket);
} source_buckets SEC(".maps");

/* [0]: global SYN bucket (syn_empty_at); [1]: drop-sample bucket. */
enum { PC_GLOBAL_SYN_BUCKET = 0, PC_SAMPLE_BUCKET = 1, PC_GLOBAL_BUCKETS = 2 };
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_GLOBAL_BUCKETS);
	__type(key, __u32);
	__type(value, struct pc_bucket);
} global_buckets SEC(".maps");

/* Flows this node opened, written by the TC egress program, keyed as their
 * return traffic arrives (src = remote peer). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PC_MAX_FLOWS);
	__type(key, struct pc_flow_key);
	__type(value, __u64); /* last seen, ns */
} egress_flows SEC(".maps");

/* Inbound UDP flows already admitted; a miss is a new connection. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PC_MAX_FLOWS);
	__type(key, struct pc_flow_key);
	__type(value, __u64);
} ingress_flows SEC(".maps");

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
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PC_SAMPLE_RINGBUF_BYTES);
} drop_samples SEC(".maps");

/* The settable clock (ns), read instead of bpf_ktime_get_ns() when the
 * load-time constant use_user_clock is set. */
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
