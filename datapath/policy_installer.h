// Makes a compiled policy live, atomically.
//
// The policy is written into the idle slot's maps, which no packet reads;
// then active_policy[0] is pointed at the idle slot's config in one map
// write. Because active_policy is a map-in-map, the kernel waits for every
// program already running to finish before that write returns, so after
// Install() returns no packet can still be reading the slot just retired,
// and the next Install() may overwrite it. Maps are reused and only the
// entries that differ are written. Design: docs/ATOMIC_SWITCH.md.
#pragma once

#include <array>
#include <optional>

#include "absl/status/status.h"
#include "datapath/datapath.h"
#include "datapath/map_image.h"
#include "policy/compiler.h"

namespace portcullis::datapath {

class PolicyInstaller {
 public:
  // `dp` must outlive the installer. Both slots are assumed empty (as
  // Datapath::Load leaves them).
  explicit PolicyInstaller(Datapath& dp);

  // Writes `policy` (stamped with `version`) into the idle slot and switches
  // to it. On error the live policy is untouched.
  absl::Status Install(const policy::CompiledPolicy& policy, uint64_t version);

  // The slot packets are judged by; -1 before the first Install.
  int active_slot() const { return active_slot_; }

 private:
  using SlotImages = std::array<std::optional<MapImage>, kSlotMapCount>;

  Datapath& dp_;
  int active_slot_ = -1;
  // What each slot's maps hold, when known; unknown after a failed write,
  // and then read back from the kernel before the next diff.
  std::array<SlotImages, 2> written_;
};

// The map images of a compiled policy, in SlotMap order (exposed for tests).
std::array<MapImage, kSlotMapCount> BuildImages(const policy::CompiledPolicy& policy);

}  // namespace portcullis::datapath
