/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one ABI between the Portcullis BPF programs and user space.
 *
 * Everything that crosses the kernel/user boundary is defined here once:
 * verdict reasons, map keys and values, and capacities. The BPF C includes
 * this file directly; the C++ includes it through common/abi.h, which pins
 * every struct with static_assert and names every reason.
 *
 * Reason and verdict numbers are stable: they are stored in pinned maps that
 * outlive an agent upgrade. Never renumber; retire a value by renaming it
 * PC_REASON_UNUSED_<n> and add new ones at the end.
 * Places that must agree with enum pc_reason: common/abi.h (kReasonTable,
 * checked at compile time),
 * ../shared/PRODUCT.md "Verdict reasons".
 */
#ifndef PORTCULLIS_ABI_H
#define PORTCULLIS_ABI_H

#include <linux/types.h>

enum pc_reason {
	/* pass */
	PC_REASON_ALLOWED = 0,
	PC_REASON_FAILSAFE = 1,
	PC_REASON_ESTABLISHED = 2,
	PC_REASON_NOT_POLICED = 3,
	PC_REASON_NON_IP = 4,
	/* drop */
	PC_REASON_BLOCKLIST = 5,
	PC_REASON_NOT_ALLOWLISTED = 6,
	PC_REASON_PORT_CLOSED = 7,
	PC_REASON_SYN_RATE_SOURCE = 8,
	PC_REASON_SYN_RATE_GLOBAL = 9,
	PC_REASON_CONN_RATE_SOURCE = 10,
	PC_REASON_FRAGMENT = 11,
	PC_REASON_ICMP_DENIED = 12,
	PC_REASON_MALFORMED = 13,
	PC_REASON_ICMP_RATE_SOURCE = 14,
	/* cookie: a SYN answered by Portcullis with a SYN cookie (step 12) */
	PC_REASON_SYN_COOKIE = 15,
	PC_REASON_COUNT = 16,
};

/* Reasons below this value pass; the rest drop (or are audited), except
 * syn_cookie, which came later and keeps the next number. */
#define PC_FIRST_DROP_REASON PC_REASON_BLOCKLIST

static inline int pc_reason_drops(unsigned int reason)
{
	return reason >= PC_FIRST_DROP_REASON && reason != PC_REASON_SYN_COOKIE;
}

enum pc_verdict {
	PC_VERDICT_PASS = 0,
	PC_VERDICT_DROP = 1,
	PC_VERDICT_AUDIT = 2, /* would have dropped or answered; passed because mode=audit */
	PC_VERDICT_COOKIE = 3, /* answered with a SYN cookie (XDP_TX); the SYN goes no further */
	PC_VERDICT_COUNT = 4,
};

enum pc_hook {
	PC_HOOK_XDP = 0,
	PC_HOOK_TC = 1,
	PC_HOOK_COUNT = 2,
};

/* Transport protocols that port rules can name; part of the port_policy index. */
enum pc_l4 {
	PC_L4_TCP = 0,
	PC_L4_UDP = 1,
	PC_L4_RULE_PROTOS = 2,
};

/* ---- capacities (per policy slot) ---- */

/* Named sets are bits 0..PC_MAX_SETS-1 of a source mask; the blocklist is
 * the top bit. One lookup of the source answers every membership question. */
#define PC_MAX_SETS 63
#define PC_BLOCKLIST_BIT 63
#define PC_MAX_SRC_EXACT_V4 (1u << 20)
#define PC_MAX_SRC_EXACT_V6 (1u << 20)
#define PC_MAX_SRC_PREFIX_V4 (1u << 20)
#define PC_MAX_SRC_PREFIX_V6 (1u << 20)
#define PC_MAX_DESTINATIONS 4096 /* per family */
#define PC_PORTS_PER_PROTO 65536
#define PC_PORT_ENTRIES (PC_L4_RULE_PROTOS * PC_PORTS_PER_PROTO)
#define PC_MAX_RATE_OVERRIDES 1024 /* id 0 means "policy-wide rates" */

