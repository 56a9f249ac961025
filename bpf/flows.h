/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The flow tables behind step 4 (`established`) and the UDP "new flow" test
 * of step 13: which flows this node opened (egress_flows) and which inbound
 * UDP flows were admitted (ingress_flows).
 */
#ifndef PORTCULLIS_FLOWS_H
#define PORTCULLIS_FLOWS_H

#include "maps.h"
#include "parsing.h"
#include "ratelimit.h"

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

/* How long a flow stays `established` after the node's last packet on it. */
static __always_inline __s64 pc_flow_lifetime(const struct pc_flow *f, __u8 proto)
{
	if (f->closing)
		return PC_FLOW_CLOSING_NS;
	return proto == IPPROTO_TCP ? PC_FLOW_TCP_IDLE_NS : PC_FLOW_UDP_IDLE_NS;
}

/* Step 4: is the packet return traffic of a live flow this node opened? If
 * so, *opened_at says when the node opened it. An expired entry is removed;
 * a FIN starts the flow's close, a RST (which itself passes) ends it. */
static __always_inline int pc_flow_opened_here(const struct pc_packet *p, __s64 *opened_at)
{
	struct pc_flow_key fk = {};
	struct pc_flow *f;

	pc_flow_key_of(p, 0, &fk);
	f = bpf_map_lookup_elem(&egress_flows, &fk);
	if (!f)
		return 0;
	if (pc_now() - f->seen_at > pc_flow_lifetime(f, p->proto)) {
		bpf_map_delete_elem(&egress_flows, &fk);
		return 0;
	}
	*opened_at = f->opened_at;
	if (p->proto == IPPROTO_TCP) {
		if (p->tcp_flags & PC_TCP_RST)
			bpf_map_delete_elem(&egress_flows, &fk);
		else if ((p->tcp_flags & PC_TCP_FIN) && !f->closing)
			f->closing = 1;
	}
	return 1;
}

/* Records a flow this node (or a policed pod) opens, from a packet leaving
 * it, so that the flow's return traffic passes as `established` (step 4).
 * The key is the 5-tuple as the replies will arrive. Only what really opens
 * a flow creates an entry: a TCP SYN without ACK, and a UDP datagram that
 * is not a reply to an admitted inbound flow (ingress_flows). Anything else
 * a remote host can make the node send (a RST or an ACK answering an
 * unsolicited segment, a SYN-ACK) only refreshes a flow the node opened. */
static __always_inline void pc_flow_record_outbound(void *data, void *data_end)
{
	struct pc_packet p = {};
	struct pc_flow_key key = {};
	struct pc_flow *f;
	__s64 now;

	if (pc_parse(data, data_end, &p) != PC_PARSE_OK || !p.has_ports)
		return;
	if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP)
		return;
	pc_flow_key_of(&p, 1, &key);
	now = pc_now();
	if (p.proto == IPPROTO_TCP && (p.tcp_flags & PC_TCP_RST)) {
		bpf_map_delete_elem(&egress_flows, &key);
		return;
	}
	f = bpf_map_lookup_elem(&egress_flows, &key);
	if ((p.proto == IPPROTO_TCP && (p.tcp_flags & (PC_TCP_SYN | PC_TCP_ACK)) == PC_TCP_SYN) ||
	    (p.proto == IPPROTO_UDP && !f && !bpf_map_lookup_elem(&ingress_flows, &key))) {
		struct pc_flow fresh = { .opened_at = now, .seen_at = now };

		bpf_map_update_elem(&egress_flows, &key, &fresh, BPF_ANY);
		return;
	}
	if (!f)
		return;
	if (p.proto == IPPROTO_TCP && (p.tcp_flags & PC_TCP_FIN) && !f->closing)
		f->closing = 1;
	if (now - f->seen_at >= (__s64)PC_FLOW_REFRESH_NS)
		f->seen_at = now;
}

#endif /* PORTCULLIS_FLOWS_H */
