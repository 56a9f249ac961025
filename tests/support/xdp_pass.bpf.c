// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Passes every frame. For the peer of a lab's veth uplink: a veth delivers
// what the other side's XDP program sends back out (XDP_TX, a SYN cookie's
// SYN-ACK) only to a peer that runs an XDP program itself, as the driver of
// a real NIC always takes it.
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))

SEC("xdp")
int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }

char LICENSE[] SEC("license") = "Dual BSD/GPL";
