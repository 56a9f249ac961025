#include "agent/agent.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/magic.h>
#include <net/if.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/abi.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "datapath/counters.h"
#include "policy/compiler.h"
#include "policy/text.h"
#include "policy/validator.h"

namespace portcullis::agent {
namespace {

namespace fs = std::filesystem;

constexpr absl::string_view kPrivileges =
    "the agent needs root, or CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON and CAP_SYS_ADMIN (to mount "
    "bpffs)";

std::string MapsDir(const std::string& pin_dir) { return pin_dir + "/maps"; }
std::string LinksDir(const std::string& pin_dir) { return pin_dir + "/links"; }
std::string XdpLinkPin(const std::string& pin_dir, const std::string& ifname) {
  return absl::StrCat(LinksDir(pin_dir), "/xdp_", ifname);
}
// Interfaces whose clsact qdisc this agent created (and so may remove).
std::string QdiscRecord(const std::string& state_dir) { return state_dir + "/tc-qdiscs"; }

bool IsBpffs(const std::string& path) {
  struct statfs st;
  return statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

void RecordQdisc(const std::string& state_dir, const std::string& ifname) {
  std::ofstream(QdiscRecord(state_dir), std::ios::app) << ifname << "\n";
}

}  // namespace

absl::Status PreparePinDir(const std::string& pin_dir) {
  if (absl::StartsWith(pin_dir, "/sys/fs/bpf") && !IsBpffs("/sys/fs/bpf")) {
    fs::create_directories("/sys/fs/bpf");
    if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "bpffs is not mounted at /sys/fs/bpf and cannot be mounted: ", std::strerror(errno),
          " (mount it on the host, or pass the bpffs hostPath)"));
    }
    LogInfo("mounted bpffs", {{"path", std::string("/sys/fs/bpf")}});
  }
  std::error_code ec;
  fs::create_directories(MapsDir(pin_dir), ec);
  if (!ec) fs::create_directories(LinksDir(pin_dir), ec);
  if (ec == std::errc::permission_denied || ec == std::errc::operation_not_permitted) {
    return absl::PermissionDeniedError(
        absl::StrCat("--pin-dir ", pin_dir, ": ", ec.message(), ": ", kPrivileges));
  }
  if (ec || !IsBpffs(MapsDir(pin_dir))) {
    return absl::FailedPreconditionError(
        absl::StrCat("--pin-dir ", pin_dir, " is not on a bpffs mount",
                     ec ? absl::StrCat(" (", ec.message(), ")") : ""));
  }
  return absl::OkStatus();
}

// The last-known-good policy, checked.
absl::StatusOr<PolicyUpdate> LastKnownGood(const AppliedPolicy& lkg, const std::string& state_dir) {
  policy::CheckedPolicyFile checked = policy::CheckPolicyText(lkg.yaml);
  if (!checked.ok()) {
    return absl::DataLossError(absl::StrCat("the last-known-good policy in ", state_dir,
                                            " is not valid:\n", checked.Format("policy.yaml")));
  }
  return PolicyUpdate{checked.loaded->policy, lkg.yaml,
                      absl::StrCat(state_dir, " (last-known-good)"), lkg.version};
}

