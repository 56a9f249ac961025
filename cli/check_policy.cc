#include "cli/check_policy.h"

#include <iostream>

#include "policy/validator.h"

namespace portcullis::cli {

std::optional<v1::Policy> CheckPolicy(const std::string& path, bool report_valid) {
  policy::CheckedPolicyFile checked = policy::CheckPolicyFile(path);
  std::cerr << checked.Format(path);
  if (!checked.ok()) {
    std::cerr << path << ": invalid (" << checked.errors() << " error"
              << (checked.errors() == 1 ? "" : "s") << ")\n";
    return std::nullopt;
  }
  if (report_valid) {
    std::cout << path << ": valid";
    if (checked.warnings()) {
      std::cout << " (" << checked.warnings() << " warning" << (checked.warnings() == 1 ? "" : "s")
                << ")";
    }
    std::cout << "\n";
  }
  return checked.loaded->policy;
}

}  // namespace portcullis::cli
