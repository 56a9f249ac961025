// The agent's state directory, and the one place its file names are
// spelled: the last policy it applied (last-known-good: policy.yaml and
// policy.version), kept so that after a reboot it is enforced before
// anything else is reachable and an invalid policy at start falls back to
// it; the interfaces whose clsact qdisc the agent created (tc-qdiscs); and
// the policy being applied (applying), so that one that kills the agent is
// not applied again by the next.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace portcullis::agent {

// A policy whose apply was begun and never finished: the process died in it.
struct InterruptedApply {
  std::string hash;  // policy::ContentHash
  int attempts = 0;  // applies of it begun in a row without finishing
  bool operator==(const InterruptedApply&) const = default;
};

struct AppliedPolicy {
  std::string yaml;  // the policy text as applied
  uint64_t version;  // the version it was applied as
};

// An agent directory (state, pins) must be a real directory owned by this
// process's user that nobody else can write: FailedPrecondition otherwise.
absl::Status CheckPrivateDir(absl::string_view flag, const std::string& path);

class StateDir {
 public:
  // Creates the directory if needed (0700), and refuses one that is not
  // private (CheckPrivateDir). Files are written 0600, never through links.
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

  // Marks a policy as being applied, until ClearApplying(). TakeApplying()
  // at start returns (and clears) the mark the last process left: it died
  // while applying that policy.
  absl::Status MarkApplying(const InterruptedApply& mark) const;
  absl::Status ClearApplying() const;
  std::optional<InterruptedApply> TakeApplying() const;

  // Removes every file the agent keeps here.
  absl::Status RemoveAll() const;

  const std::string& path() const { return path_; }

 private:
  explicit StateDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace portcullis::agent
