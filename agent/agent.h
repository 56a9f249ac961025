// portcullis-agent: loads the datapath (reusing pinned maps), applies the
// policy, attaches XDP to the policed uplinks (with the flow recorder on
// their egress) and the pod-facing judge and recorder to matching pod
// interfaces (docs/ARCHITECTURE.md, "Where packets are judged"), then keeps the
// policy in sync with its source. On exit it detaches nothing: enforcement
// continues with the last policy (fail-static) until a new agent adopts it.
#pragma once

#include <prometheus/registry.h>

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/applier.h"
#include "agent/attachments.h"
#include "agent/confirm_window.h"
#include "agent/cookie_notrack.h"
#include "agent/drop_samples.h"
#include "agent/metrics.h"
#include "agent/pin_keeper.h"
#include "agent/policy_source.h"
#include "agent/readiness.h"
#include "agent/state_dir.h"
#include "common/http_server.h"
#include "control/client.h"
#include "datapath/attach.h"
#include "datapath/datapath.h"

namespace portcullis::agent {

struct AgentOptions {
  std::string policy_file;                        // standalone mode, or
  std::optional<control::ClientOptions> control;  // control-service mode
  absl::Duration report_interval = absl::Seconds(10);
  absl::Duration stale_failover = absl::Seconds(30);  // see ControlSourceOptions
  std::vector<std::string> interfaces;                // XDP + TC egress
  std::vector<std::string> tc_interfaces;             // globs: policed pods' host-side interfaces
  datapath::XdpMode xdp_mode = datapath::XdpMode::kAuto;
  std::string metrics_addr = "0.0.0.0:9469";
  std::string state_dir = "/var/lib/portcullis";
  std::string pin_dir = "/sys/fs/bpf/portcullis";
  // Accept a bpffs mounted by the agent itself, whose pins die with it.
  bool allow_ephemeral_pins = false;
  std::string node;
  std::map<std::string, std::string> node_labels;  // reported; canaries select by them
  uint32_t cookie_mark = kDefaultCookieMark;       // 0: no mark, no rule
};

// Composes the parts, each with one job: the pins (PinKeeper), the
// attachments (Attachments), applying (Applier), readiness (Readiness), the
// policy source, metrics and drop samples; Start() wires them in order.
class Agent {
 public:
  // Everything up to enforcing: fails with a clear error, and then leaves
  // any enforcement already in place untouched.
  static absl::StatusOr<std::unique_ptr<Agent>> Start(const AgentOptions& options);
  ~Agent();

  // Stops everything that changes state (policy source, link watcher, pin
  // watch, drop sample logger) and waits for an apply in progress. Kernel
  // objects stay: enforcement continues. The HTTP server is left to the
  // process exit (civetweb takes ~2 s to stop, and SIGTERM must finish well
  // within that).
  void Shutdown();

  // What this agent enforces, for the control service.
  v1::AgentStatus StatusSnapshot() const;

 private:
  explicit Agent(AgentOptions options) : options_(std::move(options)), layout_{options_.pin_dir} {}
  // Loads the datapath on the pinned maps (or fresh ones, replacing pins of
  // an incompatible build once attached).
  absl::Status LoadDatapath();
  // The policy source's update: apply, and attach after the first one.
  absl::Status OnUpdate(const PolicyUpdate& update);
  // Loads, replaces or discards the shadow candidate as `update` says.
  void SyncShadow(const PolicyUpdate& update);
  // A version unconfirmed by its deadline: back to `previous`.
  absl::Status Revert(const AppliedPolicy& previous);
  // Attaches the programs and starts the pin watch; once, after the first
  // policy is applied.
  absl::Status Attach();

  const AgentOptions options_;
  const PinLayout layout_;
  std::optional<StateDir> state_;
  std::unique_ptr<datapath::Datapath> dp_;
  bool repin_ = false;  // the pinned maps were incompatible: pin ours once attached
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<AgentMetrics> metrics_;
  std::unique_ptr<Readiness> readiness_;
  std::shared_ptr<DatapathCollector> collector_;
  std::unique_ptr<Applier> applier_;
  std::unique_ptr<ConfirmWindow> confirm_;  // after applier_: its revert applies
  std::unique_ptr<Attachments> attachments_;
  std::unique_ptr<PinKeeper> pins_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<DropSampleLogger> samples_;
  std::unique_ptr<PolicySource> source_;
  std::atomic<bool> attached_{false};
};

// Detaches every program this agent installs and removes its pins and state
// files; leaves everything else alone.
absl::Status Uninstall(const std::string& pin_dir, const std::string& state_dir);

}  // namespace portcullis::agent
