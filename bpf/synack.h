/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The XDP half of SYN cookies (cookie.h): whether a SYN can be answered,
 * and the answer, a SYN-ACK written over the SYN's frame and sent back out
 * of the interface it came in on (XDP_TX).
 */
#ifndef PORTCULLIS_SYNACK_H
#define PORTCULLIS_SYNACK_H

#include "cookie.h"
#include "ratelimit.h"

/* Load-time constant (rodata): simulation judges captures with no sockets
 * behind them, as if every SYN had its listener here. */
const volatile __u8 assume_listeners = 0;
/* Load-time constant: the pods behind --tc-interfaces get cookies too, so a
 * SYN that finds no socket in the node's namespace may be for one (a
 * NodePort or another address kube-proxy DNATs, a pod's own address):
 * answered, and its ACK handed over to the pod's side (cookie.bpf.c). */
const volatile __u8 cookies_for_pods = 0;

#define PC_MAX_L3_OFF (ETH_HLEN + PC_MAX_VLAN_TAGS * 4)
#define PC_SYNACK_OPT_BYTES 24
#define PC_SYNACK_TTL 64
#define PC_IP_DF 0x4000

/* The SYN-ACK's TCP header: options in fixed places, NOPs for those the
 * client did not offer, so that its length never depends on the client. */
struct pc_synack_tcp {
	struct tcphdr th;
	__u8 mss[4];
	__u8 sack[4];
	__u8 ts[12];
	__u8 ws[4];
};

_Static_assert(sizeof(struct pc_synack_tcp) == sizeof(struct tcphdr) + PC_SYNACK_OPT_BYTES,
	       "SYN-ACK options are packed");

/* What a SYN would reach in this network namespace. */
enum pc_syn_target {
	PC_SYN_NO_LISTENER = 0,
	/* A cookie is worth sending: TC can complete it (a listener here, or,
	 * with cookies_for_pods, no socket here at all). */
	PC_SYN_LISTENER = 1,
	/* A connection in TIME_WAIT with this very tuple, which the kernel
	 * reopens for a new SYN. A cookie cannot be completed there: the
	 * connection would collide with the TIME_WAIT socket. */
	PC_SYN_TIME_WAIT = 2,
};

static __always_inline enum pc_syn_target pc_syn_target(void *ctx, const struct pc_packet *p)
{
	enum pc_syn_target target = PC_SYN_NO_LISTENER;
	struct bpf_sock_tuple t;
	struct bpf_sock *sk;
	__u32 size;

	if (assume_listeners)
		return PC_SYN_LISTENER;
	size = pc_sock_tuple(p, &t);
	sk = bpf_skc_lookup_tcp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return cookies_for_pods ? PC_SYN_LISTENER : PC_SYN_NO_LISTENER;
	if (sk->state == BPF_TCP_LISTEN)
		target = PC_SYN_LISTENER;
	else if (sk->state == BPF_TCP_TIME_WAIT)
		target = PC_SYN_TIME_WAIT;
	bpf_sk_release(sk);
	return target;
}

