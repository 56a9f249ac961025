// The loaded Portcullis BPF object: programs, shared maps, and both policy
// slots' inner maps. Owns every kernel object it creates (RAII, move-free:
// held by unique_ptr).
#pragma once

#include <array>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "datapath/bpf_util.h"

struct portcullis_bpf;  // the bpftool-generated skeleton

namespace portcullis::datapath {

struct DatapathOptions {
  // Read "now" from the user_clock map instead of the kernel's monotonic
  // clock: simulation and tests replay time deterministically.
  bool use_user_clock = false;
  // Record each packet's verdict in last_verdict (simulation and tests).
  bool record_last_verdict = false;
  // Drop samples sent to the ring buffer, at most this many per second.
  uint64_t samples_per_second = 100;
  uint64_t sample_burst = 100;
};

// The per-slot policy maps, in the order the installer writes them.
enum class SlotMap {
  kSrcV4Exact,
  kSrcV6Exact,
  kSrcV4Prefix,
  kSrcV6Prefix,
  kDstV4,
  kDstV6,
  kPortClass,
  kPortClasses,
  kCount,
};
inline constexpr int kSlotMapCount = static_cast<int>(SlotMap::kCount);
absl::string_view SlotMapName(SlotMap m);

class Datapath {
 public:
  // Opens, configures and loads the object, and creates both policy slots.
  // PermissionDenied when the process may not use BPF.
  static absl::StatusOr<std::unique_ptr<Datapath>> Load(const DatapathOptions& options);
  ~Datapath();
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  const DatapathOptions& options() const { return options_; }
  int xdp_prog_fd() const;
  int tc_ingress_prog_fd() const;

  int active_policy_fd() const;
  int config_fd(int slot) const { return config_inner_[slot].get(); }
  int slot_map_fd(SlotMap map, int slot) const {
    return inner_[static_cast<int>(map)][slot].get();
  }

  int verdict_counters_fd() const;
  int port_drop_counters_fd() const;
  int source_buckets_fd() const;
  int global_buckets_fd() const;
  int egress_flows_fd() const;
  int ingress_flows_fd() const;
  int drop_samples_fd() const;
  int user_clock_fd() const;
  int last_verdict_fd() const;

 private:
  explicit Datapath(const DatapathOptions& options) : options_(options) {}

  DatapathOptions options_;
  struct ::portcullis_bpf* skel_ = nullptr;
  std::array<std::array<UniqueFd, 2>, kSlotMapCount> inner_;
  std::array<UniqueFd, 2> config_inner_;
};

}  // namespace portcullis::datapath
