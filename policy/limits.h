// What admission accepts, so that the work and memory a policy costs (in
// validate, in the control service and in every agent) are bounded before
// any of it is spent. Each limit is named in the error that enforces it;
// docs/POLICY.md "Limits" lists them with the map capacities (common/abi.h).
#pragma once

#include <cstddef>
#include <cstdint>

namespace portcullis::policy {

// The policy text (a YAML file, or the YAML a push carries).
inline constexpr size_t kMaxPolicyBytes = 32u << 20;
// YAML nodes reached through aliases (*name): anchors are for reusing small
// pieces; a list of CIDRs used twice belongs in one set.
inline constexpr uint64_t kMaxAliasNodes = 10'000;
// Rules in spec.failsafe and in spec.ports, each.
inline constexpr int kMaxRules = 4096;
// Port ranges over all rules of the policy.
inline constexpr int kMaxPortRanges = 4096;
// Named sets defined (rules may use at most PC_MAX_SETS of them).
inline constexpr int kMaxSetsDefined = 1024;
// CIDRs written in the policy: every set, the blocklist and the destinations.
inline constexpr int kMaxCidrs = 1 << 21;
// Names: metadata.name and set names.
inline constexpr size_t kMaxNameBytes = 253;

}  // namespace portcullis::policy
