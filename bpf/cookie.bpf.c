// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The TC half of SYN cookies (cookie.h): on a policed uplink's ingress,
 * after XDP has judged the packet, an ACK to a listener that belongs to no
 * connection is checked for a Portcullis cookie. A valid one becomes a
 * request socket of that listener (bpf_sk_assign_tcp_reqsk(), Linux 6.9+),
 * which the kernel completes as if it had sent the cookie itself. Anything
 * else goes on to the kernel unchanged, which answers it as it answers any
 * stray ACK (a RST, unless the kernel sent that cookie itself).
 *
 * A separate object, because its kfunc only exists on newer kernels: the
 * agent loads it where the kernel has it, with the maps of cookie_maps.h
 * shared with portcullis.bpf.o.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "cookie.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The kernel's struct bpf_tcp_req_attrs (include/net/tcp.h). */
struct bpf_tcp_req_attrs {
	__u32 rcv_tsval;
	__u32 rcv_tsecr;
	__u16 mss;
	__u8 rcv_wscale;
	__u8 snd_wscale;
	__u8 ecn_ok;
	__u8 wscale_ok;
	__u8 sack_ok;
	__u8 tstamp_ok;
	__u8 usec_ts_ok;
	__u8 reserved[3];
};

/* Opaque here; a struct (not a forward declaration), because libbpf
 * checks the kfunc's prototype against the kernel's kind by kind. */
struct sock {
	__u8 opaque;
};

extern int bpf_sk_assign_tcp_reqsk(struct __sk_buff *skb, struct sock *sk,
				   struct bpf_tcp_req_attrs *attrs, int attrs__sz) __ksym;

/* Load-time constant (rodata): the mark bits a completed cookie's ACK
 * carries to the agent's nftables rule (agent/cookie_notrack.h), which takes
 * that one packet out of conntrack and clears them; 0: none. With NAT loaded
 * (kube-proxy), netfilter's NAT at local-in orphans an skb whose socket's
 * ports disagree with its conntrack entry (nf_nat_ipv4_local_in), and the
 * request socket the kfunc assigns has no ports until TCP completes it: the
 * ACK would reach TCP without it and be reset. */
const volatile __u32 cookie_mark = 0;

/* Checks the ACK `p` (parsed from skb), to a listener and of no
 * connection, for a cookie; hands it to the listener on a valid one. */
static __always_inline void pc_cookie_complete(struct __sk_buff *skb, const struct pc_packet *p,
					       struct bpf_sock_tuple *tuple, __u32 tuple_size,
					       const struct pc_cookie_state *st)
{
	struct bpf_tcp_req_attrs attrs = {};
	struct bpf_sock *sk;
	int err;
	struct pc_opt_walk w = {};
	struct pc_tcp_opts o = {};
	struct tcphdr th;
	__u32 opt_len;

	if (bpf_skb_load_bytes(skb, p->l4_off, &th, sizeof(th)))
		return;
	opt_len = th.doff * 4;
	opt_len = opt_len > sizeof(th) ? opt_len - sizeof(th) : 0;
	if (opt_len > PC_TCP_MAX_OPT_BYTES)
		return;
	if (opt_len && bpf_skb_load_bytes(skb, p->l4_off + sizeof(th), w.buf, opt_len))
		return;
	w.len = opt_len;
	pc_tcp_parse_opts(&w); /* the timestamps the ACK echoes */

	if (!pc_cookie_check(p, bpf_ntohl(th.seq) - 1, bpf_ntohl(th.ack_seq) - 1,
			     (__s64)bpf_ktime_get_coarse_ns(), st, &o)) {
		pc_cookie_count(PC_COOKIE_INVALID);
		return;
	}
	attrs.mss = o.mss;
	if (o.wscale != PC_COOKIE_NO_WSCALE) {
		attrs.wscale_ok = 1;
		attrs.snd_wscale = o.wscale;
		attrs.rcv_wscale = PC_COOKIE_RCV_WSCALE;
	}
	attrs.sack_ok = o.sack_ok;
	if (w.opts.has_ts) {
		attrs.tstamp_ok = 1;
		attrs.rcv_tsval = w.opts.tsval;
		attrs.rcv_tsecr = w.opts.tsecr;
	}
	/* The kfunc wants a full socket the verifier trusts: the listener
	 * again, by the lookup that returns one. Refused (a sysctl turned off
	 * what the cookie carries, the listener just closed): the connection
	 * cannot be made, so the cookie counts as invalid. */
	sk = bpf_sk_lookup_tcp(skb, tuple, tuple_size, BPF_F_CURRENT_NETNS, 0);
	if (!sk) {
		pc_cookie_count(PC_COOKIE_INVALID);
		return;
	}
	err = sk->state == BPF_TCP_LISTEN ?
		      bpf_sk_assign_tcp_reqsk(skb, (struct sock *)sk, &attrs, sizeof(attrs)) :
		      -1;
	bpf_sk_release(sk);
	if (!err)
		skb->mark |= cookie_mark;
	pc_cookie_count(err ? PC_COOKIE_INVALID : PC_COOKIE_VALID);
}

SEC("tc")
int portcullis_tc_cookie(struct __sk_buff *skb)
{
	const struct pc_cookie_state *st = pc_cookie_state();
	struct bpf_sock_tuple tuple;
	struct pc_packet p = {};
	struct bpf_sock *skc;
	__u32 size;
	int listening;

	/* Only while cookies are being sent: other times, no lookup at all. */
	if (!st || (__s64)bpf_ktime_get_coarse_ns() - st->last_sent_at > PC_COOKIE_ACK_WINDOW_NS)
		return TC_ACT_OK;
	bpf_skb_pull_data(skb, skb->len < PC_TC_PULL_BYTES ? skb->len : PC_TC_PULL_BYTES);
	if (pc_parse((void *)(long)skb->data, (void *)(long)skb->data_end, &p) != PC_PARSE_OK ||
	    p.proto != IPPROTO_TCP || p.non_first_fragment ||
	    (p.tcp_flags & (PC_TCP_SYN | PC_TCP_RST | PC_TCP_FIN | PC_TCP_ACK)) != PC_TCP_ACK)
		return TC_ACT_OK;
	/* This lookup also finds request, established and time-wait sockets:
	 * only when it finds the listener does the ACK belong to no
	 * connection (a cookie's, or none). */
	size = pc_sock_tuple(&p, &tuple);
	skc = bpf_skc_lookup_tcp(skb, &tuple, size, BPF_F_CURRENT_NETNS, 0);
	if (!skc)
		return TC_ACT_OK;
	listening = skc->state == BPF_TCP_LISTEN;
	bpf_sk_release(skc);
	if (listening)
		pc_cookie_complete(skb, &p, &tuple, size, st);
	return TC_ACT_OK;
}
