/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps of SYN cookies, shared by the XDP program that mints them
 * (portcullis.bpf.c) and the TC program that checks them (cookie.bpf.c,
 * which user space loads with these maps reused from the first object).
 */
#ifndef PORTCULLIS_COOKIE_MAPS_H
#define PORTCULLIS_COOKIE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "portcullis/abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pc_cookie_state);
} syn_cookies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PC_COOKIE_RESULTS);
	__type(key, __u32);
	__type(value, __u64);
} cookie_stats SEC(".maps");

static __always_inline void pc_cookie_count(__u32 result)
{
	__u64 *n = bpf_map_lookup_elem(&cookie_stats, &result);

	if (n)
		(*n)++;
}

#endif /* PORTCULLIS_COOKIE_MAPS_H */