absl::StatusOr<std::unique_ptr<Agent>> Agent::Start(const AgentOptions& options) {
  std::unique_ptr<Agent> a(new Agent(options));
  for (const std::string& ifname : options.interfaces) {
    if (if_nametoindex(ifname.c_str()) == 0) {
      return absl::NotFoundError(absl::StrCat("--interfaces: no such interface: ", ifname));
    }
  }
  ASSIGN_OR_RETURN(StateDir state, StateDir::Open(options.state_dir));
  a->state_ = std::move(state);

  ASSIGN_OR_RETURN(std::optional<AppliedPolicy> lkg, a->state_->LastApplied());
  if (lkg) {
    a->version_ = lkg->version;
    a->applied_text_ = lkg->yaml;
  }

  // The policy to enforce first. From a file: the file, or else the
  // last-known-good one. From the control service: the last-known-good one
  // (the service may be unreachable); without it, programs wait for the
  // first version.
  std::optional<PolicyUpdate> initial;
  if (!options.control) {
    auto from_file = LoadPolicyFile(options.policy_file);
    if (from_file.ok()) {
      initial = *std::move(from_file);
    } else {
      if (!lkg) {
        return absl::InvalidArgumentError(
            absl::StrCat("the policy file is not valid and there is no last-known-good policy in ",
                         options.state_dir, ":\n", from_file.status().message()));
      }
      LogError("the policy file is not valid; enforcing the last-known-good policy instead",
               {{"file", options.policy_file},
                {"error", std::string(from_file.status().message())},
                {"version", lkg->version}});
      ASSIGN_OR_RETURN(initial, LastKnownGood(*lkg, options.state_dir));
    }
  } else if (lkg) {
    ASSIGN_OR_RETURN(initial, LastKnownGood(*lkg, options.state_dir));
    LogInfo("enforcing the last-known-good policy until the control service answers",
            {{"version", lkg->version}});
  } else {
    LogInfo(
        "no last-known-good policy: programs are attached once the control service sends "
        "the first version");
  }

  RETURN_IF_ERROR(PreparePinDir(options.pin_dir));
  auto dp = datapath::Datapath::Load({.pin_dir = MapsDir(options.pin_dir)});
  if (absl::IsFailedPrecondition(dp.status())) {
    // Pins from an incompatible build: start on fresh maps, and swap the
    // programs under the live attachments (link update, tc replace), so that
    // enforcement never stops; then pin the new maps.
    LogWarning("pinned maps are from an incompatible build; replacing them",
               {{"detail", std::string(dp.status().message())}});
    dp = datapath::Datapath::Load({});
    a->repin_ = true;
  }
  if (!dp.ok()) {
    if (absl::IsPermissionDenied(dp.status())) {
      return absl::PermissionDeniedError(
          absl::StrCat(dp.status().message(), ": no permission for BPF: ", kPrivileges));
    }
    return dp.status();
  }
  a->dp_ = *std::move(dp);
  if (!a->repin_) RETURN_IF_ERROR(a->RemoveStalePins());
  a->installer_ = std::make_unique<datapath::PolicyInstaller>(*a->dp_);

  a->registry_ = std::make_shared<prometheus::Registry>();
  a->metrics_ = std::make_unique<AgentMetrics>(*a->registry_);
  a->collector_ = std::make_shared<DatapathCollector>(*a->dp_);
  if (!options.metrics_addr.empty()) {
    ASSIGN_OR_RETURN(a->http_, HttpServer::Start(options.metrics_addr,
                                                 {a->registry_, a->collector_}, &a->ready_));
  }

  auto samples =
      DropSampleLogger::Start(a->dp_->map_fd(datapath::Map::kDropSamples), /*per_second=*/20,
                              /*burst=*/50, &a->metrics_->samples_suppressed);
  if (samples.ok()) {
    a->samples_ = *std::move(samples);
  } else {
    LogWarning("drop samples will not be logged",
               {{"error", std::string(samples.status().message())}});
  }

  // Policy before programs: a new program never runs without one.
  if (initial) {
    RETURN_IF_ERROR(a->Apply(*initial));
    RETURN_IF_ERROR(a->Attach());
  }

  auto on_update = [agent = a.get()](PolicyUpdate update) {
    absl::Status s = agent->Apply(update);
    if (s.ok() && !agent->attached_) s = agent->Attach();
    return s;
  };
  if (options.control) {
    ControlSourceHooks hooks;
    hooks.status = [agent = a.get()] { return agent->StatusSnapshot(); };
    hooks.connected = [agent = a.get()](bool up) {
      agent->metrics_->control_connected.Set(up ? 1 : 0);
    };
    hooks.sync_error = [agent = a.get()](absl::string_view kind) {
      agent->metrics_->sync_errors.Add({{"kind", std::string(kind)}}).Increment();
    };
    a->source_ = NewControlPolicySource(
        {.client = *options.control, .report_interval = options.report_interval}, std::move(hooks));
  } else {
    a->source_ = NewFilePolicySource(options.policy_file);
  }
  RETURN_IF_ERROR(a->source_->Start(on_update, [agent = a.get()](std::string why) {
    agent->metrics_->sync_errors.Add({{"kind", "invalid_policy"}}).Increment();
    agent->SetLastError(why);
    LogError("policy rejected; the previous policy stays", {{"error", why}});
  }));
  a->started_ = true;
  a->UpdateReady();
  LogInfo(a->attached_ ? "ready" : "started; waiting for the first policy",
          {{"node", options.node}, {"version", a->version_}});
  return a;
}

