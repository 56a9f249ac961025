#include "agent/agent.h"

#include <net/if.h>

#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/cookie_notrack.h"
#include "agent/pod_netns.h"
#include "agent/shadow_summary.h"
#include "common/abi.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "datapath/counters.h"
#include "datapath/flow_seed.h"
#include "policy/compiler.h"
#include "policy/text.h"
#include "policy/validator.h"

namespace portcullis::agent {
namespace {

namespace fs = std::filesystem;

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

// The policy to enforce first. From a file: the file, or else the
// last-known-good one. From the control service: the last-known-good one
// (the service may be unreachable); without it, nullopt: programs wait for
// the first version.
absl::StatusOr<std::optional<PolicyUpdate>> InitialPolicy(const AgentOptions& options,
                                                          const std::optional<AppliedPolicy>& lkg) {
  if (!options.control) {
    auto from_file = LoadPolicyFile(options.policy_file);
    if (from_file.ok()) return std::optional<PolicyUpdate>(*std::move(from_file));
    if (!lkg) {
      return absl::InvalidArgumentError(
          absl::StrCat("the policy file is not valid and there is no last-known-good policy in ",
                       options.state_dir, ":\n", from_file.status().message()));
    }
    LogError("the policy file is not valid; enforcing the last-known-good policy instead",
             {{"file", options.policy_file},
              {"error", std::string(from_file.status().message())},
              {"version", lkg->version}});
    ASSIGN_OR_RETURN(PolicyUpdate update, LastKnownGood(*lkg, options.state_dir));
    return std::optional<PolicyUpdate>(std::move(update));
  }
  if (lkg) {
    ASSIGN_OR_RETURN(PolicyUpdate update, LastKnownGood(*lkg, options.state_dir));
    LogInfo("enforcing the last-known-good policy until the control service answers",
            {{"version", lkg->version}});
    return std::optional<PolicyUpdate>(std::move(update));
  }
  LogInfo(
      "no last-known-good policy: programs are attached once the control service sends the "
      "first version");
  return std::optional<PolicyUpdate>();
}

}  // namespace

absl::Status Agent::LoadDatapath() {
  RETURN_IF_ERROR(PreparePinDir(layout_, options_.allow_ephemeral_pins));
  uint32_t cookie_mark = options_.cookie_mark;
  if (cookie_mark != 0 && datapath::SynCookiesSupported().ok()) {
    if (absl::Status s = InstallCookieNotrack(cookie_mark); !s.ok()) {
      LogWarning(
          "SYN cookies: the nftables rule that takes their ACKs out of conntrack could not be "
          "installed; where NAT is loaded (kube-proxy), connections made through cookies are "
          "reset",
          {{"error", std::string(s.message())}});
      cookie_mark = 0;
    }
  } else {
    // An earlier agent's rule, for bits this one no longer sets (and that
    // something else may): gone. No nftables here is no rule to remove.
    RemoveCookieNotrack().IgnoreError();
  }
  // Pods get cookies only where the agent can reach their namespaces:
  // otherwise XDP would answer their SYNs with cookies that nothing
  // completes (a DaemonSet without /run/netns or CAP_SYS_ADMIN).
  bool cookies_for_pods = false;
  if (!options_.tc_interfaces.empty()) {
    const absl::Status reach = CanReachPodNamespaces();
    cookies_for_pods = reach.ok();
    if (!reach.ok()) {
      LogWarning(
          "SYN cookies: the pods behind --tc-interfaces get none, and their SYNs are judged as "
          "with cookies: off",
          {{"reason", std::string(reach.message())},
           {"tc_interfaces", absl::StrJoin(options_.tc_interfaces, ",")}});
    }
  }
  const datapath::DatapathOptions dp_options{
      .cookie_mark = cookie_mark, .cookies_for_pods = cookies_for_pods, .pin_dir = layout_.maps()};
  auto dp = datapath::Datapath::Load(dp_options);
  if (absl::IsFailedPrecondition(dp.status())) {
    // Pins from an incompatible build: start on fresh maps, and swap the
    // programs under the live attachments (link update, tc replace), so that
    // enforcement never stops; then pin the new maps.
    LogWarning("pinned maps are from an incompatible build; replacing them",
               {{"detail", std::string(dp.status().message())}});
    datapath::DatapathOptions fresh = dp_options;
    fresh.pin_dir.clear();
    dp = datapath::Datapath::Load(fresh);
    repin_ = true;
    if (dp.ok()) {
      // The flows the node opened go on being established across the upgrade.
      auto carried = (*dp)->CarryOverFlows(layout_.maps());
      if (carried.ok()) {
        LogInfo("carried over the flows the node opened", {{"flows", *carried}});
      } else {
        LogWarning("could not carry over the flows the node opened",
                   {{"error", std::string(carried.status().message())}});
      }
    }
  }
  if (!dp.ok()) {
    if (absl::IsPermissionDenied(dp.status())) {
      return absl::PermissionDeniedError(
          absl::StrCat(dp.status().message(), ": no permission for BPF: ", kAgentPrivileges));
    }
    return dp.status();
  }
  dp_ = *std::move(dp);
  if (!dp_->cookies_unsupported().empty()) {
    LogWarning(
        "SYN cookies are not available on this node: a policy's rateLimits.syn.cookies is "
        "judged as off here (portcullis_syn_cookies_supported 0)",
        {{"reason", dp_->cookies_unsupported()}});
  }
  return absl::OkStatus();
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
  ASSIGN_OR_RETURN(const std::optional<AppliedPolicy> lkg, a->state_->LastApplied());
  ASSIGN_OR_RETURN(const std::optional<PolicyUpdate> initial, InitialPolicy(options, lkg));

  RETURN_IF_ERROR(a->LoadDatapath());
  a->registry_ = std::make_shared<prometheus::Registry>();
  a->metrics_ = std::make_unique<AgentMetrics>(*a->registry_);
  a->readiness_ = std::make_unique<Readiness>(a->metrics_->ready);
  a->collector_ = std::make_shared<DatapathCollector>(*a->dp_);
  std::optional<InterruptedApply> interrupted = a->state_->TakeApplying();
  if (interrupted) {
    LogError("the last agent died while applying a policy",
             {{"hash", interrupted->hash}, {"attempts", interrupted->attempts}});
  }
  a->applier_ = std::make_unique<Applier>(*a->dp_, *a->state_, *a->metrics_, *a->collector_, lkg,
                                          std::move(interrupted));
  a->confirm_ = std::make_unique<ConfirmWindow>(
      [agent = a.get()](const AppliedPolicy& previous) { return agent->Revert(previous); });
  a->attachments_ = std::make_unique<Attachments>(
      AttachOptions{options.interfaces, options.tc_interfaces, options.xdp_mode}, a->layout_,
      *a->dp_, *a->state_, *a->metrics_, *a->readiness_);
  a->pins_ = std::make_unique<PinKeeper>(
      a->layout_, *a->dp_,
      [attachments = a->attachments_.get()](const auto& fn) { attachments->ForEachXdpLink(fn); });
  if (!a->repin_) RETURN_IF_ERROR(a->pins_->RemoveStalePins());

  if (!options.metrics_addr.empty()) {
    ASSIGN_OR_RETURN(a->http_,
                     HttpServer::Start(options.metrics_addr, {a->registry_, a->collector_},
                                       a->readiness_->flag()));
  }
  auto samples =
      DropSampleLogger::Start(a->dp_->map_fd(datapath::Map::kDropSamples),
                              /*per_second=*/20, /*burst=*/50, &a->metrics_->samples_suppressed);
  if (samples.ok()) {
    a->samples_ = *std::move(samples);
  } else {
    LogWarning("drop samples will not be logged",
               {{"error", std::string(samples.status().message())}});
  }

  // Policy before programs: a new program never runs without one. A policy
  // file that cannot be applied (one that stopped the last agent) leaves the
  // last-known-good one in force.
  if (initial) {
    absl::Status applied = a->OnUpdate(*initial);
    if (!applied.ok() && lkg && initial->text != lkg->yaml) {
      const std::string why = absl::StrCat(initial->origin, ": ", applied.message());
      LogError("enforcing the last-known-good policy instead", {{"version", lkg->version}});
      ASSIGN_OR_RETURN(PolicyUpdate fallback, LastKnownGood(*lkg, options.state_dir));
      applied = a->OnUpdate(fallback);
      a->applier_->SetLastError(why);
    }
    RETURN_IF_ERROR(applied);
  }

  if (options.control) {
    ControlSourceHooks hooks;
    hooks.status = [agent = a.get()] { return agent->StatusSnapshot(); };
    hooks.connected = [agent = a.get()](bool up) {
      agent->metrics_->control_connected.Set(up ? 1 : 0);
    };
    hooks.stale = [agent = a.get()](bool stale) {
      agent->metrics_->control_stale.Set(stale ? 1 : 0);
    };
    hooks.sync_error = [agent = a.get()](absl::string_view kind) {
      agent->metrics_->sync_errors.Add({{"kind", std::string(kind)}}).Increment();
    };
    a->source_ = NewControlPolicySource({.client = *options.control,
                                         .report_interval = options.report_interval,
                                         .stale_failover = options.stale_failover},
                                        std::move(hooks));
  } else {
    a->source_ = NewFilePolicySource(options.policy_file);
  }
  RETURN_IF_ERROR(a->source_->Start(
      [agent = a.get()](PolicyUpdate update) { return agent->OnUpdate(update); },
      [agent = a.get()](std::string why) {
        agent->metrics_->sync_errors.Add({{"kind", "invalid_policy"}}).Increment();
        agent->applier_->SetLastError(why);
        LogError("policy rejected; the previous policy stays", {{"error", why}});
      }));
  a->readiness_->SetStarted(true);
  LogInfo(a->attached_ ? "ready" : "started; waiting for the first policy",
          {{"node", options.node}, {"version", a->applier_->applied().version}});
  return a;
}

absl::Status Agent::OnUpdate(const PolicyUpdate& update) {
  const v1::PolicySpec& spec = update.policy.spec();
  if (!options_.tc_interfaces.empty() && spec.destinations_size() == 0 &&
      spec.default_action() != v1::ACTION_ALLOW) {
    // Likely more than meant: every pod behind the globs is policed against
    // other pods, the overlay and the node, and nothing there is open yet.
    LogWarning(
        "the policy denies by default and names no destinations: every pod behind "
        "--tc-interfaces is policed against traffic from other pods, the overlay and the node "
        "itself (DNS, kubelet probes, metrics scrapes), which needs rules of its own",
        {{"policy", update.policy.metadata().name()},
         {"tc_interfaces", absl::StrJoin(options_.tc_interfaces, ",")}});
  }
  if (update.confirmed && confirm_->Confirm(update.version)) {
    // The version this agent enforces, awaiting confirmation, is confirmed:
    // keep it, and from now on come back to it after a restart.
    LogInfo("version confirmed", {{"version", update.version}});
    if (absl::Status s = applier_->SaveAsLastKnownGood(); !s.ok()) {
      LogWarning("confirmed but not saved as last-known-good",
                 {{"error", std::string(s.message())}});
    }
    if (applier_->applied().version == update.version) {
      SyncShadow(update);
      return absl::OkStatus();
    }
  }
  if (const Applier::Applied applied = applier_->applied();
      update.version != 0 && applied.version == update.version &&
      applied.hash == policy::ContentHash(update.policy)) {
    // The version this agent enforces, sent again for its shadow candidate.
    SyncShadow(update);
    return absl::OkStatus();
  }
  std::optional<AppliedPolicy> previous;
  if (update.awaits_confirmation()) {
    if (absl::FromUnixNanos(update.confirm_by_unix_nanos) <= absl::Now()) {
      // Its window closed before it got here: the service reverts it.
      LogWarning("not applying a version whose confirmation window has closed",
                 {{"version", update.version}});
      return absl::OkStatus();
    }
    previous = applier_->Current();
  }
  RETURN_IF_ERROR(applier_->Apply(update));
  SyncShadow(update);
  if (previous) {
    confirm_->Arm(update.version, absl::FromUnixNanos(update.confirm_by_unix_nanos),
                  *std::move(previous));
  } else if (!update.awaits_confirmation()) {
    confirm_->Disarm();
  }
  return attached_ ? absl::OkStatus() : Attach();
}

absl::Status Agent::Revert(const AppliedPolicy& previous) {
  ASSIGN_OR_RETURN(PolicyUpdate update, LastKnownGood(previous, options_.state_dir));
  update.origin = absl::StrCat("version ", previous.version, " (going back: unconfirmed)");
  RETURN_IF_ERROR(applier_->Apply(update));
  metrics_->policy_reverts.Increment();
  return absl::OkStatus();
}

absl::Status Agent::Attach() {
  // Connections the node opened before the recorder ran (the agent's own to
  // the control service among them): before attaching, and again after, for
  // those opened in between.
  auto seed = [this] {
    auto seeded = datapath::SeedOpenedFlows(*dp_);
    if (seeded.ok() && *seeded > 0) {
      LogInfo("recorded the connections the node had open", {{"flows", *seeded}});
    }
  };
  seed();
  RETURN_IF_ERROR(attachments_->AttachAll());
  seed();
  if (repin_) {
    // New programs run everywhere now; the old maps go with the old pins.
    // The pod interfaces' filters are replaced as the link watcher attaches.
    RETURN_IF_ERROR(pins_->PinMaps());
    LogInfo("replaced the incompatible pinned maps", {{"pin_dir", options_.pin_dir}});
    repin_ = false;
  }
  RETURN_IF_ERROR(pins_->StartWatch([this](bool ok) {
    if (!ok) metrics_->sync_errors.Add({{"kind", "pins"}}).Increment();
    readiness_->SetPinsOk(ok);
  }));
  attached_ = true;
  readiness_->SetAttached(true);
  return absl::OkStatus();
}

void Agent::SyncShadow(const PolicyUpdate& update) {
  const Applier::Shadow loaded = applier_->shadow();
  if (!update.shadow) {
    if (loaded.id == 0) return;
    if (absl::Status s = applier_->DiscardShadow(); !s.ok()) {
      LogError("cannot discard the shadow candidate", {{"error", std::string(s.message())}});
    }
    return;
  }
  if (loaded.id == update.shadow->id && loaded.content_hash == update.shadow->content_hash) return;
  applier_->ApplyShadow(*update.shadow).IgnoreError();  // logged, counted and reported
}

v1::AgentStatus Agent::StatusSnapshot() const {
  v1::AgentStatus status;
  status.set_node(options_.node);
  status.mutable_node_labels()->insert(options_.node_labels.begin(), options_.node_labels.end());
  const Applier::Applied applied = applier_->applied();
  status.set_applied_version(applied.version);
  status.set_applied_hash(applied.hash);
  status.set_last_error(applied.last_error);
  const ConfirmWindow::Reverted r = confirm_ ? confirm_->last_revert() : ConfirmWindow::Reverted{};
  status.set_awaiting_confirmation(confirm_ && confirm_->awaiting());
  if (r.from != 0) {
    status.set_reverted_version(r.from);
    status.set_reverted_to_version(r.to);
    status.set_reverted_unix_nanos(r.at_unix_nanos);
  }
  status.set_xdp_mode(attachments_->xdp_mode());
  for (const std::string& ifname : options_.interfaces) status.add_interfaces(ifname);
  status.set_ready(readiness_->ready());
  if (const Applier::Shadow shadow = applier_->shadow(); shadow.id != 0) {
    if (auto counts = datapath::ReadShadowCounts(*dp_); counts.ok()) {
      *status.mutable_shadow() = SummarizeShadow(*counts, shadow.id, shadow.content_hash);
    }
  } else if (!shadow.error.empty()) {
    status.mutable_shadow()->set_error(shadow.error);
  }
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
  return status;
}

Agent::~Agent() {
  Shutdown();
  http_.reset();
}

void Agent::Shutdown() {
  // Leave every kernel object in place (fail-static).
  if (readiness_) readiness_->SetStarted(false);
  if (pins_) pins_->StopWatch();
  if (source_) source_->Stop();
  if (attachments_) attachments_->StopWatching();
  samples_.reset();
  confirm_.reset();  // no revert while stopping: a restart comes back to the last-known-good
  if (applier_) applier_->WaitForApply();
}

absl::Status Uninstall(const std::string& pin_dir, const std::string& state_dir) {
  const PinLayout layout{pin_dir};
  const StateDir state = StateDir::Existing(state_dir);
  const std::set<std::string> our_qdiscs = state.RecordedQdiscs();
  int detached = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator(layout.links(), ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    RETURN_IF_ERROR(datapath::DetachXdp(it->path().string()));
    ++detached;
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return absl::UnavailableError(absl::StrCat("cannot list ", layout.links(), ": ", ec.message()));
  }
  if (struct if_nameindex* list = if_nameindex()) {
    for (struct if_nameindex* i = list; i->if_index != 0; ++i) {
      for (auto dir : {datapath::TcDirection::kIngress, datapath::TcDirection::kEgress}) {
        auto found = datapath::DetachTc(static_cast<int>(i->if_index), dir, false);
        if (found.ok() && *found) ++detached;
      }
      if (our_qdiscs.contains(i->if_name)) {
        // Removing the ingress side of clsact removes the qdisc.
        datapath::DetachTc(static_cast<int>(i->if_index), datapath::TcDirection::kIngress, true)
            .IgnoreError();
      }
      // The cookie program at a pod's side, in the pod's namespace.
      if (auto pod = FindPodSide(i->if_name); pod.ok() && pod->has_value()) {
        const PodSide& side = **pod;
        const bool our_qdisc = our_qdiscs.contains(PodSideQdisc(i->if_name));
        InNetns(side.netns.get(), [&] {
          auto found = datapath::DetachTc(side.ifindex, datapath::TcDirection::kIngress, our_qdisc);
          if (found.ok() && *found) ++detached;
          return found.status();
        }).IgnoreError();
      }
    }
    if_freenameindex(list);
  }
  if (absl::Status s = RemoveCookieNotrack(); !s.ok()) {
    LogWarning("could not remove the nftables table of SYN cookies",
               {{"table", std::string("inet ") + kNftTable}, {"error", std::string(s.message())}});
  }
  ec.clear();
  fs::remove_all(pin_dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot remove ", pin_dir, ": ", ec.message()));
  }
  RETURN_IF_ERROR(state.RemoveAll());
  LogInfo("uninstalled", {{"pin_dir", pin_dir}, {"detached", static_cast<int64_t>(detached)}});
  return absl::OkStatus();
}

}  // namespace portcullis::agent