/* Every policy map holds PC_POLICY_SLOTS policies side by side: arrays by
 * index (slot * entries + i), hashes and tries by a slot in the key. The
 * live slot is active_slot[0]; user space fills the idle slot, then flips
 * active_slot. See docs/ATOMIC_SWITCH.md. */
#define PC_POLICY_SLOTS 2

/* active_slot[0] holds the live slot in bit 0. With PC_ACTIVE_SHADOW set, the
 * other slot holds a shadow candidate: every packet is judged by it too,
 * without acting on the result, and the packets whose verdict or reason
 * would change are counted (shadow_transitions, shadow_sources). */
#define PC_ACTIVE_SHADOW 2u

/* ---- shared (not per slot) state: capacities ---- */
/* LRU: per-source token buckets, one map per family. Preallocated: the IPv4
 * map takes about 22 MB of kernel memory, the IPv6 one about 13 MB. */
#define PC_MAX_BUCKETS_V4 (1u << 18)
#define PC_MAX_BUCKETS_V6 (1u << 17)
/* LRU, per family: the buckets of sources that emptied one, so that an
 * eviction from source_buckets (a spoofed flood churns it) does not give a
 * bursty source a full bucket back. Written at most once per token taken. */
#define PC_MAX_DRY_BUCKETS (1u << 14)
/* Array: the sources seen once (a hash of their bucket key per slot). A
 * source gets a bucket with its second packet, so a spoofed flood's one-SYN
 * sources never churn the bucket maps (docs/ARCHITECTURE.md). */
#define PC_FIRST_SIGHT_SLOTS (1u << 16)
#define PC_MAX_FLOWS (1u << 17) /* LRU: flow tables */
#define PC_MAX_XDP_IFACES 256 /* interfaces with the XDP program (xdp_ifaces) */
#define PC_MAX_VERDICT_COUNTERS 4096 /* ifindex x hook x verdict x reason */
/* Verdicts are counted in a per-CPU array, a block per interface: an
 * interface claims block ifindex % PC_IFACE_SLOTS (iface_slots[block] =
 * ifindex) with its first packet. Interfaces whose block another holds count
 * in the verdict_counters hash instead. */
#define PC_IFACE_SLOTS 128
#define PC_FAST_COUNTERS (PC_IFACE_SLOTS * PC_HOOK_COUNT * PC_VERDICT_COUNT * PC_REASON_COUNT)
#define PC_FAST_COUNTER_INDEX(slot, hook, verdict, reason)                                    \
	((((slot)*PC_HOOK_COUNT + (hook)) * PC_VERDICT_COUNT + (verdict)) * PC_REASON_COUNT + \
	 (reason))
#define PC_MAX_PORT_COUNTERS 16384 /* proto x port x reason (drops only) */
/* Drops at named ports are counted in rows of a per-CPU array, one row of
 * PC_REASON_COUNT counters per (proto, port range) the policy names: an
 * array increment instead of a hash lookup on every drop. counted_ports
 * says which range each row counts; rows outlive policies, so counters go on
 * across policy changes and agent restarts. */
#define PC_MAX_COUNTED_PORTS 512
#define PC_SAMPLE_RINGBUF_BYTES (256 * 1024)
/* Shadow evaluation: transitions by port (hash; beyond it, a transition is
 * still counted by source), and sources by transition (LRU: the top
 * sources stay, the long tail is evicted). */
#define PC_MAX_SHADOW_TRANSITIONS 4096
#define PC_MAX_SHADOW_SOURCES 16384

/* IPv6 extension headers walked before giving up as malformed. */
#define PC_MAX_IPV6_EXT_HEADERS 8
/* The recorder refreshes a known flow's seen_at at most this often. */
#define PC_FLOW_REFRESH_NS 1000000000ULL
/* A flow the node opened stops being `established` after this long without a
 * packet from the node (Cilium's connection-tracking defaults), or, once a
 * FIN was seen either way, PC_FLOW_CLOSING_NS. A RST ends it at once. */