static __always_inline __u16 pc_csum_fold(__s64 sum)
{
	__u64 s = (__u64)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* Our MSS: what the interface's MTU leaves after the IP and TCP headers. */
static __always_inline __u16 pc_synack_mss(struct xdp_md *ctx, __u8 family)
{
	__u32 mtu = 0;
	__u32 headers = family == PC_FAMILY_V4 ? 40 : 60;

	if (bpf_check_mtu(ctx, 0, &mtu, 0, 0) < 0 || mtu <= headers + 536)
		return family == PC_FAMILY_V4 ? 536 : 1220;
	return mtu - headers > 0xffff ? 0xffff : mtu - headers;
}

/* Builds the SYN-ACK's TCP header for the SYN `p` (sequence client_isn);
 * the caller sets doff, which depends on how much of it is sent. */
static __always_inline void pc_synack_tcp_fill(struct pc_synack_tcp *t, const struct pc_packet *p,
					       __u32 client_isn, __u32 cookie,
					       const struct pc_tcp_opts *o, __u16 our_mss,
					       __s64 now)
{
	__u16 window = pc_cookie_mss(p->family, cookie >> 6 & 3) * 10;

	__builtin_memset(t, PC_TCPOPT_NOP, sizeof(*t));
	__builtin_memset(&t->th, 0, sizeof(t->th));
	t->th.source = p->dport;
	t->th.dest = p->sport;
	t->th.seq = bpf_htonl(cookie);
	t->th.ack_seq = bpf_htonl(client_isn + 1);
	t->th.syn = 1;
	t->th.ack = 1;
	/* Unscaled in a SYN-ACK; the listener's first segment sets the real
	 * window, and the client's first flight is no larger than this. */
	t->th.window = bpf_htons(window);
	t->mss[0] = PC_TCPOPT_MSS;
	t->mss[1] = 4;
	t->mss[2] = our_mss >> 8;
	t->mss[3] = our_mss & 0xff;
	if (o->sack_ok) {
		t->sack[2] = PC_TCPOPT_SACK_PERM;
		t->sack[3] = 2;
	}
	if (o->has_ts) {
		__u32 tsval =
			bpf_htonl((__u32)((__u64)now >> 20)); /* any clock: the ACK echoes it */
		__u32 tsecr = bpf_htonl(o->tsval);

		t->ts[2] = PC_TCPOPT_TIMESTAMP;
		t->ts[3] = 10;
		__builtin_memcpy(&t->ts[4], &tsval, 4);
		__builtin_memcpy(&t->ts[8], &tsecr, 4);
	}
	if (o->wscale != PC_COOKIE_NO_WSCALE) {
		t->ws[1] = PC_TCPOPT_WSCALE;
		t->ws[2] = 3;
		t->ws[3] = PC_COOKIE_RCV_WSCALE;
	}
}

/* Copies the SYN-ACK's TCP header (tcp_len bytes: all of t, or its bare
 * header) to `at`. */
static __always_inline int pc_synack_put(void *at, void *data_end, const struct pc_synack_tcp *t,
					 __u32 tcp_len)
{
	if (tcp_len == sizeof(*t)) {
		if (at + sizeof(*t) > data_end)
			return -1;
		__builtin_memcpy(at, t, sizeof(*t));
		return 0;
	}
	if (at + sizeof(t->th) > data_end)
		return -1;
	__builtin_memcpy(at, &t->th, sizeof(t->th));
	return 0;
}

/* The SYN's options and ISN (its TCP header at l4); 0 on success. Apart
 * from pc_cookie_answer(), so that the two stack frames stay small. */
static __noinline int pc_syn_options(struct xdp_md *ctx, __u32 l4, struct pc_tcp_opts *o,
				     __u32 *isn)
{
	struct pc_opt_walk w = {};
	struct tcphdr syn;
	__u32 opt_len;

	if (!o || !isn || bpf_xdp_load_bytes(ctx, l4, &syn, sizeof(syn)))
		return -1;
	opt_len = syn.doff * 4;
	opt_len = opt_len > sizeof(syn) ? opt_len - sizeof(syn) : 0;
	if (opt_len > PC_TCP_MAX_OPT_BYTES)
		return -1;
	if (opt_len && bpf_xdp_load_bytes(ctx, l4 + sizeof(syn), w.buf, opt_len))
		return -1;
	w.len = opt_len;
	pc_tcp_parse_opts(&w);
	*o = w.opts;
	*isn = bpf_ntohl(syn.seq);
	return 0;
}

/* Writes over the SYN `p` (in ctx) its SYN-ACK with a cookie; 0 on success,
 * and the frame is then ready for XDP_TX. VLAN tags stay as they came; IPv4
 * options and IPv6 extension headers are not repeated. */
static __noinline int pc_cookie_answer(struct xdp_md *ctx, const struct pc_packet *p)
{
	const struct pc_cookie_state *st = pc_cookie_state();
	struct pc_tcp_opts o = {};
	struct pc_synack_tcp t;
	__u32 l3 = p->l3_off, l4 = p->l4_off, ip_len, tcp_len, addr_len, client_isn = 0, cookie;
	__u32 zero = 0;
	__be32 proto_len;
	__s64 now = pc_now(), sum, frame_len;
	void *data, *data_end;
	struct ethhdr *eth;
	__u8 mac[ETH_ALEN];

	if (!st || l3 > PC_MAX_L3_OFF || l4 > PC_TC_PULL_BYTES ||
	    pc_syn_options(ctx, l4, &o, &client_isn))
		return -1;
	ip_len = p->family == PC_FAMILY_V4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	tcp_len = sizeof(t);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	frame_len = data_end - data;
	/* A full-width difference: clang would otherwise do 32-bit pointer
	 * arithmetic, which the verifier refuses. */
	asm volatile("" : "+r"(frame_len));
	if (bpf_xdp_adjust_tail(ctx, (int)(l3 + ip_len + tcp_len) - (int)frame_len)) {
		/* No room to grow the frame (a short SYN, on a veth): a bare
		 * header always fits, with a cookie that says no options were
		 * answered. */
		o.sack_ok = 0;
		o.wscale = PC_COOKIE_NO_WSCALE;
		o.has_ts = 0;
		tcp_len = sizeof(struct tcphdr);
		if (bpf_xdp_adjust_tail(ctx, (int)(l3 + ip_len + tcp_len) - (int)frame_len))
			return -1;
	}
	cookie = pc_cookie_make(p, client_isn, &o, now, st);
	pc_synack_tcp_fill(&t, p, client_isn, cookie, &o, pc_synack_mss(ctx, p->family), now);
	t.th.doff = tcp_len / 4;

	/* The pseudo-header: both addresses (a ones' complement sum does not
	 * care which is which), the protocol and the TCP length. */
	addr_len = p->family == PC_FAMILY_V4 ? 4 : 16;
	proto_len = bpf_htonl(IPPROTO_TCP << 16 | tcp_len);
	sum = bpf_csum_diff(0, 0, (__be32 *)p->src, addr_len, 0);
	sum = bpf_csum_diff(0, 0, (__be32 *)p->dst, addr_len, sum);
	sum = bpf_csum_diff(0, 0, &proto_len, sizeof(proto_len), sum);
	sum = bpf_csum_diff(0, 0, (__be32 *)&t, tcp_len == sizeof(t) ? sizeof(t) : sizeof(t.th),
			    sum);
	t.th.check = pc_csum_fold(sum);

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);

	l3 &= 0x1f; /* <= PC_MAX_L3_OFF, checked above: a bound the verifier sees */
	if (p->family == PC_FAMILY_V4) {
		struct iphdr *ip = data + l3;

		if ((void *)(ip + 1) > data_end)
			return -1;
		ip->version = 4;
		ip->ihl = 5;
		ip->tos = 0;
		ip->tot_len = bpf_htons(sizeof(*ip) + tcp_len);
		ip->id = 0;
		ip->frag_off = bpf_htons(PC_IP_DF);
		ip->ttl = PC_SYNACK_TTL;
		ip->protocol = IPPROTO_TCP;
		ip->check = 0;
		__builtin_memcpy(&ip->saddr, p->dst, 4);
		__builtin_memcpy(&ip->daddr, p->src, 4);
		ip->check = pc_csum_fold(bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0));
		if (pc_synack_put(ip + 1, data_end, &t, tcp_len))
			return -1;
	} else {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__builtin_memset(ip6, 0, 4);
		ip6->version = 6;
		ip6->payload_len = bpf_htons(tcp_len);
		ip6->nexthdr = IPPROTO_TCP;
		ip6->hop_limit = PC_SYNACK_TTL;
		__builtin_memcpy(&ip6->saddr, p->dst, 16);
		__builtin_memcpy(&ip6->daddr, p->src, 16);
		if (pc_synack_put(ip6 + 1, data_end, &t, tcp_len))
			return -1;
	}

	pc_cookie_count(PC_COOKIE_SENT);
	{
		struct pc_cookie_state *s = bpf_map_lookup_elem(&syn_cookies, &zero);

		/* One shared write a second at most, for the TC side's window. */
		if (s && now - s->last_sent_at > 1000000000LL)
			s->last_sent_at = now;
	}
	return 0;
}

#endif /* PORTCULLIS_SYNACK_H */
