// The node's TCP connections that were open before the programs were
// attached: the recorder only records what it sees open (a SYN), so these
// are read from the kernel's socket table and recorded as flows the node
// opened, or their replies would be judged as new inbound traffic (the
// agent's own connection to the control service among them).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "datapath/datapath.h"

namespace portcullis::datapath {

// Records every established (or SYN-sent) TCP connection listed in
// PROC_NET/tcp and PROC_NET/tcp6 whose local port no listening socket holds:
// the connections this network namespace opened. Their opened_at is 0 (long
// before any blocklisting). Returns how many were recorded.
absl::StatusOr<uint64_t> SeedOpenedFlows(Datapath& dp, const std::string& proc_net = "/proc/net");

}  // namespace portcullis::datapath
