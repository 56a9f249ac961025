// Reads the datapath's per-CPU counters, summed over CPUs.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/abi.h"

namespace portcullis::datapath {

struct VerdictCount {
  pc_verdict_key key;
  pc_counter total;
};

struct PortDropCount {
  pc_port_key key;
  uint64_t packets;
};

// Both verdict counter maps (the per-CPU array of low ifindexes and the hash
// of the rest), merged; entries that counted nothing are left out.
absl::StatusOr<std::vector<VerdictCount>> ReadVerdictCounters(int fast_array_fd, int hash_fd);
absl::StatusOr<std::vector<PortDropCount>> ReadPortDropCounters(int map_fd);

}  // namespace portcullis::datapath
