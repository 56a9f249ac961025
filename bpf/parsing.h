/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parser: Ethernet, up to two VLAN tags, IPv4 (with options) or IPv6
 * (with a bounded extension-header walk), then TCP, UDP, ICMP or ICMPv6.
 *
 * Cursor style: each parse_* step checks its header against data_end,
 * advances the cursor, and reports what comes next. Lengths inside the packet
 * (IPv4 total length, IPv6 payload length) are trusted only after they are
 * checked against the frame, so a header that claims more than was received
 * is malformed rather than read past.
 */
#ifndef PORTCULLIS_PARSING_H
#define PORTCULLIS_PARSING_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "portcullis/abi.h"

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif
#define PC_MAX_VLAN_TAGS 2

/* ICMP constants, defined here because linux/icmp.h drags in libc headers. */
#define PC_ICMP_DEST_UNREACH 3
#define PC_ICMP_FRAG_NEEDED 4
#define PC_ICMPV6_PKT_TOOBIG 2
#define PC_ICMPV6_ND_FIRST 133 /* router solicitation */
#define PC_ICMPV6_ND_LAST 137 /* redirect */

#define PC_IP_MF 0x2000
#define PC_IP_OFFSET 0x1FFF

enum pc_parse_result {
	PC_PARSE_OK = 0,
	PC_PARSE_NON_IP = 1,
	PC_PARSE_MALFORMED = 2,
};

/* What the verdict function needs to know about a packet. */
struct pc_packet {
	__u8 family; /* PC_FAMILY_V4 / PC_FAMILY_V6 */
	__u8 proto; /* transport protocol (IPPROTO_*) */
	__u8 non_first_fragment;
	__u8 tcp_flags; /* TCP byte 13: CWR..FIN */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 has_ports;
	__u8 hop_limit; /* IPv4 TTL, IPv6 hop limit */
	__u16 sport; /* network byte order */
	__u16 dport; /* network byte order */
	__u8 src[16];
	__u8 dst[16];
	__u16 l3_off; /* from the frame's start: the IP header */
	__u16 l4_off; /* ... and the transport header */
};

struct pc_cursor {
	void *pos;
	void *end;
};

struct pc_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

#define PC_TCP_FIN 0x01
#define PC_TCP_SYN 0x02
#define PC_TCP_RST 0x04
#define PC_TCP_ACK 0x10

/* Ethernet plus up to PC_MAX_VLAN_TAGS tags: the inner ethertype (network
 * byte order) in *proto. Malformed when a tag is cut off, or there are more
 * tags than the bound. (Any ethertype value is valid, 0 included: an 802.3
 * length field is simply not IP.) */
static __always_inline int pc_parse_eth(struct pc_cursor *c, __be16 *proto)
{
	struct ethhdr *eth = c->pos;

	if ((void *)(eth + 1) > c->end)
		return PC_PARSE_MALFORMED;
	*proto = eth->h_proto;
	c->pos = eth + 1;

#pragma unroll
	for (int i = 0; i < PC_MAX_VLAN_TAGS; i++) {
		struct pc_vlan_hdr *vlan = c->pos;

		if (*proto != bpf_htons(ETH_P_8021Q) && *proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > c->end)
			return PC_PARSE_MALFORMED;
		*proto = vlan->encap_proto;
		c->pos = vlan + 1;
	}
	if (*proto == bpf_htons(ETH_P_8021Q) || *proto == bpf_htons(ETH_P_8021AD))
		return PC_PARSE_MALFORMED;
	return PC_PARSE_OK;
}

/* IPv4 header with options. Sets *l4_len to the bytes the IP header says
 * follow it (already checked to be inside the frame). */
static __always_inline int pc_parse_ipv4(struct pc_cursor *c, struct pc_packet *p, __u32 *l4_len)
{
	struct iphdr *ip = c->pos;
	__u32 hdr_len, tot_len;

	if ((void *)(ip + 1) > c->end)
		return PC_PARSE_MALFORMED;
	if (ip->version != 4)
		return PC_PARSE_MALFORMED;
	hdr_len = ip->ihl * 4;
	if (hdr_len < sizeof(*ip))
		return PC_PARSE_MALFORMED;
	tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < hdr_len)
		return PC_PARSE_MALFORMED;
	/* The frame may carry padding after the datagram, never less than it. */
	if (c->pos + tot_len > c->end)
		return PC_PARSE_MALFORMED;

	/* A multicast source never appears on the wire (step 2). */
	if ((((__u8 *)&ip->saddr)[0] & 0xf0) == 0xe0)
		return PC_PARSE_MALFORMED;

	p->family = PC_FAMILY_V4;
	p->proto = ip->protocol;
	p->hop_limit = ip->ttl;
	__builtin_memcpy(p->src, &ip->saddr, 4);
	__builtin_memcpy(p->dst, &ip->daddr, 4);
	if (bpf_ntohs(ip->frag_off) & PC_IP_OFFSET)
		p->non_first_fragment = 1;
	*l4_len = tot_len - hdr_len;
	c->pos += hdr_len;
	return PC_PARSE_OK;
}

struct pc_ipv6_opt_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct pc_ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in the top 13 bits, M flag in bit 0 */
	__be32 identification;
};

/* IPv6 sources that never appear on the wire (step 2): multicast, and
 * IPv4-mapped (::ffff:0:0/96) or IPv4-compatible (::/96) addresses, which a
 * dual-stack socket would take for the embedded IPv4 source. The unspecified
 * address :: is allowed: duplicate address detection sends from it. */
