// The agent's state directory: the last policy it applied (last-known-good),
// kept so that after a reboot it is enforced before anything else is
// reachable, and so that an invalid policy at start falls back to it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace portcullis::agent {

struct AppliedPolicy {
  std::string yaml;  // the policy text as applied
  uint64_t version;  // the version it was applied as
};

class StateDir {
 public:
  // Creates the directory if needed.
  static absl::StatusOr<StateDir> Open(const std::string& path);

  // The last applied policy; nullopt when there is none.
  absl::StatusOr<std::optional<AppliedPolicy>> LastApplied() const;
  // Replaces it durably (write, fsync, rename, fsync the directory): a crash
  // leaves either the old or the new one.
  absl::Status SaveApplied(const AppliedPolicy& applied) const;

  const std::string& path() const { return path_; }

 private:
  explicit StateDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace portcullis::agent
