// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Portcullis datapath entry points. Both judging hooks run the same verdict
 * function (verdict.h); they differ only in how they read the frame and what
 * they return for a drop. docs/ARCHITECTURE.md "Where packets are judged"
 * says which hook judges which path.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "verdict.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int portcullis_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pc_packet p = {};
	struct pc_result r = pc_judge(ctx, data, data_end, ctx->ingress_ifindex, PC_HOOK_XDP, &p);

	/* A SYN-ACK that cannot be written (no room to grow the frame) leaves
	 * the SYN unanswered, as a drop would. */
	if (r.verdict == PC_VERDICT_COOKIE)
		return pc_cookie_answer(ctx, &p) ? XDP_DROP : XDP_TX;
	return r.verdict == PC_VERDICT_DROP ? XDP_DROP : XDP_PASS;
}

/* Headers may sit in paged data; the parser needs them linear. 512 bytes
 * cover Ethernet, two VLAN tags, IPv6 and a long extension chain; headers
 * beyond that are judged malformed, as XDP judges a frame cut short. */
static __always_inline void pc_pull_headers(struct __sk_buff *skb)
{
	bpf_skb_pull_data(skb, skb->len < PC_TC_PULL_BYTES ? skb->len : PC_TC_PULL_BYTES);
}

/* On the host side of a policed pod's interface, in the direction of the
 * pod (the veth's egress): judges what reaches the pod without having
 * crossed a policed uplink as plain IP (decapsulated overlay traffic,
 * other pods, the node itself), on the headers the pod receives. What
 * arrived on a policed uplink was judged there by XDP, before any DNAT and
 * on the port its client used: it passes uncounted, so that no packet is
 * judged (or takes a token) twice. */
SEC("tc")
int portcullis_tc_pod(struct __sk_buff *skb)
{
	__u32 from = skb->ingress_ifindex;
	struct pc_packet p = {};
	struct pc_result r;

	if (from && bpf_map_lookup_elem(&xdp_ifaces, &from))
		return TC_ACT_OK;
	pc_pull_headers(skb);
	r = pc_judge(skb, (void *)(long)skb->data, (void *)(long)skb->data_end, skb->ifindex,
		     PC_HOOK_TC, &p);
	return r.verdict == PC_VERDICT_DROP ? TC_ACT_SHOT : TC_ACT_OK;
}

/* Where the node or a policed pod sends (an uplink's egress, a pod
 * interface's ingress): remembers the flows they open, so that their
 * replies pass as established. Never drops. */
SEC("tc")
int portcullis_tc_record(struct __sk_buff *skb)
{
	pc_pull_headers(skb);
	pc_flow_record_outbound((void *)(long)skb->data, (void *)(long)skb->data_end);
	return TC_ACT_OK;
}
