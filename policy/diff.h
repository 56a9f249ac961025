// What changes between two policies, in the terms a reviewer reads: the
// CIDRs added to and removed from each set, the blocklist and the
// destinations; the rules added and removed; the settings changed.
#pragma once

#include <string>
#include <vector>

#include "portcullis/v1/policy.pb.h"

namespace portcullis::policy {

struct Change {
  enum class Op { kAdded, kRemoved, kChanged };
  Op op;
  std::string section;  // "sets.office", "blocklist", "ports", "defaultAction", ...
  std::string text;     // a CIDR, a rule (RuleText), or "deny -> allow"
};

// Changes from `from` to `to`, section by section in policy order; within a
// section, removals before additions. Empty when the policies are equal.
std::vector<Change> DiffPolicies(const v1::Policy& from, const v1::Policy& to);

// "+ sets.office 192.0.2.0/24", with ANSI colours when `color`.
std::string FormatChanges(const std::vector<Change>& changes, bool color);

}  // namespace portcullis::policy
