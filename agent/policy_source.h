// Where the agent's policy comes from: a local file (standalone mode) or the
// control service's policy stream. The agent applies what either delivers
// the same way.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "control/client.h"
#include "control/control_stub.h"
#include "portcullis/v1/control.pb.h"
#include "portcullis/v1/policy.pb.h"

namespace portcullis::agent {

// A shadow candidate from the control service (ShadowCandidate).
struct ShadowUpdate {
  uint64_t id = 0;
  v1::Policy policy;  // validated
  std::string content_hash;
};

struct PolicyUpdate {
  v1::Policy policy;     // validated
  std::string text;      // the YAML it came from, kept as last-known-good; empty:
                         // the agent writes the policy as YAML itself
  std::string origin;    // e.g. the file path
  uint64_t version = 0;  // the control service's version; 0: the agent numbers it
  // A push with --confirm-within: the deadline (0: none), and whether it
  // was confirmed. Unconfirmed, it is not kept as last-known-good.
  int64_t confirm_by_unix_nanos = 0;
  bool confirmed = false;
  bool awaits_confirmation() const { return confirm_by_unix_nanos != 0 && !confirmed; }
  // The shadow candidate to judge beside it; none when absent. Only the
  // control service sends candidates.
  std::optional<ShadowUpdate> shadow;
};

class PolicySource {
 public:
  virtual ~PolicySource() = default;
  // Delivers every later change on the source's own thread: valid policies to
  // `on_update` (which says whether it could apply them), rejected ones (with
  // why) to `on_rejected`.
  virtual absl::Status Start(std::function<absl::Status(PolicyUpdate)> on_update,
                             std::function<void(std::string why)> on_rejected) = 0;
  // Stops delivering; returns after the thread has finished.
  virtual void Stop() = 0;
};

// Watches a policy file with inotify (its directory, so that editors' and
// ConfigMaps' rename-into-place updates are seen).
std::unique_ptr<PolicySource> NewFilePolicySource(std::string path);

struct ControlSourceOptions {
  control::ClientOptions client;
  absl::Duration report_interval = absl::Seconds(10);
  // How long a stream may stay stale (its replica cannot read the store)
  // before the agent leaves for another replica; doubled after each move
  // that lands on a stale one too (every replica is, when etcd lost its
  // quorum), up to 16 times, and reset by a stream that is not stale.
  absl::Duration stale_failover = absl::Seconds(30);
};

struct ControlSourceHooks {
  std::function<v1::AgentStatus()> status;  // what the agent enforces now
  std::function<void(bool)> connected;      // the policy stream went up or down
  std::function<void(bool)> stale;          // the stream's replica went stale or recovered
  std::function<void(absl::string_view kind)> sync_error;
};

// Watches the control service's policy stream, resuming from the version the
// agent enforces, and reports the agent's status after each apply and every
// report_interval. When the stream breaks it reconnects with exponential
// backoff (0.25 s to 30 s) and jitter; enforcement is untouched meanwhile.
std::unique_ptr<PolicySource> NewControlPolicySource(ControlSourceOptions options,
                                                     ControlSourceHooks hooks);
// The same over a given stub (tests: a fake); options.client.target only
// names the service in logs.
std::unique_ptr<PolicySource> NewControlPolicySource(std::unique_ptr<control::ControlStub> stub,
                                                     ControlSourceOptions options,
                                                     ControlSourceHooks hooks);

// Reads and validates a policy file once. InvalidArgument carries the
// findings, one per line, as `validate` prints them.
absl::StatusOr<PolicyUpdate> LoadPolicyFile(const std::string& path);

}  // namespace portcullis::agent
