#include "agent/attachments.h"

#include <net/if.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/pod_netns.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace portcullis::agent {

absl::Status Attachments::AttachAll() {
  for (const std::string& ifname : options_.interfaces) RETURN_IF_ERROR(EnsurePoliced(ifname));
  if (!options_.tc_interfaces.empty()) {
    ASSIGN_OR_RETURN(pod_links_,
                     LinkWatcher::Start(options_.tc_interfaces, [this](const std::string& ifname) {
                       AttachPodFilters(ifname).IgnoreError();  // counted and logged; retried
                                                                // on the next link change
                     }));
  }
  // A policed interface that is deleted takes our XDP link with it; when it
  // comes back, attach again. Until then the node is not ready.
  ASSIGN_OR_RETURN(policed_links_,
                   LinkWatcher::Start(
                       options_.interfaces,
                       [this](const std::string& ifname) {
                         if (EnsurePoliced(ifname).ok()) {
                           readiness_.SetInterfacePresent(ifname, true);
                         }
                       },
                       [this](const std::string& ifname) {
                         LogError("a policed interface disappeared", {{"iface", ifname}});
                         Forget(ifname);
                         readiness_.SetInterfacePresent(ifname, false);
                       }));
  return absl::OkStatus();
}

absl::Status Attachments::AttachPodFilters(const std::string& ifname) {
  // The judge first, toward the pod; then the recorder on what the pod
  // sends, which replaces (same handle) an older build's judge there.
  RETURN_IF_ERROR(AttachTcFilter(dp_.tc_pod_prog_fd(), ifname, datapath::TcDirection::kEgress));
  RETURN_IF_ERROR(AttachTcFilter(dp_.tc_record_prog_fd(), ifname, datapath::TcDirection::kIngress));
  if (dp_.tc_cookie_pod_prog_fd() < 0) return absl::OkStatus();
  return AttachPodCookie(ifname);
}

absl::Status Attachments::AttachPodCookie(const std::string& ifname) {
  absl::StatusOr<bool> created = false;
  absl::StatusOr<std::optional<PodSide>> pod = FindPodSide(ifname);
  absl::Status s = pod.status();
  if (pod.ok() && !pod->has_value()) return absl::OkStatus();  // its listeners are the node's
  if (pod.ok()) {
    const PodSide& side = **pod;
    s = InNetns(side.netns.get(), [&] {
      created = datapath::AttachTc(dp_.tc_cookie_pod_prog_fd(), side.ifindex,
                                   datapath::TcDirection::kIngress, ifname + " (pod side)");
      return created.status();
    });
  }
  if (!s.ok()) {
    // XDP answers this pod's SYNs with cookies that nothing completes here.
    metrics_.sync_errors.Add({{"kind", "attach"}}).Increment();
    LogError(
        "cannot attach the SYN cookie program at the pod's side: with "
        "rateLimits.syn.cookies on, this pod's connections made through a cookie are reset",
        {{"iface", ifname}, {"error", std::string(s.message())}});
    return s;
  }
  if (*created) {
    if (absl::Status r = state_.RecordQdisc(PodSideQdisc(ifname)); !r.ok()) {
      LogWarning("cannot record a clsact qdisc we created",
                 {{"iface", ifname}, {"error", std::string(r.message())}});
    }
  }
  LogInfo("attached TC ingress at the pod's side", {{"iface", ifname}});
  return absl::OkStatus();
}

void Attachments::Forget(const std::string& ifname) {
  uint32_t ifindex = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = xdp_.find(ifname);
    if (it == xdp_.end()) return;
    ifindex = std::exchange(it->second.ifindex, 0);
  }
  if (ifindex != 0) ForgetIndex(ifname, ifindex);
}

void Attachments::ForgetIndex(const std::string& ifname, uint32_t ifindex) {
  // The index may be reused by another interface (a pod's): what arrives
  // there must be judged.
  if (absl::Status s = dp_.SetXdpInterface(ifindex, false); !s.ok()) {
    LogError("cannot forget a removed interface's index",
             {{"iface", ifname}, {"error", std::string(s.message())}});
  }
}

void Attachments::StopWatching() {
  pod_links_.reset();
  policed_links_.reset();
}

