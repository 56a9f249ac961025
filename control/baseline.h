// The control service's safety baseline: checks beyond `validate` that
// refuse a policy that would expose or lock out the cluster's nodes.
//  - A protected port (kubelet, etcd, API server, ingress admin) opened to
//    every source: `from: any`, a set holding 0.0.0.0/0 or ::/0, or no rule
//    at all under `defaultAction: allow`.
//  - `defaultAction: deny` without a failsafe rule covering every
//    node-management port (ssh, kubelet).
//  - A push that drops failsafe rules the live version has, unless the
//    pusher says so (--allow-failsafe-change).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "policy/diagnostics.h"
#include "portcullis/v1/policy.pb.h"

namespace portcullis::control {

// Inclusive port ranges, as "10254,10250,2379-2380,6443" spells them.
class PortList {
 public:
  static absl::StatusOr<PortList> Parse(absl::string_view text);
  bool Overlaps(uint32_t first, uint32_t last) const;
  const std::vector<std::pair<uint32_t, uint32_t>>& ranges() const { return ranges_; }
  std::string ToString() const;

 private:
  std::vector<std::pair<uint32_t, uint32_t>> ranges_;
};

struct Baseline {
  PortList protected_ports;   // --protected-ports
  PortList management_ports;  // --management-ports
};

inline constexpr absl::string_view kDefaultProtectedPorts = "10254,10250,2379-2380,6443";
inline constexpr absl::string_view kDefaultManagementPorts = "22,10250";

// Appends one error per violation, each naming the rule (by path and text)
// and why. `live` is the live version's policy, or null.
void CheckBaseline(const v1::Policy& candidate, const v1::Policy* live, bool allow_failsafe_change,
                   const Baseline& baseline, policy::Diagnostics& diags);

}  // namespace portcullis::control