absl::Status Agent::Attach() {
  for (const std::string& ifname : options_.interfaces) {
    RETURN_IF_ERROR(EnsurePoliced(ifname));
  }
  if (repin_) {
    // New programs run everywhere now; the old maps go with the old pins.
    // TC ingress on pod veths is replaced as the link watcher re-attaches.
    RETURN_IF_ERROR(dp_->PinMaps(MapsDir(options_.pin_dir)));
    RETURN_IF_ERROR(RemoveStalePins());
    LogInfo("replaced the incompatible pinned maps", {{"pin_dir", options_.pin_dir}});
    repin_ = false;
  }
  if (!options_.tc_interfaces.empty()) {
    ASSIGN_OR_RETURN(
        links_, LinkWatcher::Start(options_.tc_interfaces, [this](const std::string& ifname) {
          AttachTcFilter(dp_->tc_ingress_prog_fd(), ifname, datapath::TcDirection::kIngress)
              .IgnoreError();
        }));
  }
  // A policed interface that is deleted takes our XDP link with it; when it
  // comes back, attach again. Until then the node is not ready.
  ASSIGN_OR_RETURN(policed_links_,
                   LinkWatcher::Start(
                       options_.interfaces,
                       [this](const std::string& ifname) {
                         if (EnsurePoliced(ifname).ok()) SetInterfacePresent(ifname, true);
                       },
                       [this](const std::string& ifname) {
                         LogError("a policed interface disappeared", {{"iface", ifname}});
                         SetInterfacePresent(ifname, false);
                       }));
  map_pins_ = static_cast<size_t>(
      std::distance(fs::directory_iterator(MapsDir(options_.pin_dir)), fs::directory_iterator()));
  attached_ = true;
  UpdateReady();
  pin_watch_ = std::thread([this] { WatchPins(); });
  return absl::OkStatus();
}

bool Agent::PinsPresent() {
  const std::string maps = MapsDir(options_.pin_dir);
  std::error_code ec;
  if (!IsBpffs(maps)) return false;
  size_t n = 0;
  for (auto it = fs::directory_iterator(maps, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    ++n;
  }
  if (ec || n < map_pins_) return false;
  std::lock_guard<std::mutex> lock(links_mu_);
  for (const auto& [ifname, link] : xdp_links_) {
    if (link.valid() && access(XdpLinkPin(options_.pin_dir, ifname).c_str(), F_OK) != 0) {
      return false;
    }
  }
  return true;
}

absl::Status Agent::RemoveStalePins() {
  ASSIGN_OR_RETURN(const std::vector<std::string> removed,
                   dp_->RemoveStalePins(MapsDir(options_.pin_dir)));
  if (!removed.empty()) {
    LogInfo("unpinned maps an older build left", {{"maps", absl::StrJoin(removed, ",")}});
  }
  return absl::OkStatus();
}

absl::Status Agent::RestorePins() {
  RETURN_IF_ERROR(PreparePinDir(options_.pin_dir));
  RETURN_IF_ERROR(dp_->PinMaps(MapsDir(options_.pin_dir)));
  std::lock_guard<std::mutex> lock(links_mu_);
  for (const auto& [ifname, link] : xdp_links_) {
    if (!link.valid()) continue;
    const std::string pin = XdpLinkPin(options_.pin_dir, ifname);
    unlink(pin.c_str());
    if (bpf_obj_pin(link.get(), pin.c_str())) {
      return datapath::ErrnoStatus("bpf_obj_pin", pin, errno);
    }
  }
  return absl::OkStatus();
}

void Agent::WatchPins() {
  std::unique_lock<std::mutex> lock(pin_watch_mu_);
  while (
      !pin_watch_cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_pin_watch_; })) {
    lock.unlock();
    if (!PinsPresent()) {
      if (pins_ok_) {
        // Enforcement goes on (this process holds the maps and links); a
        // restarted agent could not adopt it, so: not ready until re-pinned.
        LogError(
            "pinned maps or links are gone (bpffs unmounted or the pin dir removed); "
            "pinning them again",
            {{"pin_dir", options_.pin_dir}});
        metrics_->sync_errors.Add({{"kind", "pins"}}).Increment();
        pins_ok_ = false;
        UpdateReady();
      }
      if (absl::Status s = RestorePins(); s.ok()) {
        pins_ok_ = true;
        UpdateReady();
        LogInfo("pins restored", {{"pin_dir", options_.pin_dir}});
      } else {
        LogWarning("cannot restore the pins yet", {{"error", std::string(s.message())}});
      }
    }
    lock.lock();
  }
}

void Agent::SetLastError(std::string error) {
  std::lock_guard<std::mutex> lock(status_mu_);
  last_error_ = std::move(error);
}

