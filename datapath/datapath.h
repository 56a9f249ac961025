// The loaded Portcullis BPF object: its programs and maps. Owns every kernel
// object it creates (RAII; not movable, held by unique_ptr).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

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
  // When set, every map is pinned in this bpffs directory, and maps already
  // pinned there (by an earlier agent) are reused: policy, buckets, flows and
  // counters carry on across restarts.
  std::string pin_dir;
};

// The policy maps, each holding both slots, in the order the installer
// writes them (policy_config, written last, is not among them).
enum class SlotMap {
  kSrcV4Exact,
  kSrcV6Exact,
  kSrcV4Prefix,
  kSrcV6Prefix,
  kDstV4,
  kDstV6,
  kPortPolicy,
  kRateOverrides,
  kCount,
};
inline constexpr int kSlotMapCount = static_cast<int>(SlotMap::kCount);
absl::string_view SlotMapName(SlotMap m);

class Datapath {
 public:
  // Opens, configures and loads the object. No policy is active until the
  // first install. PermissionDenied when the process may not use BPF;
  // FailedPrecondition (naming the map) when maps pinned in pin_dir have
  // another shape than this build's (an incompatible older agent).
  static absl::StatusOr<std::unique_ptr<Datapath>> Load(const DatapathOptions& options);
  ~Datapath();
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  const DatapathOptions& options() const { return options_; }
  // Pins every map in `dir`, replacing pins of the same name.
  absl::Status PinMaps(const std::string& dir);
  // Unpins what an older build left in `dir` under names this build does
  // not use (a renamed map would otherwise stay pinned, and allocated, for
  // ever). Programs still using such a map keep it alive until they go.
  // Returns the names removed.
  absl::StatusOr<std::vector<std::string>> RemoveStalePins(const std::string& dir) const;

  int xdp_prog_fd() const;
  int tc_ingress_prog_fd() const;
  int tc_egress_prog_fd() const;

  int active_slot_fd() const;
  int policy_config_fd() const;
  int slot_map_fd(SlotMap map) const;

  // Returns once every program that was running when it was called has
  // finished (an RCU grace period): after it, a slot that packets no longer
  // select is not being read by anyone.
  absl::Status WaitForRunningPrograms();

  int iface_slots_fd() const;
  int verdict_counters_fast_fd() const;
  int verdict_counters_fd() const;
  int port_drop_counters_fd() const;
  int counted_ports_fd() const;
  int named_port_drops_fd() const;
  int source_buckets_v4_fd() const;
  int source_buckets_v6_fd() const;
  int global_buckets_fd() const;
  int egress_flows_fd() const;
  int ingress_flows_fd() const;
  int served_flows_fd() const;
  int drop_samples_fd() const;
  int user_clock_fd() const;
  int last_verdict_fd() const;

 private:
  explicit Datapath(const DatapathOptions& options) : options_(options) {}

  DatapathOptions options_;
  struct ::portcullis_bpf* skel_ = nullptr;
  // An ARRAY_OF_MAPS used only as a fence: updating it makes the kernel wait
  // for running BPF programs before the syscall returns.
  UniqueFd fence_outer_;
  UniqueFd fence_inner_;
};

}  // namespace portcullis::datapath
