// Where the agent's policy comes from. The file source is the standalone
// mode; the control service will be a second implementation beside it.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "portcullis/v1/policy.pb.h"

namespace portcullis::agent {

struct PolicyUpdate {
  v1::Policy policy;  // validated
  std::string text;   // the YAML it came from, kept as last-known-good
  std::string origin;  // e.g. the file path
};

class PolicySource {
 public:
  virtual ~PolicySource() = default;
  // Delivers every later change on the source's own thread: valid policies to
  // `on_update`, rejected ones (with why) to `on_rejected`.
  virtual absl::Status Start(std::function<void(PolicyUpdate)> on_update,
                             std::function<void(std::string why)> on_rejected) = 0;
  // Stops delivering; returns after the thread has finished.
  virtual void Stop() = 0;
};

// Watches a policy file with inotify (its directory, so that editors' and
// ConfigMaps' rename-into-place updates are seen).
std::unique_ptr<PolicySource> NewFilePolicySource(std::string path);

// Reads and validates a policy file once. InvalidArgument carries the
// findings, one per line, as `validate` prints them.
absl::StatusOr<PolicyUpdate> LoadPolicyFile(const std::string& path);

}  // namespace portcullis::agent
