// Where the agent's programs are attached (docs/ARCHITECTURE.md, "Where
// packets are judged"): on each policed uplink (--interfaces), XDP (through
// pinned links that it holds, so that a removed pin never detaches XDP) and
// the flow recorder on its egress; on every pod interface matching
// --tc-interfaces, now or later, the pod-facing judge on its egress (toward
// the pod) and the flow recorder on its ingress (what the pod sends), and,
// where SYN cookies can be completed, the cookie program at the ingress of
// the pod's side, in the pod's namespace. A policed interface that is
// deleted makes the node not ready until it comes back and is attached
// again.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "agent/link_watcher.h"
#include "agent/metrics.h"
#include "agent/pin_keeper.h"
#include "agent/readiness.h"
#include "agent/state_dir.h"
#include "datapath/attach.h"
#include "datapath/datapath.h"

namespace portcullis::agent {

struct AttachOptions {
  std::vector<std::string> interfaces;     // uplinks: XDP + the recorder on egress
  std::vector<std::string> tc_interfaces;  // globs: pod interfaces
  datapath::XdpMode xdp_mode = datapath::XdpMode::kAuto;
};

class Attachments {
 public:
  // Everything passed must outlive this object.
  Attachments(AttachOptions options, const PinLayout& layout, datapath::Datapath& dp,
              const StateDir& state, AgentMetrics& metrics, Readiness& readiness)
      : options_(std::move(options)),
        layout_(layout),
        dp_(dp),
        state_(state),
        metrics_(metrics),
        readiness_(readiness) {}
  // Stops watching links; attachments stay (fail-static).
  ~Attachments() { StopWatching(); }
  Attachments(const Attachments&) = delete;
  Attachments& operator=(const Attachments&) = delete;

  // Attaches to every policed interface, then watches links for pod veths
  // and for policed interfaces that are re-created. Once.
  absl::Status AttachAll();
  void StopWatching();

  // The XDP links held, for the pin watch.
  void ForEachXdpLink(const std::function<void(const std::string&, int)>& fn);
  // "native" or "generic": the XDP mode last attached in.
  std::string xdp_mode() const;

 private:
  // (Re)attaches XDP and the TC egress recorder to a policed interface
  // unless our program is on it already.
  absl::Status EnsurePoliced(const std::string& ifname);
  // The judge toward the pod, then the recorder on what it sends, then
  // the cookie program at the pod's side.
  absl::Status AttachPodFilters(const std::string& ifname);
  absl::Status AttachPodCookie(const std::string& ifname);
  // A policed interface is gone: its index no longer marks packets as
  // judged by XDP.
  void Forget(const std::string& ifname);
  void ForgetIndex(const std::string& ifname, uint32_t ifindex);
  // Attaches (or replaces) one of our TC filters, recording a clsact qdisc
  // we created and counting a failure.
  absl::Status AttachTcFilter(int prog_fd, const std::string& ifname,
                              datapath::TcDirection direction);

  const AttachOptions options_;
  const PinLayout& layout_;
  datapath::Datapath& dp_;
  const StateDir& state_;
  AgentMetrics& metrics_;
  Readiness& readiness_;
  std::unique_ptr<LinkWatcher> pod_links_;      // --tc-interfaces
  std::unique_ptr<LinkWatcher> policed_links_;  // --interfaces, for re-creation
  mutable std::mutex mu_;
  // What XDP is attached to, by interface name; under mu_.
  struct XdpAttached {
    datapath::UniqueFd link;  // held so that a removed pin never detaches XDP
    uint32_t ifindex = 0;     // marked in xdp_ifaces; 0 once forgotten
  };
  std::map<std::string, XdpAttached> xdp_;
  std::string xdp_mode_;  // under mu_
};

}  // namespace portcullis::agent
