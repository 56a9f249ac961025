// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Portcullis datapath entry points. Both hooks run the same verdict function
 * (verdict.h); they differ only in how they read the frame and what they
 * return for a drop.
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
	struct pc_result r = pc_judge(data, data_end, ctx->ingress_ifindex, PC_HOOK_XDP);

	return r.verdict == PC_VERDICT_DROP ? XDP_DROP : XDP_PASS;
}

SEC("tc")
int portcullis_tc_ingress(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct pc_result r;

	/* Headers may sit in paged data; the verdict needs them linear. 512
	 * bytes cover Ethernet, two VLAN tags, IPv6 and a long extension chain;
	 * headers beyond that are judged malformed, as XDP judges a frame cut
	 * short. */
	bpf_skb_pull_data(skb, skb->len < PC_TC_PULL_BYTES ? skb->len : PC_TC_PULL_BYTES);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	r = pc_judge(data, data_end, skb->ifindex, PC_HOOK_TC);
	return r.verdict == PC_VERDICT_DROP ? TC_ACT_SHOT : TC_ACT_OK;
}