v1::AgentStatus Agent::StatusSnapshot() const {
  v1::AgentStatus status;
  status.set_node(options_.node);
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    status.set_applied_version(version_);
    status.set_applied_hash(applied_hash_);
    status.set_last_error(last_error_);
    status.set_xdp_mode(xdp_mode_);
  }
  for (const std::string& ifname : options_.interfaces) status.add_interfaces(ifname);
  status.set_ready(ready_);
  if (dp_) {
    if (auto counters = datapath::ReadVerdictCounters(*dp_); counters.ok()) {
      std::map<std::pair<std::string, std::string>, uint64_t> sums;
      for (const datapath::VerdictCount& c : *counters) {
        sums[{std::string(VerdictName(c.key.verdict)), std::string(ReasonName(c.key.reason))}] +=
            c.total.packets;
      }
      for (const auto& [key, packets] : sums) {
        v1::CounterSummary* summary = status.add_counters();
        summary->set_verdict(key.first);
        summary->set_reason(key.second);
        summary->set_packets(packets);
      }
    }
  }
  return status;
}

Agent::~Agent() {
  Shutdown();
  http_.reset();
}

void Agent::Shutdown() {
  // Leave every kernel object in place (fail-static).
  started_ = false;
  UpdateReady();
  {
    std::lock_guard<std::mutex> lock(pin_watch_mu_);
    stop_pin_watch_ = true;
  }
  pin_watch_cv_.notify_all();
  if (pin_watch_.joinable()) pin_watch_.join();
  if (source_) source_->Stop();
  links_.reset();
  policed_links_.reset();
  samples_.reset();
  std::lock_guard<std::mutex> wait_for_apply(apply_mu_);
}

absl::Status Agent::EnsurePoliced(const std::string& ifname) {
  const unsigned ifindex = if_nametoindex(ifname.c_str());
  if (ifindex == 0) return absl::NotFoundError(absl::StrCat("no such interface: ", ifname));
  const std::string pin = XdpLinkPin(options_.pin_dir, ifname);
  LIBBPF_OPTS(bpf_xdp_query_opts, query);
  const bool has_xdp = bpf_xdp_query(static_cast<int>(ifindex), 0, &query) == 0 && query.prog_id;
  const bool pinned = access(pin.c_str(), F_OK) == 0;
  struct bpf_prog_info ours = {};
  __u32 len = sizeof(ours);
  if (has_xdp && pinned && bpf_obj_get_info_by_fd(dp_->xdp_prog_fd(), &ours, &len) == 0 &&
      query.prog_id == ours.id) {
    return absl::OkStatus();  // our program is there: a link change (up, down, rename)
  }
  if (!has_xdp && pinned) {
    // The interface was re-created: the pinned link points at the old one.
    RETURN_IF_ERROR(datapath::DetachXdp(pin));
  }
  auto xdp = datapath::AttachXdp(dp_->xdp_prog_fd(), ifname, options_.xdp_mode, pin);
  if (!xdp.ok()) {
    metrics_->sync_errors.Add({{"kind", "attach"}}).Increment();
    LogError("cannot attach XDP",
             {{"iface", ifname}, {"error", std::string(xdp.status().message())}});
    return xdp.status();
  }
  metrics_->xdp_attached.Add({{"iface", ifname}, {"mode", xdp->mode}}).Set(1);
  {
    std::lock_guard<std::mutex> lock(links_mu_);
    xdp_links_[ifname] = std::move(xdp->link);
  }
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    xdp_mode_ = xdp->mode;
  }
  RETURN_IF_ERROR(AttachTcFilter(dp_->tc_egress_prog_fd(), ifname, datapath::TcDirection::kEgress));
  LogInfo(xdp->replaced ? "adopted XDP attachment, program replaced" : "attached XDP",
          {{"iface", ifname}, {"mode", xdp->mode}});
  return absl::OkStatus();
}

void Agent::SetInterfacePresent(const std::string& ifname, bool present) {
  {
    std::lock_guard<std::mutex> lock(missing_mu_);
    if (present) {
      missing_.erase(ifname);
    } else {
      missing_.insert(ifname);
    }
  }
  UpdateReady();
}

void Agent::UpdateReady() {
  std::lock_guard<std::mutex> lock(missing_mu_);
  ready_ = started_ && attached_ && pins_ok_ && missing_.empty();
  if (metrics_) metrics_->ready.Set(ready_ ? 1 : 0);
}

