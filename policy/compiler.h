// A validated policy -> the exact contents of the datapath's policy maps.
// Pure: no kernel, no I/O, so every rule of the translation is unit-tested.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/abi.h"
#include "common/ip_prefix.h"
#include "portcullis/v1/policy.pb.h"

namespace portcullis::policy {

// A source (or destination) prefix and the sets that hold it. The mask
// already includes the sets of every enclosing prefix, so the longest match
// alone answers membership.
struct PrefixEntry {
  IpPrefix prefix;
  pc_set_mask mask = 0;
};

struct CompiledPolicy {
  pc_config config{};                      // slot and version are set by whoever installs it
  std::vector<PrefixEntry> src_v4_exact;   // /32
  std::vector<PrefixEntry> src_v6_exact;   // /128
  std::vector<PrefixEntry> src_v4_prefix;  // shorter, for the LPM trie
  std::vector<PrefixEntry> src_v6_prefix;
  std::vector<PrefixEntry> dst_v4;  // spec.destinations
  std::vector<PrefixEntry> dst_v6;
  std::vector<pc_port_policy> ports;             // PC_PORT_ENTRIES, index pc_l4 * 65536 + port
  std::vector<pc_rate_override> rate_overrides;  // by rate_override_id; [0] unused
  // The (proto, port range)s the rules name, in rule order.
  std::vector<pc_counted_port> counted_ports;
  // By port entry (as `ports`): 1 + the index into counted_ports of the
  // first range that names the port (the range its drops are counted and
  // labelled under), 0 for ports no rule names. ports[i].counter_row stays 0
  // here: it is a row of the counted_ports map, which the installer chooses.
  std::vector<uint16_t> counted_range;
  std::vector<std::string> set_bits;  // set name of each mask bit, by bit
};

// Set-name bit of the blocklist in every mask.
inline constexpr pc_set_mask kBlocklistMask = pc_set_mask{1} << PC_BLOCKLIST_BIT;

// Translates a policy that passed Validate(). InvalidArgument for what the
// validator rejects (in case it was skipped), ResourceExhausted when the
// policy does not fit the map capacities of abi.h; both name the cause.
absl::StatusOr<CompiledPolicy> Compile(const v1::Policy& policy);

// GCRA parameters of a rate: interval between tokens, in ns. Rate 0 = off.
pc_rate ToBucket(const v1::Rate& rate);

}  // namespace portcullis::policy
