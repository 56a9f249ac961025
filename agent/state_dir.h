// The agent's state directory, and the one place its file names are
// spelled: the last policy it applied (last-known-good: policy.yaml and
// policy.version), kept so that after a reboot it is enforced before
// anything else is reachable and an invalid policy at start falls back to
// it; and the interfaces whose clsact qdisc the agent created (tc-qdiscs).
#pragma once

#include <cstdint>
#include <optional>
#include <set>
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
  // The directory as it is, created or not (for --uninstall).
  static StateDir Existing(const std::string& path) { return StateDir(path); }

  // The last applied policy; nullopt when there is none.
  absl::StatusOr<std::optional<AppliedPolicy>> LastApplied() const;
  // Replaces it durably (write, fsync, rename, fsync the directory): a crash
  // leaves either the old or the new one.
  absl::Status SaveApplied(const AppliedPolicy& applied) const;

  // Notes that the agent created the clsact qdisc on `ifname`, so that
  // --uninstall removes that qdisc and no other.
  absl::Status RecordQdisc(const std::string& ifname) const;
  std::set<std::string> RecordedQdiscs() const;

  // Removes every file the agent keeps here.
  absl::Status RemoveAll() const;

  const std::string& path() const { return path_; }

 private:
  explicit StateDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace portcullis::agent
