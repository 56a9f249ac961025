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
 * The kfunc takes only a listener of the device's own namespace, so for the
 * pods behind --tc-interfaces the work is split: the uplink checks an ACK
 * that finds no socket in the node's namespace on the tuple the client used
 * (before kube-proxy's DNAT) and records a valid one in cookie_handovers;
 * portcullis_tc_cookie_pod, at the ingress of the pod's side of its veth,
 * hands it to the pod's listener.
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
/* Load-time constant: pods behind --tc-interfaces get cookies (XDP answers
 * SYNs that find no socket in the node's namespace), so the uplink records
 * valid ACKs that find none for the pod side. */
const volatile __u8 cookies_for_pods = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PC_COOKIE_HANDOVERS);
	__type(key, struct pc_cookie_handover_key);
	__type(value, struct pc_cookie_handover);
} cookie_handovers SEC(".maps");

/* Only while cookies are being sent: other times, no lookup at all. */
static __always_inline const struct pc_cookie_state *pc_cookie_window(void)
{
	const struct pc_cookie_state *st = pc_cookie_state();

	if (!st || (__s64)bpf_ktime_get_coarse_ns() - st->last_sent_at > PC_COOKIE_ACK_WINDOW_NS)
		return NULL;
	return st;
}

/* Parses skb into p: 0 for a bare ACK (no SYN, RST or FIN), which is all a
 * cookie's connection can start with. */
static __always_inline int pc_parse_ack(struct __sk_buff *skb, struct pc_packet *p)
{
	bpf_skb_pull_data(skb, skb->len < PC_TC_PULL_BYTES ? skb->len : PC_TC_PULL_BYTES);
	if (pc_parse((void *)(long)skb->data, (void *)(long)skb->data_end, p) != PC_PARSE_OK ||
	    p->proto != IPPROTO_TCP || p->non_first_fragment ||
	    (p->tcp_flags & (PC_TCP_SYN | PC_TCP_RST | PC_TCP_FIN | PC_TCP_ACK)) != PC_TCP_ACK)
		return -1;
	return 0;
}

/* Checks the ACK `p` (parsed from skb) for a cookie: 1 for a valid one, and
 * then *h holds what it and the ACK tell the listener and *k the ACK's
 * numbers. */
static __always_inline int pc_cookie_read(struct __sk_buff *skb, const struct pc_packet *p,
					  const struct pc_cookie_state *st,
					  struct pc_cookie_handover *h,
					  struct pc_cookie_handover_key *k)
{
	struct pc_opt_walk w = {};
	struct pc_tcp_opts o = {};
	struct tcphdr th;
	__u32 opt_len;

	if (bpf_skb_load_bytes(skb, p->l4_off, &th, sizeof(th)))
		return 0;
	opt_len = th.doff * 4;
	opt_len = opt_len > sizeof(th) ? opt_len - sizeof(th) : 0;
	if (opt_len > PC_TCP_MAX_OPT_BYTES)
		return 0;
	if (opt_len && bpf_skb_load_bytes(skb, p->l4_off + sizeof(th), w.buf, opt_len))
		return 0;
	w.len = opt_len;
	pc_tcp_parse_opts(&w); /* the timestamps the ACK echoes */

	if (!pc_cookie_check(p, bpf_ntohl(th.seq) - 1, bpf_ntohl(th.ack_seq) - 1,
			     (__s64)bpf_ktime_get_coarse_ns(), st, &o))
		return 0;
	h->mss = o.mss;
	h->wscale = o.wscale;
	h->sack_ok = o.sack_ok;
	if (w.opts.has_ts) {
		h->tstamp_ok = 1;
		h->tsval = w.opts.tsval;
		h->tsecr = w.opts.tsecr;
	}
	k->seq = th.seq;
	k->ack = th.ack_seq;
	return 1;
}

/* Hands the ACK in skb, with a valid cookie that says *h, to the listener
 * of `tuple` in this namespace, and counts the result. */