#define PC_FLOW_TCP_IDLE_NS (6 * 3600 * 1000000000ULL)
#define PC_FLOW_UDP_IDLE_NS (60 * 1000000000ULL)
#define PC_FLOW_CLOSING_NS (120 * 1000000000ULL)
/* Bytes the TC program makes linear before parsing. */
#define PC_TC_PULL_BYTES 512

/* ---- policy slot contents ---- */

/* Source hosts, for the exact-match hashes. */
struct pc_src_v4_key {
	__u32 slot;
	__u8 addr[4];
};

struct pc_src_v6_key {
	__u32 slot;
	__u8 addr[16];
};

/* LPM trie keys: the slot is the first byte of the matched data, so a
 * lookup in one slot can never match another slot's prefixes.
 * prefixlen = 8 + the prefix length. */
struct pc_lpm_v4_key {
	__u32 prefixlen;
	__u8 slot;
	__u8 addr[4];
} __attribute__((packed));

struct pc_lpm_v6_key {
	__u32 prefixlen;
	__u8 slot;
	__u8 addr[16];
} __attribute__((packed));

#define PC_LPM_SLOT_BITS 8

/* Value of every source map: which sets (and the blocklist) hold the source.
 * The compiler folds enclosing prefixes into each entry, so the longest match
 * alone is the complete answer. */
typedef __u64 pc_set_mask;

/* Token-bucket parameters. interval_ns = 1e9 / rate; 0 disables the bucket. */
struct pc_rate {
	__u64 interval_ns;
	__u64 burst;
};

#define PC_PORT_HAS_RULE (1u << 0) /* some port rule names this port */
#define PC_PORT_ALLOW_ANY (1u << 1) /* ... with from: any */
#define PC_PORT_HAS_FAILSAFE (1u << 2) /* some failsafe rule names this port */
#define PC_PORT_FAILSAFE_ANY (1u << 3) /* ... with from: any */
#define PC_PORT_NAMED (1u << 4) /* count drops under this port */

/* What the policy says about one (proto, destination port).
 * port_policy index: slot * PC_PORT_ENTRIES + pc_l4 * 65536 + port. */
struct pc_port_policy {
	pc_set_mask allow_from;
	pc_set_mask failsafe_from;
	__u32 flags;
	/* Ports with their own synRate/connRate: their rates, and buckets keyed
	 * apart from the policy-wide ones. 0 = policy-wide. */
	__u16 rate_override_id;
	/* Named ports: 1 + the counted_ports row their drops are counted in.
	 * 0 = count in the port_drop_counters hash: a named port (when every
	 * row is taken) under its port number, a port no rule names under 0.
	 * Written by the installer only. */
	__u16 counter_row;
};

/* rate_overrides index: slot * PC_MAX_RATE_OVERRIDES + rate_override_id. */
struct pc_rate_override {
	struct pc_rate syn_per_source;
	struct pc_rate conn_per_source;
};

#define PC_CFG_VALID (1u << 0) /* unset (zeroed slot): no policy, nothing policed */
#define PC_CFG_AUDIT (1u << 1)
#define PC_CFG_DEFAULT_ALLOW (1u << 2)
#define PC_CFG_ICMP_DENY (1u << 3)
#define PC_CFG_FRAGMENTS_DENY (1u << 4)
#define PC_CFG_HAS_DESTINATIONS (1u << 5)
/* Which source tables hold entries; empty ones are not looked up. */
#define PC_CFG_SRC_V4_EXACT (1u << 6)
#define PC_CFG_SRC_V4_PREFIX (1u << 7)
#define PC_CFG_SRC_V6_EXACT (1u << 8)
#define PC_CFG_SRC_V6_PREFIX (1u << 9)
/* rateLimits.syn.cookies: auto (over the global bucket) or always. */
#define PC_CFG_COOKIES_AUTO (1u << 10)
#define PC_CFG_COOKIES_ALWAYS (1u << 11)

