// portcullis-agent: loads the datapath (reusing pinned maps), applies the
// policy, attaches XDP to the policed interfaces (with the TC egress flow
// recorder beside it) and TC ingress to matching pod veths, then keeps the
// policy in sync with its source. On exit it detaches nothing: enforcement
// continues with the last policy (fail-static) until a new agent adopts it.
#pragma once

#include <prometheus/registry.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/drop_samples.h"
#include "agent/link_watcher.h"
#include "agent/metrics.h"
#include "agent/policy_source.h"
#include "agent/state_dir.h"
#include "common/http_server.h"
#include "control/client.h"
#include "datapath/attach.h"
#include "datapath/datapath.h"
#include "datapath/policy_installer.h"

namespace portcullis::agent {

struct AgentOptions {
  std::string policy_file;                        // standalone mode, or
  std::optional<control::ClientOptions> control;  // control-service mode
  absl::Duration report_interval = absl::Seconds(10);
  std::vector<std::string> interfaces;     // XDP + TC egress
  std::vector<std::string> tc_interfaces;  // globs: TC ingress
  datapath::XdpMode xdp_mode = datapath::XdpMode::kAuto;
  std::string metrics_addr = "0.0.0.0:9469";
  std::string state_dir = "/var/lib/portcullis";
  std::string pin_dir = "/sys/fs/bpf/portcullis";
  std::string node;
};

class Agent {
 public:
  // Everything up to enforcing: fails with a clear error, and then leaves
  // any enforcement already in place untouched.
  static absl::StatusOr<std::unique_ptr<Agent>> Start(const AgentOptions& options);
  ~Agent();

  // Stops everything that changes state (policy source, link watcher, drop
  // sample logger) and waits for an apply in progress. Kernel objects stay:
  // enforcement continues. The HTTP server is left to the process exit
  // (civetweb takes ~2 s to stop, and SIGTERM must finish well within that).
  void Shutdown();

  // Validated policy -> compiled -> installed -> saved as last-known-good.
  absl::Status Apply(const PolicyUpdate& update);

  // What this agent enforces, for the control service.
  v1::AgentStatus StatusSnapshot() const;

 private:
  explicit Agent(AgentOptions options) : options_(std::move(options)) {}
  // Attaches the programs to the policed interfaces and starts watching
  // links; once, after the first policy is applied.
  absl::Status Attach();
  void SetLastError(std::string error);
  // Every second: are the pins (maps and XDP links) still there? If bpffs
  // was unmounted or the pin dir deleted, report not ready and pin them again.
  void WatchPins();
  bool PinsPresent();
  // Unpins maps of names this build does not use (left by an older build).
  absl::Status RemoveStalePins();
  absl::Status RestorePins();
  // Attaches (or replaces) one of our TC filters, recording a clsact qdisc
  // we created and counting a failure.
  absl::Status AttachTcFilter(int prog_fd, const std::string& ifname,
                              datapath::TcDirection direction);
  // (Re)attaches XDP and the TC egress recorder to a policed interface
  // unless our program is on it already.
  absl::Status EnsurePoliced(const std::string& ifname);
  // Not ready while a policed interface is missing.
  void SetInterfacePresent(const std::string& ifname, bool present);
  // ready_ = start-up finished and no policed interface missing.
  void UpdateReady();

  AgentOptions options_;
  std::optional<StateDir> state_;
  std::unique_ptr<datapath::Datapath> dp_;
  std::unique_ptr<datapath::PolicyInstaller> installer_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<AgentMetrics> metrics_;
  std::shared_ptr<DatapathCollector> collector_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<PolicySource> source_;
  std::unique_ptr<LinkWatcher> links_;          // pod veths (--tc-interfaces)
  std::unique_ptr<LinkWatcher> policed_links_;  // --interfaces, for re-creation
  std::unique_ptr<DropSampleLogger> samples_;
  std::atomic<bool> ready_{false};  // read by /readyz
  std::atomic<bool> started_{false};
  std::atomic<bool> attached_{false};
  bool repin_ = false;  // the pinned maps were incompatible: pin ours once attached
  std::mutex missing_mu_;
  std::set<std::string> missing_;  // policed interfaces that are gone
  std::mutex links_mu_;
  // By interface. Held so that a removed pin never detaches XDP.
  std::map<std::string, datapath::UniqueFd> xdp_links_;
  size_t map_pins_ = 0;  // entries of PIN_DIR/maps when complete
  std::atomic<bool> pins_ok_{true};
  std::mutex pin_watch_mu_;
  std::condition_variable pin_watch_cv_;
  bool stop_pin_watch_ = false;
  std::thread pin_watch_;
  std::mutex apply_mu_;
  std::string applied_text_;      // under apply_mu_
  mutable std::mutex status_mu_;  // what StatusSnapshot reads
  uint64_t version_ = 0;
  std::string applied_hash_;
  std::string last_error_;
  std::string xdp_mode_;
};

// Detaches every program this agent installs and removes its pins and state
// files; leaves everything else alone.
absl::Status Uninstall(const std::string& pin_dir, const std::string& state_dir);

// Makes sure `pin_dir` is on a bpffs, mounting /sys/fs/bpf if needed.
absl::Status PreparePinDir(const std::string& pin_dir);

}  // namespace portcullis::agent
