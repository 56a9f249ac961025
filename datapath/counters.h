// Reads the datapath's per-CPU counters, summed over CPUs.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/abi.h"
#include "datapath/datapath.h"

namespace portcullis::datapath {

struct VerdictCount {
  pc_verdict_key key;
  pc_counter total;
};

// Drops by (proto, port, reason). From a counted_ports row, key.port is the
// first port of the range the row counts and last_port its last; from the
// hash, key.port is the port (0 for ports not named) and last_port equals it.
struct PortDropCount {
  pc_port_key key;
  uint16_t last_port;
  bool from_row;
  uint64_t packets;
};

// Both verdict counter maps (the per-CPU array, whose blocks belong to the
// interfaces in iface_slots, and the hash of the rest), merged; entries that
// counted nothing are left out.
absl::StatusOr<std::vector<VerdictCount>> ReadVerdictCounters(int iface_slots_fd, int fast_array_fd,
                                                              int hash_fd);
// The same, from a loaded datapath's maps.
absl::StatusOr<std::vector<VerdictCount>> ReadVerdictCounters(const Datapath& dp);
// The counted_ports registry: which (proto, port range) each row counts.
absl::StatusOr<std::vector<pc_counted_port>> ReadCountedPorts(const Datapath& dp);

// The hash, then the named_port_drops rows of every counted_ports range.
absl::StatusOr<std::vector<PortDropCount>> ReadPortDropCounters(const Datapath& dp);

// What the shadow candidate would change (bpf/shadow.h), summed over CPUs.
struct ShadowTransitionCount {
  pc_shadow_key key;
  uint64_t packets;
};
struct ShadowSourceCount {
  pc_shadow_source_key key;
  uint64_t packets;
};
struct ShadowCounts {
  std::vector<ShadowTransitionCount> transitions;
  std::vector<ShadowSourceCount> sources;
};
absl::StatusOr<ShadowCounts> ReadShadowCounts(const Datapath& dp);
// Empties both shadow maps (a new candidate starts from zero).
absl::Status ClearShadowCounts(const Datapath& dp);

// portcullis_syn_cookies_total, indexed by enum pc_cookie_result, summed
// over CPUs.
absl::StatusOr<std::array<uint64_t, PC_COOKIE_RESULTS>> ReadCookieCounts(const Datapath& dp);

}  // namespace portcullis::datapath
