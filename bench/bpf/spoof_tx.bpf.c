// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The flood benchmark's spoofing sender, run with BPF_PROG_TEST_RUN in
 * live-frames mode: each frame (an untagged TCP SYN without options, IPv4
 * or IPv6) gets random bits in a 32-bit word of its source address and a
 * random source port, its checksums fixed up incrementally (RFC 1624), and
 * goes out with XDP_TX. `spins` empty loop iterations first pace the
 * sender. `sink`, on the sender's own veth, drops what comes back to the
 * spoofed sources.
 *
 * Live frames keep what was written in their page across runs, by this
 * program and by the receiver's (a SYN cookie's answer turns the SYN into a
 * SYN-ACK in place, and its page comes back to the sender's pool): so every
 * frame is first rewritten from the template in spoof_cfg.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define SPOOF_FRAME_MAX 74 /* Ethernet, IPv6, TCP without options */

struct spoof_cfg {
	__u32 spins;
	__u32 src_word; /* offset of the source address word to randomize */
	__u32 random_bits; /* network order: the bits of it drawn at random */
	__u32 ip_csum; /* offset of the IPv4 header checksum, 0 for IPv6 */
	__u32 tcp; /* offset of the TCP header */
	__u8 frame[SPOOF_FRAME_MAX]; /* the template, checksums right (IPv4 padded) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct spoof_cfg);
} spoof_cfg SEC(".maps");

/* Replaces `from` by `to` (16-bit words as stored) under checksum *sum. */
static __always_inline void csum_replace(__u16 *sum, __u32 from, __u32 to)
{
	__u32 c = (__u16) ~*sum;

	c += (__u16)~from + (__u16) ~(from >> 16) + (__u16)to + (__u16)(to >> 16);
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	*sum = (__u16)~c;
}

static long spin(__u32 i, void *ctx)
{
	return 0;
}

SEC("xdp")
int spoof_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, *word, old, new, src_word, tcp, ip_csum, bits;
	struct spoof_cfg *cfg = bpf_map_lookup_elem(&spoof_cfg, &zero);
	__u16 *tcp_csum, *sport, *ip_sum, port;

	if (!cfg || data + SPOOF_FRAME_MAX > end)
		return XDP_TX;
	/* Read once: the bounds checked are those of these copies. */
	src_word = cfg->src_word;
	tcp = cfg->tcp;
	ip_csum = cfg->ip_csum;
	bits = cfg->random_bits;
	if (src_word > SPOOF_FRAME_MAX - 4 || tcp > SPOOF_FRAME_MAX - 20 ||
	    ip_csum > SPOOF_FRAME_MAX - 2)
		return XDP_TX;
	__builtin_memcpy(data, cfg->frame, SPOOF_FRAME_MAX);
	word = data + src_word;
	sport = data + tcp;
	tcp_csum = data + tcp + 16;
	ip_sum = data + ip_csum;
	/* A variable offset needs its own check. */
	if ((void *)(word + 1) > end || (void *)(sport + 1) > end || (void *)(tcp_csum + 1) > end ||
	    (void *)(ip_sum + 1) > end)
		return XDP_TX;
	old = *word;
	new = (old & ~bits) | (bpf_get_prandom_u32() & bits);
	port = bpf_htons(1024 + (bpf_get_prandom_u32() % 64000));
	if (ip_csum)
		csum_replace(ip_sum, old, new);
	csum_replace(tcp_csum, old, new); /* the pseudo-header */
	csum_replace(tcp_csum, *sport, port);
	*word = new;
	*sport = port;
	if (cfg->spins)
		bpf_loop(cfg->spins, spin, NULL, 0);
	return XDP_TX;
}

/* Drops what the receiver sends to a spoofed source: the destination
 * address word equals the template's source word but for random bits. */
SEC("xdp")
int sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, dst_word, *got, *want;
	struct spoof_cfg *cfg = bpf_map_lookup_elem(&spoof_cfg, &zero);

	__u32 src_word, bits;

	if (!cfg)
		return XDP_PASS;
	src_word = cfg->src_word;
	bits = cfg->random_bits;
	/* IPv4's destination follows its source; IPv6's is 16 bytes on. */
	dst_word = src_word + (cfg->ip_csum ? 4 : 16);
	if (src_word > SPOOF_FRAME_MAX - 4 || dst_word > SPOOF_FRAME_MAX - 4)
		return XDP_PASS;
	got = data + dst_word;
	if ((void *)(got + 1) > end)
		return XDP_PASS;
	want = (void *)cfg->frame + src_word;
	return (*got & ~bits) == (*want & ~bits) ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
