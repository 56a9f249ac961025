// Makes a compiled policy live, atomically.
//
// Every policy map holds two slots. The installer writes the new policy into
// the slot packets do not select, then flips active_slot in one 4-byte write,
// then waits for an RCU grace period, after which no packet can still be
// reading the retired slot and the next install may overwrite it. Packets
// read active_slot once, so each is judged wholly by one policy. Maps are
// reused, and only the entries that differ are written.
// Design: docs/ATOMIC_SWITCH.md.
#pragma once

#include <array>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "datapath/datapath.h"
#include "datapath/map_image.h"
#include "policy/compiler.h"

namespace portcullis::datapath {

class PolicyInstaller {
 public:
  // `dp` must outlive the installer.
  explicit PolicyInstaller(Datapath& dp) : dp_(dp) {}

  // Writes `policy` (stamped with `version`) into the idle slot and switches
  // to it. When it returns OK, no packet is judged by the previous policy any
  // more. On error the live policy is untouched.
  // A shadow candidate in the idle slot is discarded first.
  absl::Status Install(const policy::CompiledPolicy& policy, uint64_t version);

  // Writes `policy` (stamped with `stamp`) into the idle slot as a shadow
  // candidate: every packet is judged by it too, without acting on it, and
  // what it would change is counted (ReadShadowCounts), from zero. Replaces
  // a candidate already loaded; the live policy is untouched.
  absl::Status InstallShadow(const policy::CompiledPolicy& policy, uint64_t stamp);
  // Makes the shadow candidate live, stamped with `version`, in one switch
  // (nothing is rewritten). FailedPrecondition when none is loaded.
  absl::Status PromoteShadow(uint64_t version);
  // Stops judging by the shadow candidate (none loaded: nothing to do).
  absl::Status DiscardShadow();

 private:
  using SlotImages = std::array<std::optional<MapImage>, kSlotMapCount>;

  Datapath& dp_;
  bool fenced_ = false;  // a grace period has passed since this process began writing
  // What each slot holds, as far as this installer knows: unknown at first
  // and after a failed write, and then read back from the kernel.
  std::array<SlotImages, PC_POLICY_SLOTS> written_;
  // The counted_ports rows as last read or written (read at first use).
  std::optional<std::vector<pc_counted_port>> counted_;

  // Checks the policy's table sizes, waits out an earlier writer once, and
  // stops judging by a shadow candidate. Returns the live slot.
  absl::StatusOr<uint32_t> BeginWrite(const policy::CompiledPolicy& policy);
  // Writes every slot map and then the config of `slot` (not live).
  absl::Status WriteSlot(const policy::CompiledPolicy& policy, uint64_t version, uint32_t slot);
  // Writes active_slot[0] and waits for an RCU grace period.
  absl::Status SetActive(uint32_t word);

  // Registers the policy's port ranges in counted_ports, before the slot
  // that refers to them is written: reuses a range's row, else takes a free
  // one, else reclaims (zeroes) one that neither the live slot nor this
  // policy uses. Returns 1 + the row of each range, 0 where none was left
  // (those ranges count in the hash, by port number).
  absl::StatusOr<std::vector<uint16_t>> RegisterCountedPorts(const policy::CompiledPolicy& policy,
                                                             uint32_t live_slot);
};

// active_slot[0]: the live slot, and PC_ACTIVE_SHADOW when a shadow
// candidate is judged beside it.
absl::StatusOr<uint32_t> ReadActiveWord(const Datapath& dp);
// The slot packets are judged by now, and that slot's config.
absl::StatusOr<std::pair<uint32_t, pc_config>> ReadActiveSlot(const Datapath& dp);

// OK when `slot` holds exactly `policy`: every entry of every slot map, and
// the config apart from its version. Otherwise names the first difference.
// For fault tests: a slot must never hold a mix of two policies.
absl::Status VerifySlot(const Datapath& dp, uint32_t slot, const policy::CompiledPolicy& policy);

// The map images of a compiled policy in `slot`, in SlotMap order, with
// each port range's counter row taken from `rows` (1 + row, by the policy's
// counted_ports index; see RegisterCountedPorts).
// Key and value sizes are those of `dp`'s maps.
std::array<MapImage, kSlotMapCount> BuildImages(const Datapath& dp,
                                                const policy::CompiledPolicy& policy, uint32_t slot,
                                                const std::vector<uint16_t>& rows);

}  // namespace portcullis::datapath
