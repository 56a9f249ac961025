/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Shadow evaluation: a candidate policy, in the slot packets do not select,
 * judges every packet beside the live policy without acting. What it would
 * change is counted here, by transition (live -> shadow verdict and reason)
 * and port, and by transition and source. Its rate limits run on buckets of
 * their own (PC_SHADOW_BUCKET_TAG), so no token is taken twice.
 */
#ifndef PORTCULLIS_SHADOW_H
#define PORTCULLIS_SHADOW_H

#include "maps.h"
#include "parsing.h"

static __always_inline void pc_shadow_add(void *map, const void *key)
{
	__u64 one = 1, *c = bpf_map_lookup_elem(map, key);

	if (c) {
		(*c)++; /* per-CPU value: no other CPU writes it */
		return;
	}
	bpf_map_update_elem(map, key, &one, BPF_NOEXIST);
}

/* Counts packet `p`, judged (from_verdict, from_reason) by the live policy
 * and (to_verdict, to_reason) by the shadow, when the two differ. */
static __always_inline void pc_shadow_record(const struct pc_packet *p, __u8 from_verdict,
					     __u8 from_reason, __u8 to_verdict, __u8 to_reason)
{
	struct pc_shadow_key key = { .from_verdict = from_verdict,
				     .from_reason = from_reason,
				     .to_verdict = to_verdict,
				     .to_reason = to_reason,
				     .port = p->has_ports ? bpf_ntohs(p->dport) : 0,
				     .proto = p->proto };
	struct pc_shadow_source_key src = { .from_verdict = from_verdict,
					    .from_reason = from_reason,
					    .to_verdict = to_verdict,
					    .to_reason = to_reason,
					    .family = p->family };

	if (from_verdict == to_verdict && from_reason == to_reason)
		return;
	pc_shadow_add(&shadow_transitions, &key);
	__builtin_memcpy(src.addr, p->src, 16);
	pc_shadow_add(&shadow_sources, &src);
}

#endif /* PORTCULLIS_SHADOW_H */
