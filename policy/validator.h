// The meaning checks of a policy: everything PRODUCT.md calls an error, plus
// the warnings a reviewer would raise (unused sets, shadowed rules, lock-out
// risk). `portcullisctl validate`, the agent and the control service all
// judge a policy with this one function.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "policy/diagnostics.h"
#include "policy/yaml_loader.h"
#include "portcullis/v1/policy.pb.h"

namespace portcullis::policy {

inline constexpr absl::string_view kApiVersion = "portcullis/v1";
inline constexpr absl::string_view kKind = "IngressPolicy";

// Appends errors and warnings about `policy` to `diags`.
void Validate(const v1::Policy& policy, Diagnostics& diags);

// A policy file read, parsed and validated.
struct CheckedPolicyFile {
  std::optional<LoadedPolicy> loaded;   // absent when unreadable or not YAML
  std::vector<Diagnostic> diagnostics;  // in file order
  bool ok() const;                      // loaded, and no errors
  int errors() const;
  int warnings() const;
  std::string Format(absl::string_view file) const;
};

CheckedPolicyFile CheckPolicyFile(const std::string& path);
CheckedPolicyFile CheckPolicyText(absl::string_view text);

}  // namespace portcullis::policy
