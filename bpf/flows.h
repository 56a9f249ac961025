/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The flow tables behind step 4 (`established`) and the UDP "new flow" test
 * of step 13: which flows this node opened (egress_flows), which it serves
 * (served_flows) and which inbound UDP flows were admitted (ingress_flows).
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

/* Step 4: is the packet return traffic of a flow this node opened? */
static __always_inline int pc_flow_opened_here(const struct pc_packet *p)
{
	struct pc_flow_key fk = {};

	pc_flow_key_of(p, 0, &fk);
	return bpf_map_lookup_elem(&egress_flows, &fk) != NULL;
}

/* Records a flow this node opened, from a packet leaving it, so that the
 * flow's return traffic passes as `established` (step 4). The key is the
 * 5-tuple as the replies will arrive. Packets of connections the node
 * *serves* are not recorded: a SYN-ACK leaving marks its flow as served, and
 * UDP replies to admitted inbound flows are known from ingress_flows. An
 * outbound connection that predates the agent is recorded at its next
 * packet. Known flows are refreshed at most once a second. */
static __always_inline void pc_flow_record_outbound(void *data, void *data_end)
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

#endif /* PORTCULLIS_FLOWS_H */