/* Policy-wide settings; policy_config[slot]. */
struct pc_config {
	__u32 flags;
	__u32 pad0;
	__u64 version;
	struct pc_rate syn_per_source;
	struct pc_rate syn_global;
	struct pc_rate conn_per_source;
	struct pc_rate icmp_per_source; /* the essential ICMP of step 7 */
	__u8 source_prefix_v4; /* bucket grouping, bits */
	__u8 source_prefix_v6;
	__u8 pad[6];
	/* Flows the node opened before this moment (pc_now()'s clock) are not
	 * `established` for blocklisted sources: the blocklist changed since.
	 * Written by the installer, which keeps it while blocklist_hash (the
	 * compiler's) stays the same. */
	__s64 blocklist_since;
	__u64 blocklist_hash;
};

/* ---- shared state ---- */

enum pc_family {
	PC_FAMILY_V4 = 4,
	PC_FAMILY_V6 = 6,
};

/* Per-source bucket keys, one map per family: the source masked to
 * sourcePrefix. IPv4 has a key of its own because every SYN hashes it: 8
 * bytes hash in about 10 ns less than 24. */
struct pc_bucket_key_v4 {
	__u32 rate_override_id;
	__u8 addr[4];
};

struct pc_bucket_key_v6 {
	__u32 rate_override_id;
	__u8 addr[16];
};

/* The source's ICMP budget (step 7) lives in the same maps, under this id in
 * place of a rate override (those are below PC_MAX_RATE_OVERRIDES), in the
 * bucket's first word. */
#define PC_ICMP_BUCKET_ID 0xffffffffu

/* The shadow policy's per-source buckets: its ids XOR this tag, so that a
 * shadow never takes the live policy's tokens (nor the live its). */
#define PC_SHADOW_BUCKET_TAG 0x80000000u

/* GCRA form of a token bucket: the moment the bucket was (or will be) empty.
 * tokens(now) = min(burst, (now - empty_at) / interval). One 64-bit word per
 * bucket, updated with compare-and-swap, so concurrent CPUs never lose a take. */
struct pc_bucket {
	__s64 syn_empty_at;
	__s64 conn_empty_at;
};

/* An empty_at far enough in the past that the bucket is full at any clock
 * reading (refill is capped at burst). */
#define PC_BUCKET_FULL (-((__s64)1 << 62))

/* global_buckets[id]: limiters shared by all sources, one GCRA word each,
 * and a second word for the shadow policy's limiter of the same name.
 * The value stays 16 bytes (it was a pc_bucket), so older pins are adopted. */
enum pc_global_bucket_id {
	PC_GLOBAL_SYN_BUCKET = 0, /* rateLimits.syn.global */
	PC_SAMPLE_BUCKET = 1, /* drop samples sent to the ring buffer */
	PC_GLOBAL_BUCKETS = 2,
};

struct pc_global_bucket {
	__s64 empty_at;
	__s64 shadow_empty_at;
};

/* A transport 5-tuple as seen on ingress: src is the remote peer. */
struct pc_flow_key {
	__u8 family;
	__u8 proto;
	__u16 sport; /* network byte order */
	__u16 dport; /* network byte order */
	__u16 pad;
	__u8 src[16];
	__u8 dst[16];
};

/* egress_flows value: a flow this node (or a policed pod) opened. */
struct pc_flow {
	__s64 opened_at; /* its SYN (or first UDP datagram) left */
	__s64 seen_at; /* the last packet from the node, within PC_FLOW_REFRESH_NS */
	__u32 closing; /* a FIN was seen: PC_FLOW_CLOSING_NS after seen_at */
	__u32 pad;
};

struct pc_verdict_key {
	__u32 ifindex;
	__u8 hook;
	__u8 verdict;
	__u8 reason;
	__u8 pad;
};

struct pc_counter {
	__u64 packets;
	__u64 bytes;
};

/* counted_ports[row]: the (proto, port range) whose drops row `row` of
 * named_port_drops counts. Written by user space only. */
struct pc_counted_port {
	__u16 first;
	__u16 last;
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 in_use;
	__u8 pad[2];
};

/* Drops by destination port, in port_drop_counters: key.port is the port
 * for named ports without a counted_ports row, and 0 for every port the
 * policy does not name. */
struct pc_port_key {
	__u16 port; /* host byte order */
	__u8 proto; /* IPPROTO_* */
	__u8 reason;
};