absl::Status Agent::AttachTcFilter(int prog_fd, const std::string& ifname,
                                   datapath::TcDirection direction) {
  const char* what = direction == datapath::TcDirection::kIngress ? "TC ingress" : "TC egress";
  auto created = datapath::AttachTc(prog_fd, ifname, direction);
  if (!created.ok()) {
    metrics_->sync_errors.Add({{"kind", "attach"}}).Increment();
    LogError(absl::StrCat("cannot attach ", what),
             {{"iface", ifname}, {"error", std::string(created.status().message())}});
    return created.status();
  }
  if (*created) RecordQdisc(options_.state_dir, ifname);
  LogInfo(absl::StrCat("attached ", what), {{"iface", ifname}});
  return absl::OkStatus();
}

absl::Status Agent::Apply(const PolicyUpdate& update) {
  std::lock_guard<std::mutex> lock(apply_mu_);
  const auto start = std::chrono::steady_clock::now();
  auto fail = [&](absl::string_view kind, const absl::Status& s) {
    metrics_->sync_errors.Add({{"kind", std::string(kind)}}).Increment();
    SetLastError(absl::StrCat(update.origin, ": ", s.message()));
    LogError("policy not applied; the previous policy stays",
             {{"origin", update.origin}, {"error", std::string(s.message())}});
    return s;
  };
  auto compiled = policy::Compile(update.policy);
  if (!compiled.ok()) return fail("compile", compiled.status());
  // The control service numbers its versions; a file's are counted here, and
  // a restart re-applies the same text as the same version.
  const uint64_t version = update.version                                 ? update.version
                           : update.text == applied_text_ && version_ > 0 ? version_
                                                                          : version_ + 1;
  if (absl::Status s = installer_->Install(*compiled, version); !s.ok()) return fail("apply", s);
  const uint64_t previous_version = version_;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  {
    std::lock_guard<std::mutex> status_lock(status_mu_);
    version_ = version;
    applied_hash_ = policy::ContentHash(update.policy);
    last_error_.clear();
  }
  metrics_->policy_version.Set(static_cast<double>(version));
  metrics_->apply_seconds.Observe(seconds);
  metrics_->last_applied_timestamp.Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  collector_->SetPolicy(*compiled);
  LogInfo("policy applied", {{"origin", update.origin},
                             {"name", update.policy.metadata().name()},
                             {"version", version},
                             {"apply_seconds", seconds}});
  // Enforced; now kept as last-known-good. A policy from the control
  // service comes without text: it is written as YAML here, after the
  // switch, so that a large policy does not wait for it.
  const std::string text = update.text.empty() ? policy::ToYaml(update.policy) : update.text;
  if (version != previous_version || text != applied_text_) {
    if (absl::Status s = state_->SaveApplied({text, version}); !s.ok()) {
      LogWarning("policy applied but not saved as last-known-good",
                 {{"error", std::string(s.message())}});
    }
  }
  applied_text_ = text;
  return absl::OkStatus();
}

absl::Status Uninstall(const std::string& pin_dir, const std::string& state_dir) {
  std::set<std::string> our_qdiscs;
  if (std::ifstream in(QdiscRecord(state_dir)); in) {
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) our_qdiscs.insert(line);
    }
  }
  int detached = 0;
  std::error_code ec;
  if (fs::exists(LinksDir(pin_dir), ec)) {
    for (const auto& entry : fs::directory_iterator(LinksDir(pin_dir), ec)) {
      RETURN_IF_ERROR(datapath::DetachXdp(entry.path().string()));
      ++detached;
    }
  }
  if (struct if_nameindex* list = if_nameindex()) {
    for (struct if_nameindex* i = list; i->if_index != 0; ++i) {
      const bool ours = our_qdiscs.contains(i->if_name);
      for (auto dir : {datapath::TcDirection::kIngress, datapath::TcDirection::kEgress}) {
        auto found = datapath::DetachTc(static_cast<int>(i->if_index), dir, false);
        if (found.ok() && *found) ++detached;
      }
      if (ours)
        datapath::DetachTc(static_cast<int>(i->if_index), datapath::TcDirection::kIngress, true)
            .IgnoreError();
    }
    if_freenameindex(list);
  }
  fs::remove_all(pin_dir, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot remove ", pin_dir, ": ", ec.message()));
  for (const char* name : {"tc-qdiscs", "policy.yaml", "policy.version"}) {
    fs::remove(absl::StrCat(state_dir, "/", name), ec);
  }
  LogInfo("uninstalled", {{"pin_dir", pin_dir}, {"detached", static_cast<int64_t>(detached)}});
  return absl::OkStatus();
}

}  // namespace portcullis::agent
