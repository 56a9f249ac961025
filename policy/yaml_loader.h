// YAML policy documents -> the policy proto, with the source position of
// every field. Only the shape is checked here (syntax, unknown or duplicate
// keys, wrong types, unknown enum words); meaning is the validator's job.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "policy/diagnostics.h"
#include "portcullis/v1/policy.pb.h"

namespace portcullis::policy {

struct LoadedPolicy {
  v1::Policy policy;
  SourceMap locations;  // field path -> where it was written
};

// Parses one YAML document. Shape errors go to `diags`; the result holds
// whatever could be read, or nothing when the text is not YAML at all.
std::optional<LoadedPolicy> ParsePolicyYaml(absl::string_view text, Diagnostics& diags);

// Reads a whole regular file of at most kMaxPolicyBytes (policy/limits.h);
// a FIFO, a device or a larger file is InvalidArgument, never a hang or an
// unbounded read. NotFound / PermissionDenied name the path. extra_flags
// are added to open(2)'s (O_NOFOLLOW for files in the agent's state dir).
absl::StatusOr<std::string> ReadTextFile(const std::string& path, int extra_flags = 0);

}  // namespace portcullis::policy