/* shadow_transitions key: packets whose verdict or reason the shadow
 * candidate would change, by (live -> shadow) and destination port. */
struct pc_shadow_key {
	__u8 from_verdict;
	__u8 from_reason;
	__u8 to_verdict;
	__u8 to_reason;
	__u16 port; /* host byte order; 0 for packets without ports */
	__u8 proto; /* IPPROTO_* */
	__u8 pad;
};

/* shadow_sources key: the same packets by (live -> shadow) and source. */
struct pc_shadow_source_key {
	__u8 from_verdict;
	__u8 from_reason;
	__u8 to_verdict;
	__u8 to_reason;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16]; /* IPv4 in the first 4 bytes */
};

/* One drop (or audit) sample for the agent's log, from the ring buffer. */
struct pc_sample {
	__u64 timestamp_ns;
	__u32 ifindex;
	__u8 hook;
	__u8 verdict;
	__u8 reason;
	__u8 family;
	__u8 proto;
	__u8 pad[3];
	__u16 sport; /* host byte order */
	__u16 dport;
	__u8 src[16];
	__u8 dst[16];
};

/* Written by the program for the packet it just judged, when the load-time
 * constant record_last_verdict is set (simulation and tests only). */
struct pc_last_verdict {
	__u32 verdict;
	__u32 reason;
	__u64 version;
};

/* ---- SYN cookies (bpf/cookie.h) ---- */

/* syn_cookies[0]: the key of the cookie hash, written once by the agent
 * (an all-zero key answers no SYN), and when a cookie was last sent (the TC
 * side looks at ACKs only for a while after). */
struct pc_cookie_state {
	__u64 key[2];
	__s64 last_sent_at;
	__u64 pad;
};

/* cookie_stats[result]: per-CPU counts, portcullis_syn_cookies_total. */
enum pc_cookie_result {
	PC_COOKIE_SENT = 0,
	PC_COOKIE_VALID = 1, /* an ACK with a valid cookie, handed to its listener */
	/* An ACK to a listener of the node's, of no connection, without a valid
	 * cookie; or a valid one that its listener (the node's or a pod's)
	 * refused. */
	PC_COOKIE_INVALID = 2,
	PC_COOKIE_RESULTS = 3,
};

/* A cookie carries the time slot it was minted in (2^36 ns, about 69 s):
 * one from this slot or the one before is valid, so for 69-137 s. */
#define PC_COOKIE_SLOT_SHIFT 36
/* ACKs are looked at for this long after the last cookie sent. */
#define PC_COOKIE_ACK_WINDOW_NS (2ULL << PC_COOKIE_SLOT_SHIFT)
/* The window scale Portcullis offers in its SYN-ACK; the listener's
 * connection is created with it. */
#define PC_COOKIE_RCV_WSCALE 7

/* cookie_handovers: an ACK with a valid cookie that found no socket in the
 * node's namespace (a NodePort, a pod address), checked at the uplink's
 * ingress on the tuple the client used and handed, by the sequence and
 * acknowledgement numbers no NAT changes, to the cookie program at the
 * pod's ingress, in the pod's namespace. Network byte order. */
struct pc_cookie_handover_key {
	__u32 seq;
	__u32 ack;
};

/* What the cookie and the ACK tell the listener (bpf_tcp_req_attrs). */
struct pc_cookie_handover {
	__s64 at; /* when the uplink checked it; stale after the limit below */
	__u32 tsval; /* the ACK's timestamps, with tstamp_ok */
	__u32 tsecr;
	__u16 mss;
	__u8 wscale; /* the client's; PC_COOKIE_NO_WSCALE (15): none */
	__u8 sack_ok;
	__u8 tstamp_ok;
	__u8 pad[3];
};

/* An ACK crosses the node from the uplink to the pod in microseconds; a
 * handover older than this was never consumed (its packet was dropped, or
 * no pod was behind it). */
#define PC_COOKIE_HANDOVER_NS 1000000000LL
#define PC_COOKIE_HANDOVERS 16384

#endif /* PORTCULLIS_ABI_H */
