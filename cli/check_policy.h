// Reading a policy file for portcullisctl's commands: the findings go to
// stderr as `validate` prints them (FILE:LINE:COLUMN), and the policy is
// returned only when it has no errors.
#pragma once

#include <optional>
#include <string>

#include "portcullis/v1/policy.pb.h"

namespace portcullis::cli {

// With `report_valid`, also prints "FILE: valid (N warnings)" on stdout.
std::optional<v1::Policy> CheckPolicy(const std::string& path, bool report_valid);

}  // namespace portcullis::cli