static __always_inline void pc_cookie_assign(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
					     __u32 tuple_size, const struct pc_cookie_handover *h,
					     __u32 mark)
{
	struct bpf_tcp_req_attrs attrs = {};
	struct bpf_sock *sk;
	int err;

	attrs.mss = h->mss;
	if (h->wscale != PC_COOKIE_NO_WSCALE) {
		attrs.wscale_ok = 1;
		attrs.snd_wscale = h->wscale;
		attrs.rcv_wscale = PC_COOKIE_RCV_WSCALE;
	}
	attrs.sack_ok = h->sack_ok;
	if (h->tstamp_ok) {
		attrs.tstamp_ok = 1;
		attrs.rcv_tsval = h->tsval;
		attrs.rcv_tsecr = h->tsecr;
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
		skb->mark |= mark;
	pc_cookie_count(err ? PC_COOKIE_INVALID : PC_COOKIE_VALID);
}

/* What a socket lookup of the ACK's tuple finds in this namespace. This
 * lookup also finds request, established and time-wait sockets: only when
 * it finds the listener does the ACK belong to no connection (a cookie's,
 * or none). */
enum pc_ack_target { PC_ACK_NO_SOCKET, PC_ACK_LISTENER, PC_ACK_CONNECTION };

static __always_inline enum pc_ack_target pc_ack_target(struct __sk_buff *skb,
							struct bpf_sock_tuple *tuple, __u32 size)
{
	struct bpf_sock *skc = bpf_skc_lookup_tcp(skb, tuple, size, BPF_F_CURRENT_NETNS, 0);
	enum pc_ack_target target;

	if (!skc)
		return PC_ACK_NO_SOCKET;
	target = skc->state == BPF_TCP_LISTEN ? PC_ACK_LISTENER : PC_ACK_CONNECTION;
	bpf_sk_release(skc);
	return target;
}

SEC("tc")
int portcullis_tc_cookie(struct __sk_buff *skb)
{
	const struct pc_cookie_state *st = pc_cookie_window();
	struct pc_cookie_handover_key k = {};
	struct pc_cookie_handover h = {};
	struct bpf_sock_tuple tuple;
	enum pc_ack_target target;
	struct pc_packet p = {};
	__u32 size;
	int valid;

	if (!st || pc_parse_ack(skb, &p))
		return TC_ACT_OK;
	size = pc_sock_tuple(&p, &tuple);
	target = pc_ack_target(skb, &tuple, size);
	if (target == PC_ACK_CONNECTION || (target == PC_ACK_NO_SOCKET && !cookies_for_pods))
		return TC_ACT_OK;
	valid = pc_cookie_read(skb, &p, st, &h, &k);
	if (target == PC_ACK_LISTENER) {
		if (valid)
			pc_cookie_assign(skb, &tuple, size, &h, cookie_mark);
		else
			pc_cookie_count(PC_COOKIE_INVALID);
	} else if (valid) {
		/* For a pod, maybe, once the kernel has routed it (and
		 * DNATed it: so it stays tracked, and unmarked). An invalid
		 * one is not counted: from here it cannot be told from a
		 * packet of a pod's own connections. */
		h.at = (__s64)bpf_ktime_get_coarse_ns();
		bpf_map_update_elem(&cookie_handovers, &k, &h, BPF_ANY);
	}
	return TC_ACT_OK;
}

/* At the ingress of a pod's side of its veth, in the pod's namespace: an
 * ACK the uplink checked is handed to the pod's listener. */
SEC("tc")
int portcullis_tc_cookie_pod(struct __sk_buff *skb)
{
	const struct pc_cookie_state *st = pc_cookie_window();
	struct pc_cookie_handover_key k;
	struct pc_cookie_handover h, *found;
	struct bpf_sock_tuple tuple;
	struct pc_packet p = {};
	struct tcphdr th;
	__u32 size;

	if (!st || pc_parse_ack(skb, &p) || bpf_skb_load_bytes(skb, p.l4_off, &th, sizeof(th)))
		return TC_ACT_OK;
	k.seq = th.seq;
	k.ack = th.ack_seq;
	found = bpf_map_lookup_elem(&cookie_handovers, &k);
	if (!found)
		return TC_ACT_OK;
	h = *found;
	bpf_map_delete_elem(&cookie_handovers, &k);
	if ((__s64)bpf_ktime_get_coarse_ns() - h.at > PC_COOKIE_HANDOVER_NS)
		return TC_ACT_OK;
	/* After the first, the connection's next packets until the pod
	 * answers carry the same numbers, and find it established. */
	size = pc_sock_tuple(&p, &tuple);
	if (pc_ack_target(skb, &tuple, size) == PC_ACK_LISTENER)
		pc_cookie_assign(skb, &tuple, size, &h, 0);
	return TC_ACT_OK;
}
