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

absl::StatusOr<std::vector<VerdictCount>> ReadVerdictCounters(int map_fd);
absl::StatusOr<std::vector<PortDropCount>> ReadPortDropCounters(int map_fd);

}  // namespace portcullis::datapath