static __always_inline int pc_ipv6_source_forbidden(const struct in6_addr *a)
{
	const __u32 *w = a->in6_u.u6_addr32;

	if (a->in6_u.u6_addr8[0] == 0xff)
		return 1;
	if (w[0] || w[1])
		return 0;
	if (w[2] == bpf_htonl(0xffff))
		return 1;
	return !w[2] && w[3];
}

static __always_inline int pc_is_ipv6_ext(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_FRAGMENT;
}

/* IPv6 header and its extension headers (hop-by-hop, routing, destination
 * options, fragment), at most PC_MAX_IPV6_EXT_HEADERS of them. */
static __always_inline int pc_parse_ipv6(struct pc_cursor *c, struct pc_packet *p, __u32 *l4_len)
{
	struct ipv6hdr *ip6 = c->pos;
	__u32 remaining;
	__u8 nexthdr;

	if ((void *)(ip6 + 1) > c->end)
		return PC_PARSE_MALFORMED;
	if (ip6->version != 6)
		return PC_PARSE_MALFORMED;
	remaining = bpf_ntohs(ip6->payload_len);
	c->pos = ip6 + 1;
	if (c->pos + remaining > c->end)
		return PC_PARSE_MALFORMED;
	if (pc_ipv6_source_forbidden(&ip6->saddr))
		return PC_PARSE_MALFORMED;

	p->family = PC_FAMILY_V6;
	p->hop_limit = ip6->hop_limit;
	__builtin_memcpy(p->src, &ip6->saddr, 16);
	__builtin_memcpy(p->dst, &ip6->daddr, 16);
	nexthdr = ip6->nexthdr;

#pragma unroll
	for (int i = 0; i < PC_MAX_IPV6_EXT_HEADERS; i++) {
		__u32 len;

		if (!pc_is_ipv6_ext(nexthdr))
			break;
		if (nexthdr == IPPROTO_FRAGMENT) {
			struct pc_ipv6_frag_hdr *fh = c->pos;

			if ((void *)(fh + 1) > c->end || remaining < sizeof(*fh))
				return PC_PARSE_MALFORMED;
			nexthdr = fh->nexthdr;
			len = sizeof(*fh);
			if (bpf_ntohs(fh->frag_off) & 0xFFF8) {
				/* Non-first fragment: no transport header follows. */
				p->non_first_fragment = 1;
				p->proto = nexthdr;
				*l4_len = remaining - len;
				c->pos += len;
				return PC_PARSE_OK;
			}
		} else {
			struct pc_ipv6_opt_hdr *oh = c->pos;

			if ((void *)(oh + 1) > c->end)
				return PC_PARSE_MALFORMED;
			nexthdr = oh->nexthdr;
			len = ((__u32)oh->hdrlen + 1) * 8;
		}
		if (remaining < len)
			return PC_PARSE_MALFORMED;
		remaining -= len;
		c->pos += len;
	}
	/* Still an extension header after the bound: too long a chain. */
	if (pc_is_ipv6_ext(nexthdr))
		return PC_PARSE_MALFORMED;

	p->proto = nexthdr;
	*l4_len = remaining;
	return PC_PARSE_OK;
}

/* Transport header. l4_len is what the IP layer says the datagram holds
 * after the IP headers; a header that does not fit is malformed. */
static __always_inline int pc_parse_l4(struct pc_cursor *c, struct pc_packet *p, __u32 l4_len)
{
	if (p->non_first_fragment)
		return PC_PARSE_OK;

	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = c->pos;
		__u32 doff;

		if ((void *)(tcp + 1) > c->end || l4_len < sizeof(*tcp))
			return PC_PARSE_MALFORMED;
		doff = tcp->doff * 4;
		if (doff < sizeof(*tcp) || doff > l4_len)
			return PC_PARSE_MALFORMED;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
		p->has_ports = 1;
		return PC_PARSE_OK;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = c->pos;

		if ((void *)(udp + 1) > c->end || l4_len < sizeof(*udp))
			return PC_PARSE_MALFORMED;
		p->sport = udp->source;
		p->dport = udp->dest;
		p->has_ports = 1;
		return PC_PARSE_OK;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		/* type, code, checksum and the 4-byte rest of header */
		__u8 *icmp = c->pos;

		if ((p->proto == IPPROTO_ICMP) != (p->family == PC_FAMILY_V4))
			return PC_PARSE_OK; /* ICMP in IPv6 or ICMPv6 in IPv4: just a protocol */
		if ((void *)(icmp + 8) > c->end || l4_len < 8)
			return PC_PARSE_MALFORMED;
		p->icmp_type = icmp[0];
		p->icmp_code = icmp[1];
		return PC_PARSE_OK;
	}
	default:
		return PC_PARSE_OK;
	}
}

/* Parses a whole frame into *p. */
static __noinline int pc_parse(void *data, void *data_end, struct pc_packet *p)
{
	struct pc_cursor c = { .pos = data, .end = data_end };
	__u32 l4_len = 0;
	__be16 proto;
	int ret;

	ret = pc_parse_eth(&c, &proto);
	if (ret != PC_PARSE_OK)
		return ret;
	p->l3_off = c.pos - data;
	if (proto == bpf_htons(ETH_P_IP))
		ret = pc_parse_ipv4(&c, p, &l4_len);
	else if (proto == bpf_htons(ETH_P_IPV6))
		ret = pc_parse_ipv6(&c, p, &l4_len);
	else
		return PC_PARSE_NON_IP;
	if (ret != PC_PARSE_OK)
		return ret;
	p->l4_off = c.pos - data;
	return pc_parse_l4(&c, p, l4_len);
}

#endif /* PORTCULLIS_PARSING_H */
