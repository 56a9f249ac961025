/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * SYN cookies (PRODUCT.md step 12). The XDP program answers a SYN itself
 * with a SYN-ACK whose sequence number is a cookie, and keeps no state for
 * it; the TC program (cookie.bpf.c) checks the cookie in the client's ACK
 * and hands the connection to the real listener with
 * bpf_sk_assign_tcp_reqsk(), which creates the request socket as if the
 * kernel had sent the cookie itself. The cookie (the SYN-ACK's ISN):
 *
 *   bits 31..8  SipHash-2-4, keyed by syn_cookies[0].key, of the addresses,
 *               the ports, the client's ISN, the time slot and bits 7..0
 *   bits  7..6  the client's MSS, rounded down into pc_cookie_mss()
 *   bit      5  the client offered SACK
 *   bits  4..1  the client's window scale (PC_COOKIE_NO_WSCALE: none)
 *   bit      0  the parity of the time slot it was minted in
 *
 * Timestamps need no bits: the client's ACK echoes them.
 */
#ifndef PORTCULLIS_COOKIE_H
#define PORTCULLIS_COOKIE_H

#include "cookie_maps.h"
#include "parsing.h"

#define PC_TCPOPT_EOL 0
#define PC_TCPOPT_NOP 1
#define PC_TCPOPT_MSS 2
#define PC_TCPOPT_WSCALE 3
#define PC_TCPOPT_SACK_PERM 4
#define PC_TCPOPT_TIMESTAMP 8
#define PC_TCP_MAX_OPT_BYTES 40
#define PC_TCP_MAX_WSCALE 14
#define PC_COOKIE_NO_WSCALE 15
#define PC_COOKIE_LOW_BITS 0xffu

/* The TCP options a cookie is made of, as the client sent them. */
struct pc_tcp_opts {
	__u16 mss; /* 0: not offered */
	__u8 wscale; /* PC_COOKIE_NO_WSCALE: not offered */
	__u8 sack_ok;
	__u8 has_ts;
	__u32 tsval; /* host byte order */
	__u32 tsecr;
};

struct pc_opt_walk {
	__u8 buf[64]; /* the options, copied out of the packet */
	__u32 len;
	__u32 off;
	struct pc_tcp_opts opts;
};

static __always_inline __u32 pc_be32_at(const __u8 *buf, __u32 off)
{
	return (__u32)buf[off & 63] << 24 | (__u32)buf[(off + 1) & 63] << 16 |
	       (__u32)buf[(off + 2) & 63] << 8 | buf[(off + 3) & 63];
}

/* One option per call, from bpf_loop(): a loop the verifier checks once. */
static long pc_tcp_option(__u32 index, void *ctx)
{
	struct pc_opt_walk *w = ctx;
	__u32 off = w->off, len;
	__u8 kind;

	if (off >= w->len || off >= PC_TCP_MAX_OPT_BYTES)
		return 1;
	kind = w->buf[off & 63];
	if (kind == PC_TCPOPT_EOL)
		return 1;
	if (kind == PC_TCPOPT_NOP) {
		w->off = off + 1;
		return 0;
	}
	if (off + 1 >= w->len)
		return 1;
	len = w->buf[(off + 1) & 63];
	if (len < 2 || off + len > w->len)
		return 1; /* malformed: what was read so far stands */
	if (kind == PC_TCPOPT_MSS && len == 4) {
		w->opts.mss = (__u16)w->buf[(off + 2) & 63] << 8 | w->buf[(off + 3) & 63];
	} else if (kind == PC_TCPOPT_WSCALE && len == 3) {
		__u8 ws = w->buf[(off + 2) & 63];

		w->opts.wscale = ws > PC_TCP_MAX_WSCALE ? PC_TCP_MAX_WSCALE : ws; /* RFC 7323 */
	} else if (kind == PC_TCPOPT_SACK_PERM && len == 2) {
		w->opts.sack_ok = 1;
	} else if (kind == PC_TCPOPT_TIMESTAMP && len == 10) {
		w->opts.has_ts = 1;
		w->opts.tsval = pc_be32_at(w->buf, off + 2);
		w->opts.tsecr = pc_be32_at(w->buf, off + 6);
	}
	w->off = off + len;
	return 0;
}

/* Walks the options already copied into w->buf (w->len bytes). */
static __always_inline void pc_tcp_parse_opts(struct pc_opt_walk *w)
{
	w->off = 0;
	w->opts.wscale = PC_COOKIE_NO_WSCALE;
	bpf_loop(PC_TCP_MAX_OPT_BYTES, pc_tcp_option, w, 0);
}

static __always_inline __u64 pc_rotl64(__u64 x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define PC_SIPROUND(v0, v1, v2, v3)     \
	do {                            \
		v0 += v1;               \
		v1 = pc_rotl64(v1, 13); \
		v1 ^= v0;               \
		v0 = pc_rotl64(v0, 32); \
		v2 += v3;               \
		v3 = pc_rotl64(v3, 16); \
		v3 ^= v2;               \
		v0 += v3;               \
		v3 = pc_rotl64(v3, 21); \
		v3 ^= v0;               \
		v2 += v1;               \
		v1 = pc_rotl64(v1, 17); \
		v1 ^= v2;               \
		v2 = pc_rotl64(v2, 32); \
	} while (0)

#define PC_COOKIE_WORDS 6

/* One 8-byte word of SipHash-2-4's message. */
#define PC_SIP_WORD(v0, v1, v2, v3, m)       \
	do {                                 \
		__u64 word_ = (m);           \
		v3 ^= word_;                 \
		PC_SIPROUND(v0, v1, v2, v3); \
		PC_SIPROUND(v0, v1, v2, v3); \
		v0 ^= word_;                 \
	} while (0)

static __always_inline __u64 pc_u64_at(const __u8 *b)
{
	__u64 v;

	__builtin_memcpy(&v, b, 8);
	return v;
}

/* SipHash-2-4 of the connection's identity (PC_COOKIE_WORDS words: source,
 * destination, ports and ISN, family and slot and the low bits), folded to
 * 32 bits. */
static __noinline __u32 pc_cookie_hash(const struct pc_packet *p, __u32 client_isn, __u64 slot,
				       __u32 low, const struct pc_cookie_state *st)
{
	__u64 v0 = st->key[0] ^ 0x736f6d6570736575ULL;
	__u64 v1 = st->key[1] ^ 0x646f72616e646f6dULL;
	__u64 v2 = st->key[0] ^ 0x6c7967656e657261ULL;
	__u64 v3 = st->key[1] ^ 0x7465646279746573ULL;
	__u64 b = (__u64)(PC_COOKIE_WORDS * 8) << 56;

	if (!p || !st)
		return 0;
	PC_SIP_WORD(v0, v1, v2, v3, pc_u64_at(p->src));
	PC_SIP_WORD(v0, v1, v2, v3, pc_u64_at(p->src + 8));
	PC_SIP_WORD(v0, v1, v2, v3, pc_u64_at(p->dst));
	PC_SIP_WORD(v0, v1, v2, v3, pc_u64_at(p->dst + 8));
	PC_SIP_WORD(v0, v1, v2, v3, (__u64)p->sport << 48 | (__u64)p->dport << 32 | client_isn);
	PC_SIP_WORD(v0, v1, v2, v3,
		    (__u64)p->family << 56 | (slot & 0xffffffffffULL) << 8 |
			    (low & PC_COOKIE_LOW_BITS));
	v3 ^= b;
	PC_SIPROUND(v0, v1, v2, v3);
	PC_SIPROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	PC_SIPROUND(v0, v1, v2, v3);
	PC_SIPROUND(v0, v1, v2, v3);
	PC_SIPROUND(v0, v1, v2, v3);
	PC_SIPROUND(v0, v1, v2, v3);
	b = v0 ^ v1 ^ v2 ^ v3;
	return (__u32)(b ^ (b >> 32));
}

/* The four MSS a cookie can carry. IPv6 starts at the kernel's minimum
 * for it (IPV6_MIN_MTU - 60). */
static __always_inline __u16 pc_cookie_mss(__u8 family, __u32 index)
{
	if (family == PC_FAMILY_V4)
		return index == 3 ? 1460 : index == 2 ? 1440 : index == 1 ? 1300 : 536;
	return index == 3 ? 1440 : index == 2 ? 1420 : index == 1 ? 1280 : 1220;
}

/* The lookup tuple of the connection `p` opens (or belongs to), as seen on
 * ingress; returns its size. */
static __always_inline __u32 pc_sock_tuple(const struct pc_packet *p, struct bpf_sock_tuple *t)
{
	__builtin_memset(t, 0, sizeof(*t));
	if (p->family == PC_FAMILY_V4) {
		__builtin_memcpy(&t->ipv4.saddr, p->src, 4);
		__builtin_memcpy(&t->ipv4.daddr, p->dst, 4);
		t->ipv4.sport = p->sport;
		t->ipv4.dport = p->dport;
		return sizeof(t->ipv4);
	}
	__builtin_memcpy(t->ipv6.saddr, p->src, 16);
	__builtin_memcpy(t->ipv6.daddr, p->dst, 16);
	t->ipv6.sport = p->sport;
	t->ipv6.dport = p->dport;
	return sizeof(t->ipv6);
}

static __always_inline const struct pc_cookie_state *pc_cookie_state(void)
{
	__u32 zero = 0;
	const struct pc_cookie_state *st = bpf_map_lookup_elem(&syn_cookies, &zero);

	/* An all-zero key was never set: no cookie can be trusted. */
	return st && (st->key[0] | st->key[1]) ? st : NULL;
}

/* The cookie for the SYN `p` with sequence number client_isn and options o. */
static __always_inline __u32 pc_cookie_make(const struct pc_packet *p, __u32 client_isn,
					    const struct pc_tcp_opts *o, __s64 now,
					    const struct pc_cookie_state *st)
{
	__u64 slot = (__u64)now >> PC_COOKIE_SLOT_SHIFT;
	__u16 mss = o->mss ? o->mss : pc_cookie_mss(p->family, 0); /* RFC 9293 default */
	__u32 index = 0, low;

	if (mss >= pc_cookie_mss(p->family, 3))
		index = 3;
	else if (mss >= pc_cookie_mss(p->family, 2))
		index = 2;
	else if (mss >= pc_cookie_mss(p->family, 1))
		index = 1;
	low = index << 6 | (o->sack_ok ? 1u : 0u) << 5 | (o->wscale & 15u) << 1 | (__u32)(slot & 1);
	return (pc_cookie_hash(p, client_isn, slot, low, st) & ~PC_COOKIE_LOW_BITS) | low;
}

/* 1 if `cookie` was made by pc_cookie_make() for this connection in this
 * time slot or the one before; then *o holds the options it carries. */
static __always_inline int pc_cookie_check(const struct pc_packet *p, __u32 client_isn,
					   __u32 cookie, __s64 now,
					   const struct pc_cookie_state *st, struct pc_tcp_opts *o)
{
	__u64 slot = (__u64)now >> PC_COOKIE_SLOT_SHIFT;
	__u32 low = cookie & PC_COOKIE_LOW_BITS;

	if ((slot & 1) != (low & 1))
		slot--; /* minted in the slot before */
	if ((pc_cookie_hash(p, client_isn, slot, low, st) ^ cookie) & ~PC_COOKIE_LOW_BITS)
		return 0;
	o->mss = pc_cookie_mss(p->family, low >> 6);
	o->sack_ok = (low >> 5) & 1;
	o->wscale = (low >> 1) & 15;
	return 1;
}

#endif /* PORTCULLIS_COOKIE_H */
