// Reads the datapath's per-CPU counters, summed over CPUs.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/abi.h"
#include "datapath/datapath.h"

namespace portcullis::datapath {

struct VerdictCount {
  pc_verdict_key key;
  pc_counter total;
};

struct PortDropCount {
  pc_port_key key;
  uint64_t packets;
};

// Both verdict counter maps (the per-CPU array, whose blocks belong to the
// interfaces in iface_slots, and the hash of the rest), merged; entries that
// counted nothing are left out.
absl::StatusOr<std::vector<VerdictCount>> ReadVerdictCounters(int iface_slots_fd,
                                                              int fast_array_fd, int hash_fd);
absl::StatusOr<std::vector<PortDropCount>> ReadPortDropCounters(int map_fd);

// The same, from a loaded datapath's maps.
absl::StatusOr<std::vector<VerdictCount>> ReadVerdictCounters(const Datapath& dp);
absl::StatusOr<std::vector<PortDropCount>> ReadPortDropCounters(const Datapath& dp);

}  // namespace portcullis::datapath