void Attachments::ForEachXdpLink(const std::function<void(const std::string&, int)>& fn) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [ifname, attached] : xdp_) {
    if (attached.link.valid()) fn(ifname, attached.link.get());
  }
}

std::string Attachments::xdp_mode() const {
  std::lock_guard<std::mutex> lock(mu_);
  return xdp_mode_;
}

absl::Status Attachments::EnsurePoliced(const std::string& ifname) {
  const unsigned ifindex = if_nametoindex(ifname.c_str());
  if (ifindex == 0) return absl::NotFoundError(absl::StrCat("no such interface: ", ifname));
  const std::string pin = layout_.xdp_link(ifname);
  const datapath::XdpOn on = datapath::QueryXdp(static_cast<int>(ifindex), dp_.xdp_prog_fd());
  const bool pinned = access(pin.c_str(), F_OK) == 0;
  if (on == datapath::XdpOn::kOurs && pinned) {
    return absl::OkStatus();  // our program is there: a link change (up, down, rename)
  }
  if (on == datapath::XdpOn::kNone && pinned) {
    // The interface was re-created: the pinned link points at the old one.
    RETURN_IF_ERROR(datapath::DetachXdp(pin));
  }
  auto xdp = datapath::AttachXdp(dp_.xdp_prog_fd(), ifname, options_.xdp_mode, pin);
  if (!xdp.ok()) {
    metrics_.sync_errors.Add({{"kind", "attach"}}).Increment();
    LogError("cannot attach XDP",
             {{"iface", ifname}, {"error", std::string(xdp.status().message())}});
    return xdp.status();
  }
  metrics_.xdp_attached.Add({{"iface", ifname}, {"mode", xdp->mode}}).Set(1);
  uint32_t previous = 0;  // the index the interface had when last attached
  {
    std::lock_guard<std::mutex> lock(mu_);
    XdpAttached& attached = xdp_[ifname];
    attached.link = std::move(xdp->link);
    previous = attached.ifindex;
    xdp_mode_ = xdp->mode;
  }
  // After XDP is on: until then its packets must still be judged toward
  // the pods (judged twice for a moment is safe; not at all is not).
  if (absl::Status s = dp_.SetXdpInterface(ifindex, true); !s.ok()) {
    metrics_.sync_errors.Add({{"kind", "attach"}}).Increment();
    return s;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    xdp_[ifname].ifindex = ifindex;
  }
  // Re-created without its removal seen: the old index marks nothing now.
  if (previous != 0 && previous != ifindex) ForgetIndex(ifname, previous);
  RETURN_IF_ERROR(AttachTcFilter(dp_.tc_record_prog_fd(), ifname, datapath::TcDirection::kEgress));
  // Where XDP answers SYNs with cookies, their ACKs come back in here.
  if (dp_.tc_cookie_prog_fd() >= 0) {
    RETURN_IF_ERROR(
        AttachTcFilter(dp_.tc_cookie_prog_fd(), ifname, datapath::TcDirection::kIngress));
  }
  LogInfo(xdp->replaced ? "adopted XDP attachment, program replaced" : "attached XDP",
          {{"iface", ifname}, {"mode", xdp->mode}});
  return absl::OkStatus();
}

absl::Status Attachments::AttachTcFilter(int prog_fd, const std::string& ifname,
                                         datapath::TcDirection direction) {
  const char* what = direction == datapath::TcDirection::kIngress ? "TC ingress" : "TC egress";
  auto created = datapath::AttachTc(prog_fd, ifname, direction);
  if (!created.ok()) {
    metrics_.sync_errors.Add({{"kind", "attach"}}).Increment();
    LogError(absl::StrCat("cannot attach ", what),
             {{"iface", ifname}, {"error", std::string(created.status().message())}});
    return created.status();
  }
  if (*created) {
    if (absl::Status s = state_.RecordQdisc(ifname); !s.ok()) {
      // --uninstall will then leave this qdisc (it is empty once our filter
      // is gone): say so now.
      LogWarning("cannot record a clsact qdisc we created",
                 {{"iface", ifname}, {"error", std::string(s.message())}});
    }
  }
  LogInfo(absl::StrCat("attached ", what), {{"iface", ifname}});
  return absl::OkStatus();
}

}  // namespace portcullis::agent
