#include "control/service.h"

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "control/admission.h"
#include "control/rollout.h"
#include "control/shadow_report.h"
#include "policy/compiler.h"
#include "policy/diff.h"
#include "policy/text.h"
#include "policy/validator.h"

namespace portcullis::control {
namespace {

absl::Status Gone() {
  return absl::DeadlineExceededError(
      "nothing was stored: the client's deadline passed (or it went away) before the push "
      "could be stored and acknowledged");
}

// Who the audit log names for the changes the service makes itself.
constexpr char kServicePrincipal[] = "portcullis-control";

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

std::string FormatFindings(const std::vector<v1::Finding>& findings) {
  std::vector<std::string> lines;
  for (const v1::Finding& f : findings) {
    if (!f.warning())
      lines.push_back(absl::StrCat(f.path().empty() ? "policy" : f.path(), ": ", f.message()));
  }
  return absl::StrJoin(lines, "\n");
}

std::string FormatUnixNanos(int64_t nanos) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixNanos(nanos), absl::UTCTimeZone());
}

// OK when `rollout` is in progress and is canary version `asked` (0: any).
absl::Status IsCurrentRollout(const std::optional<v1::Rollout>& rollout, uint64_t asked) {
  if (!rollout) return absl::FailedPreconditionError("no canary rollout is in progress");
  if (asked != 0 && asked != rollout->version()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the canary in progress is version ", rollout->version(), ", not ", asked));
  }
  return absl::OkStatus();
}

}  // namespace

bool AwaitsConfirmation(const v1::PolicyVersion& v) {
  return v.confirm_by_unix_nanos() != 0 && v.confirmed_unix_nanos() == 0;
}

// One unary call: its method and permission are written once. Authorizes
// at construction (auditing a refusal), audits later refusals under the
// call's method, and counts and finishes the call.
class CallScope {
 public:
  CallScope(ControlService& service, grpc::CallbackServerContext* ctx, absl::string_view method,
            Permission permission)
      : service_(service),
        ctx_(ctx),
        method_(method),
        caller_(service.authorizer_.Authorize(*ctx, method, permission)) {}
  // A change the service makes itself (a revert of an unconfirmed push).
  CallScope(ControlService& service, absl::string_view method)
      : service_(service), ctx_(nullptr), method_(method), caller_(Caller{kServicePrincipal, ""}) {}

  bool authorized() const { return caller_.ok(); }
  const Caller& caller() const { return *caller_; }
  // The client is gone (it cancelled, or its connection broke), or its
  // deadline is too close for the answer to reach it: a change it could not
  // be told about must not be made.
  bool abandoned() const {
    if (ctx_ == nullptr) return false;
    return ctx_->IsCancelled() ||
           ctx_->deadline() < std::chrono::system_clock::now() + kAnswerMargin;
  }
  static constexpr std::chrono::milliseconds kAnswerMargin{250};
  absl::string_view method() const { return method_; }

  // Audits `why` as this call's refusal, for `reason`, and returns it.
  absl::Status Refuse(absl::string_view reason, absl::Status why) {
    service_.refusals_.Refuse(*caller_, method_, reason, why);
    return why;
  }

  // Counts the call and finishes it with `status`; without one, with the
  // authorization's refusal.
  grpc::ServerUnaryReactor* Finish(const absl::Status& status) {
    service_.Count(method_, status);
    grpc::ServerUnaryReactor* reactor = ctx_->DefaultReactor();
    reactor->Finish(ToGrpc(status));
    return reactor;
  }
  grpc::ServerUnaryReactor* Finish() { return Finish(caller_.status()); }

 private:
  ControlService& service_;
  grpc::CallbackServerContext* ctx_;
  const absl::string_view method_;
  const absl::StatusOr<Caller> caller_;
};

ControlService::ControlService(Store& store, ServiceOptions options,
                               std::unique_ptr<RevocationList> crl, prometheus::Registry& registry)
    : store_(store),
      options_(std::move(options)),
      agents_(std::make_shared<AgentRegistry>(options_.stale_after)),
      requests_(prometheus::BuildCounter()
                    .Name("portcullis_control_requests_total")
                    .Help("Calls to the control service, by method and gRPC status code")
                    .Register(registry)),
      audit_chain_valid_(prometheus::BuildGauge()
                             .Name("portcullis_control_audit_chain_valid")
                             .Help("1 when the audit log's hash chain verified at start, else 0")
                             .Register(registry)
                             .Add({})),
      refusals_(store, options_.itemised_refusals, options_.refusal_window, registry),
      crl_(std::move(crl)),
      authorizer_(options_.role_map_path, options_.insecure_plaintext, crl_.get(), refusals_),
      live_(options_.max_watch_streams, registry) {}

absl::StatusOr<std::unique_ptr<ControlService>> ControlService::Create(
    Store& store, ServiceOptions options, prometheus::Registry& registry) {
  std::unique_ptr<RevocationList> crl;
  if (!options.crl_path.empty()) {
    auto opened = RevocationList::Open(options.crl_path, options.ca_path);
    if (!opened.ok()) return opened.status();
    crl = *std::move(opened);
  }
  std::unique_ptr<ControlService> s(
      new ControlService(store, std::move(options), std::move(crl), registry));
  if (!s->options_.insecure_plaintext) {
    auto roles = RoleMap::Load(s->options_.role_map_path);
    if (!roles.ok()) return roles.status();
  }
  if (absl::Status chain = store.VerifyAudit(); chain.ok()) {
    s->audit_chain_valid_.Set(1);
  } else {
    LogError("the audit log's hash chain is broken: it has been tampered with or damaged",
             {{"error", std::string(chain.message())}});
  }
  uint64_t generation = 0;
  {
    std::lock_guard<std::mutex> lock(s->push_mu_);
    RETURN_IF_ERROR(s->Load());
    generation = s->generation_;
  }
  s->reverter_ = std::thread([svc = s.get()] { svc->DeadlineLoop(); });
  if (store.Shared()) {
    s->follower_ = std::make_unique<StoreFollower>(
        store, generation,
        [svc = s.get()] {
          std::lock_guard<std::mutex> lock(svc->push_mu_);
          if (absl::Status l = svc->Load(); !l.ok()) {
            LogError("cannot read another replica's change", {{"error", std::string(l.message())}});
          }
        },
        [svc = s.get()](bool reachable) { svc->live_.SetStale(!reachable); }, registry);
    s->agent_share_ = store.ShareAgents(*s->agents_);
  }
  return s;
}

absl::Status ControlService::Load() {
  // The generation first: a change between it and the reads below makes
  // the next check fail as moved, and load again; never the other way.
  auto generation = store_.Generation();
  if (!generation.ok()) return generation.status();
  // Most moves of a shared store's generation leave the live version as it
  // is (an audit entry: a refusal, an agent's revert, this replica's own
  // change): then its policy is not read again.
  const std::shared_ptr<const v1::PolicyVersion> published = live_.Live();
  auto header = store_.LiveHeader();
  if (!header.ok()) return header.status();
  const bool live_unchanged =
      published && *header && (**header).version() == published->version() &&
      (**header).confirmed_unix_nanos() == published->confirmed_unix_nanos();
  auto shadow = store_.Shadow();
  if (!shadow.ok()) return shadow.status();
  auto rollout = store_.Rollout();
  if (!rollout.ok()) return rollout.status();
  const uint64_t live_number = *header ? (**header).version() : 0;
  std::optional<v1::Rollout> in_progress;
  std::shared_ptr<const v1::PolicyVersion> stable;
  if (*rollout && live_number != 0 && (**rollout).version() == live_number) {
    auto kept = store_.Get((**rollout).stable_version());
    if (!kept.ok()) return kept.status();
    in_progress = **rollout;
    stable = std::make_shared<const v1::PolicyVersion>(*std::move(kept));
  }
  const auto id = [](const std::optional<v1::ShadowCandidate>& c) { return c ? c->id() : 0; };
  const bool shadow_moved = id(shadow_) != id(*shadow);
  const bool rollout_moved =
      in_progress.has_value() != rollout_.has_value() ||
      (in_progress && in_progress->SerializeAsString() != rollout_->SerializeAsString());
  std::optional<v1::PolicyVersion> live;
  if (live_number != 0 && (!live_unchanged || shadow_moved || rollout_moved)) {
    auto read = store_.Live();
    if (!read.ok()) return read.status();
    live = *std::move(read);
  }
  if (shadow_moved && loaded_) ++shadow_generation_;
  shadow_ = *std::move(shadow);
  rollout_ = std::move(in_progress);
  stable_ = std::move(stable);
  generation_ = *generation;
  loaded_ = true;
  if (live) Publish(*std::move(live));
  return absl::OkStatus();
}

ControlService::~ControlService() {
  follower_.reset();  // it loads into what follows
  agent_share_.reset();
  {
    std::lock_guard<std::mutex> lock(revert_mu_);
    stopping_ = true;
  }
  revert_cv_.notify_all();
  if (reverter_.joinable()) reverter_.join();
}

void ControlService::DeadlineLoop() {
  std::unique_lock<std::mutex> lock(revert_mu_);
  while (!stopping_) {
    const std::shared_ptr<const v1::PolicyVersion> live = live_.Live();
    const bool confirm = live && AwaitsConfirmation(*live);
    const bool step = live && live->has_rollout() && live->rollout().next_step_unix_nanos() != 0;
    const bool watch = live && live->has_rollout() && live->rollout().max_drop_increase() > 0;
    if (!confirm && !step && !watch) {
      revert_cv_.wait(lock);
      continue;
    }
    if (watch) {
      lock.unlock();
      if (absl::Status s = WatchRollout(*live); !s.ok()) {
        LogError("cannot abort a rollout whose drops rose",
                 {{"version", live->version()}, {"error", std::string(s.message())}});
      }
      lock.lock();
      if (live_.Live() != live) continue;  // aborted, or changed meanwhile
    }
    const absl::Time due = confirm ? absl::FromUnixNanos(live->confirm_by_unix_nanos())
                           : step  ? absl::FromUnixNanos(live->rollout().next_step_unix_nanos())
                                   : absl::InfiniteFuture();
    if (absl::Now() < due) {
      // A watched rollout is looked at every second (agents report every
      // few): its drops are compared as the reports come.
      revert_cv_.wait_for(
          lock, absl::ToChronoNanoseconds(watch ? std::min(due - absl::Now(), absl::Seconds(1))
                                                : due - absl::Now()));
      continue;
    }
    lock.unlock();
    if (confirm) {
      RevertUnconfirmed(*live);
    } else if (absl::Status s = NextRolloutStep(*live); !s.ok()) {
      // Retried at the next wake-up; the nodes stay where they are meanwhile.
      LogError("cannot take the rollout's next step",
               {{"version", live->version()}, {"error", std::string(s.message())}});
      std::unique_lock<std::mutex> wait(revert_mu_);
      revert_cv_.wait_for(wait, std::chrono::seconds(1), [this] { return stopping_; });
    }
    lock.lock();
  }
}

absl::Status ControlService::WatchRollout(const v1::PolicyVersion& live) {
  const v1::Rollout& r = live.rollout();
  for (const v1::AgentState& a : agents_->States()) {
    if (!a.canary() || a.stale()) continue;
    const std::string& node = a.status().node();
    for (const std::string& reason : r.watched_reasons()) {
      const std::optional<double> before = agents_->DropRate(node, r.stable_version(), {reason});
      const std::optional<double> after = agents_->DropRate(node, r.version(), {reason});
      if (!before || !after) continue;
      const double bound = r.max_drop_increase() * std::max(*before, kDropRateFloor);
      if (*after <= bound) continue;
      const std::string why = absl::StrFormat(
          "automatic abort: on node %s, drops by %s rose from %.1f/s (version %d) to %.1f/s "
          "(version %d), over %gx",
          node, reason, *before, r.stable_version(), *after, r.version(), r.max_drop_increase());
      LogWarning("aborting a rollout: drops rose on a canary", {{"reason", why}});
      CallScope call(*this, "AutoAbort");
      auto aborted = Abort(call, r.version(), why);
      return absl::IsAborted(aborted.status()) ? absl::OkStatus() : aborted.status();
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::PushResponse> ControlService::Abort(CallScope& call, uint64_t version,
                                                       const std::string& reason) {
  // What the other nodes kept comes back on the canaries, as a new version
  // for all (so that versions only grow), failsafe rules included. MakeLive
  // refuses it (Aborted) if `version` stopped being the rollout meanwhile.
  const std::shared_ptr<const v1::PolicyVersion> stable = live_.Stable();
  if (!stable) return absl::AbortedError("no canary rollout is in progress");
  return MakeLive(call, {.policy = stable->policy(),
                         .reason = reason,
                         .allow_failsafe_change = true,
                         .rollback_of = stable->version(),
                         .aborts_rollout = version});
}

std::vector<std::string> ControlService::LiveAgents() const {
  std::vector<std::string> nodes;
  for (const v1::AgentState& a : agents_->States()) {
    if (!a.stale()) nodes.push_back(a.status().node());
  }
  return nodes;
}

// Every replica runs the rollout's timer; the store lets one take each
// step, and the others load what it did (StoreFollower).
absl::Status ControlService::TakenElsewhere(uint64_t version, const absl::Status& why) {
  LogInfo("rollout step taken by another replica",
          {{"version", version}, {"why", std::string(why.message())}});
  return absl::OkStatus();
}

absl::Status ControlService::NextRolloutStep(const v1::PolicyVersion& live) {
  CallScope call(*this, "RolloutStep");
  const Caller& caller = call.caller();
  std::lock_guard<std::mutex> lock(push_mu_);
  if (!rollout_ || rollout_->version() != live.version() ||
      rollout_->step() != live.rollout().step() || rollout_->next_step_unix_nanos() == 0) {
    return absl::OkStatus();  // promoted, aborted or replaced meanwhile
  }
  v1::Rollout next = *rollout_;
  const uint32_t step = next.step() + 1;
  const uint32_t percent = next.steps(static_cast<int>(step));
  const std::string where = absl::StrCat("step ", step + 1, " of ", next.steps_size(), ": ");
  if (percent >= 100) {
    const absl::Status promoted = store_.PromoteRollout(
        next.version(),
        {caller.principal, caller.role, "RolloutStep", "ok",
         absl::StrCat(where, "100%: canary version ", next.version(), " is live on every node")});
    if (absl::IsNotFound(promoted)) return TakenElsewhere(next.version(), promoted);
    RETURN_IF_ERROR(promoted);
    LogInfo("staged rollout complete", {{"version", next.version()}});
    rollout_.reset();
    stable_.reset();
    Publish(*live_.Live());
    return absl::OkStatus();
  }
  std::vector<std::string> nodes(next.nodes().begin(), next.nodes().end());
  for (std::string& n : ChooseShare(LiveAgents(), percent)) nodes.push_back(std::move(n));
  std::sort(nodes.begin(), nodes.end());
  nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
  next.set_step(step);
  *next.mutable_nodes() = {nodes.begin(), nodes.end()};
  next.set_next_step_unix_nanos(
      absl::ToUnixNanos(absl::Now() + absl::Seconds(next.step_interval_seconds())));
  const absl::Status stepped = store_.UpdateRollout(
      next, {caller.principal, caller.role, "RolloutStep", "ok",
             absl::StrCat(where, "canary version ", next.version(), " on ", DescribeTargets(next),
                          ": ", absl::StrJoin(next.nodes(), ", "))});
  if (absl::IsFailedPrecondition(stepped) || absl::IsNotFound(stepped)) {
    return TakenElsewhere(next.version(), stepped);
  }
  RETURN_IF_ERROR(stepped);
  LogInfo("staged rollout step",
          {{"version", next.version()}, {"step", static_cast<int64_t>(step + 1)}});
  rollout_ = std::move(next);
  Publish(*live_.Live());
  return absl::OkStatus();
}

void ControlService::RevertUnconfirmed(const v1::PolicyVersion& pending) {
  const uint64_t to = pending.version() - 1;
  auto previous = store_.Get(to);
  absl::Status s = previous.status();
  if (previous.ok()) {
    CallScope call(*this, "Revert");
    const std::string reason =
        absl::StrCat("version ", pending.version(), " was not confirmed by ",
                     FormatUnixNanos(pending.confirm_by_unix_nanos()), ": back to version ", to);
    // What was live before, failsafe rules included, comes back as it was.
    s = MakeLive(call, {.policy = previous->policy(),
                        .reason = reason,
                        .allow_failsafe_change = true,
                        .rollback_of = to,
                        .revert_of = pending.version()})
            .status();
    if (s.ok()) LogWarning("reverted an unconfirmed version", {{"reason", reason}});
  }
  if (!s.ok() && !absl::IsAborted(s)) {
    // Retried at the next wake-up; the agents go back by themselves meanwhile.
    LogError("cannot revert an unconfirmed version",
             {{"version", pending.version()}, {"error", std::string(s.message())}});
    std::unique_lock<std::mutex> lock(revert_mu_);
    revert_cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; });
  }
}

size_t ControlService::CheckCredentials() {
  if (crl_) crl_->Refresh();
  const absl::Time now = absl::Now();
  const size_t ended = live_.EndStreams(
      [&](const PeerCertificate& cert) { return CheckPeer(cert, crl_.get(), now); });
  if (ended > 0) {
    LogWarning("ended policy streams whose certificates no longer hold",
               {{"streams", static_cast<int64_t>(ended)}});
  }
  return ended;
}

void ControlService::Count(absl::string_view method, const absl::Status& status) {
  requests_
      .Add({{"method", std::string(method)},
            {"code", std::string(absl::StatusCodeToString(status.code()))}})
      .Increment();
}

void ControlService::Publish(v1::PolicyVersion version) {
  if (shadow_) {
    *version.mutable_shadow() = *shadow_;
  } else {
    version.clear_shadow();
  }
  version.set_shadow_generation(shadow_generation_);
  const bool canary = rollout_ && rollout_->version() == version.version() && stable_;
  if (canary) {
    *version.mutable_rollout() = *rollout_;
  } else {
    version.clear_rollout();
  }
  agents_->SetExpected({.live_hash = version.content_hash(),
                        .stable_hash = canary ? stable_->content_hash() : "",
                        .rollout = canary ? rollout_ : std::nullopt});
  live_.Publish(std::make_shared<const v1::PolicyVersion>(std::move(version)),
                canary ? stable_ : nullptr);
  { std::lock_guard<std::mutex> lock(revert_mu_); }
  revert_cv_.notify_all();  // a new deadline, or none
}

absl::StatusOr<v1::PushResponse> ControlService::MakeLive(CallScope& call, const Change& change) {
  std::lock_guard<std::mutex> lock(push_mu_);
  // Waiting behind another push, the client may have given up.
  if (call.abandoned()) return Gone();
  // Checked against what was loaded; when another replica changed the
  // store meanwhile, loaded and checked again (a rollback or revert that no
  // longer applies is then refused by its own check).
  constexpr int kAttempts = 8;
  for (int attempt = 1;; ++attempt) {
    if (!loaded_) RETURN_IF_ERROR(Load());
    absl::StatusOr<v1::PushResponse> made = MakeLiveOnce(call, change);
    if (!StoreMoved(made.status()) || attempt == kAttempts) return made;
    loaded_ = false;
  }
}

absl::StatusOr<v1::PushResponse> ControlService::MakeLiveOnce(CallScope& call,
                                                              const Change& change) {
  const v1::Policy& policy = change.policy;
  const std::string& reason = change.reason;
  const bool allow_failsafe_change = change.allow_failsafe_change;
  const uint64_t rollback_of = change.rollback_of;
  const Caller& caller = call.caller();
  const std::string method(call.method());
  // Only this function (under push_mu_) changes what is live.
  const std::shared_ptr<const v1::PolicyVersion> live = live_.Live();
  const v1::Policy* live_policy = live ? &live->policy() : nullptr;
  if (change.revert_of != 0 &&
      (!live || live->version() != change.revert_of || !AwaitsConfirmation(*live))) {
    return absl::AbortedError("the version to revert is no longer live and unconfirmed");
  }
  if (change.promotes_shadow != 0 && (!shadow_ || shadow_->id() != change.promotes_shadow)) {
    return call.Refuse("policy", absl::AbortedError(absl::StrCat(
                                     "shadow candidate ", change.promotes_shadow,
                                     " is no longer the current one: nothing was promoted")));
  }
  if (change.aborts_rollout != 0 && (!rollout_ || rollout_->version() != change.aborts_rollout)) {
    return call.Refuse("policy", absl::AbortedError(absl::StrCat(
                                     "version ", change.aborts_rollout,
                                     " is no longer a canary in progress: nothing was aborted")));
  }
  if (rollout_ && rollback_of == 0 && change.revert_of == 0) {
    return call.Refuse(
        "policy",
        absl::FailedPreconditionError(absl::StrCat(
            "version ", rollout_->version(), " is a canary on ", DescribeTargets(*rollout_),
            ": promote it (portcullisctl rollout promote) or abort it (rollout abort), then "
            "push; an admin may roll back meanwhile")));
  }
  if (change.canary && (!live || change.confirm_within > absl::ZeroDuration())) {
    return call.Refuse("policy", absl::FailedPreconditionError(
                                     !live ? "a canary needs a live version for the other nodes "
                                             "to keep: push one first"
                                           : "a canary cannot also await confirmation: its "
                                             "rollout is promoted or aborted instead"));
  }
  if (change.revert_of == 0 && live && AwaitsConfirmation(*live) && rollback_of == 0) {
    return call.Refuse(
        "policy",
        absl::FailedPreconditionError(absl::StrCat(
            "version ", live->version(), " awaits confirmation until ",
            FormatUnixNanos(live->confirm_by_unix_nanos()), ": confirm it (portcullisctl confirm ",
            live->version(), ") or let it revert, then push; an admin may roll back meanwhile")));
  }
  if (change.confirm_within > absl::ZeroDuration() && !live) {
    return call.Refuse("policy", absl::FailedPreconditionError(
                                     "--confirm-within needs a live version to go back to"));
  }
  const std::vector<v1::Finding> findings =
      Admit(policy, live_policy, allow_failsafe_change, options_.baseline);
  if (HasErrors(findings)) {
    // Validation errors and baseline refusals read alike: each names the rule.
    return call.Refuse("policy", absl::FailedPreconditionError(
                                     absl::StrCat("policy refused:\n", FormatFindings(findings))));
  }
  v1::PushResponse response;
  const std::string hash = policy::ContentHash(policy);
  if (live && live->content_hash() == hash) {
    response.set_version(live->version());
    response.set_content_hash(hash);
    response.set_unchanged(true);
    // Audited like any change: a push that cannot be audited fails.
    if (absl::Status s = store_.AppendAudit({caller.principal, caller.role, method, "ok",
                                             absl::StrCat("unchanged: equals the live version ",
                                                          live->version(), "; reason: ", reason),
                                             live->version()});
        !s.ok()) {
      LogError("cannot audit an unchanged push", {{"error", std::string(s.message())}});
      return absl::Status(s.code(),
                          absl::StrCat("the policy equals the live version ", live->version(),
                                       ", but the push could not be audited: ", s.message()));
    }
    return response;
  }
  v1::PolicyVersion version;
  *version.mutable_policy() = policy;
  version.set_content_hash(hash);
  version.set_author(caller.principal);
  version.set_reason(reason);
  version.set_rollback_of(rollback_of);
  std::string detail =
      rollback_of ? absl::StrCat("rolled back to version ", rollback_of, "; ") : std::string();
  if (change.promotes_shadow) {
    absl::StrAppend(&detail, "promoted shadow candidate ", change.promotes_shadow, "; ");
  } else if (shadow_) {
    absl::StrAppend(&detail, "ends shadow candidate ", shadow_->id(), "; ");
  }
  if (change.canary) {
    *version.mutable_rollout() = *change.canary;
    version.mutable_rollout()->set_stable_version(live->version());
    if (change.canary->max_drop_increase() > 0) {
      for (std::string& r : ReasonsTouched(*live_policy, policy)) {
        version.mutable_rollout()->add_watched_reasons(std::move(r));
      }
    }
    absl::StrAppend(
        &detail, "canary on ", DescribeTargets(*change.canary),
        change.canary->steps().empty()
            ? std::string()
            : absl::StrCat(" (", absl::StrJoin(change.canary->nodes(), ", "), "), a step every ",
                           change.canary->step_interval_seconds(), " s"),
        "; version ", live->version(), " stays on the other nodes; ");
  } else if (change.aborts_rollout) {
    absl::StrAppend(&detail, "aborted the rollout of version ", change.aborts_rollout, "; ");
  } else if (rollout_) {
    absl::StrAppend(&detail, "ends the rollout of version ", rollout_->version(), "; ");
  }
  if (change.confirm_within > absl::ZeroDuration()) {
    version.set_confirm_by_unix_nanos(absl::ToUnixNanos(absl::Now() + change.confirm_within));
    absl::StrAppend(&detail, "to confirm until ", FormatUnixNanos(version.confirm_by_unix_nanos()),
                    "; ");
  }
  if (live_policy) {
    const auto changes = policy::DiffPolicies(*live_policy, policy);
    absl::StrAppend(&detail, changes.size(), " change", changes.size() == 1 ? "" : "s",
                    " from version ", live->version(), "; ");
  }
  absl::StrAppend(&detail, "reason: ", reason);
  if (call.abandoned()) return Gone();
  // A store only this process writes changes only under push_mu_, so what
  // was loaded stays current: no check, and no reload before the next push.
  const bool shared = store_.Shared();
  auto stored = store_.AddVersion(std::move(version),
                                  {caller.principal, caller.role, method, "ok", detail, 0},
                                  shared ? std::optional<uint64_t>(generation_) : std::nullopt);
  if (StoreMoved(stored.status())) return stored.status();
  // This change moved the generation: load before the next is checked.
  if (shared) loaded_ = false;
  if (!stored.ok()) {
    LogError("cannot store a version", {{"error", std::string(stored.status().message())}});
    return stored.status();
  }
  LogInfo("new live version", {{"version", stored->version()},
                               {"author", caller.principal},
                               {"method", method},
                               {"hash", hash}});
  response.set_version(stored->version());
  response.set_content_hash(hash);
  // The store ended the candidate: it was judged against the version before.
  if (shadow_) ++shadow_generation_;
  shadow_.reset();
  // And it ended the rollout in progress; this version may start one.
  rollout_ = stored->has_rollout() ? std::optional<v1::Rollout>(stored->rollout()) : std::nullopt;
  stable_ = rollout_ ? live : nullptr;
  Publish(*std::move(stored));
  return response;
}

absl::StatusOr<v1::PushResponse> ControlService::AddShadow(CallScope& call,
                                                           const v1::PushRequest& request) {
  const Caller& caller = call.caller();
  if (request.confirm_within_seconds() != 0) {
    return call.Refuse("policy", absl::InvalidArgumentError(
                                     "a shadow candidate changes nothing to confirm: "
                                     "--confirm-within applies when it is promoted (push it)"));
  }
  std::lock_guard<std::mutex> lock(push_mu_);
  if (call.abandoned()) {
    return absl::DeadlineExceededError(
        "nothing was stored: the client's deadline passed (or it went away) first");
  }
  const std::shared_ptr<const v1::PolicyVersion> live = live_.Live();
  if (!live) {
    return call.Refuse("policy", absl::FailedPreconditionError(
                                     "a shadow candidate is judged beside the live version, and "
                                     "there is none yet: push one first"));
  }
  if (rollout_) {
    return call.Refuse(
        "policy",
        absl::FailedPreconditionError(absl::StrCat(
            "version ", rollout_->version(), " is a canary on ", DescribeTargets(*rollout_),
            ": nodes run two versions, so a shadow would be judged against either; "
            "promote or abort the rollout first")));
  }
  // The checks of a push, so that what was previewed can be promoted.
  const std::vector<v1::Finding> findings =
      Admit(request.policy(), &live->policy(), request.allow_failsafe_change(), options_.baseline);
  if (HasErrors(findings)) {
    return call.Refuse("policy", absl::FailedPreconditionError(
                                     absl::StrCat("policy refused:\n", FormatFindings(findings))));
  }
  const std::string hash = policy::ContentHash(request.policy());
  if (hash == live->content_hash()) {
    return call.Refuse("policy", absl::InvalidArgumentError(absl::StrCat(
                                     "the policy equals the live version ", live->version(),
                                     ": as a shadow it would change nothing")));
  }
  v1::ShadowCandidate candidate;
  *candidate.mutable_policy() = request.policy();
  candidate.set_content_hash(hash);
  candidate.set_author(caller.principal);
  candidate.set_reason(request.reason());
  candidate.set_live_version(live->version());
  const auto changes = policy::DiffPolicies(live->policy(), request.policy());
  std::string detail =
      absl::StrCat("shadow candidate: ", changes.size(), " change", changes.size() == 1 ? "" : "s",
                   " from version ", live->version(), "; reason: ", request.reason());
  if (shadow_) absl::StrAppend(&detail, "; replaces shadow candidate ", shadow_->id());
  auto stored = store_.AddShadow(
      std::move(candidate),
      {caller.principal, caller.role, std::string(call.method()), "ok", std::move(detail), 0});
  if (!stored.ok()) return stored.status();
  LogInfo("new shadow candidate",
          {{"shadow", stored->id()}, {"author", caller.principal}, {"hash", hash}});
  v1::PushResponse response;
  response.set_shadow_id(stored->id());
  response.set_content_hash(hash);
  shadow_ = *std::move(stored);
  ++shadow_generation_;
  Publish(*live);
  return response;
}

grpc::ServerUnaryReactor* ControlService::Push(grpc::CallbackServerContext* ctx,
                                               const v1::PushRequest* request,
                                               v1::PushResponse* response) {
  CallScope call(*this, ctx, "Push", Permission::kEdit);
  if (!call.authorized()) return call.Finish();
  if (request->reason().empty()) {
    return call.Finish(
        call.Refuse("policy", absl::InvalidArgumentError("a push needs a reason (--reason)")));
  }
  std::optional<v1::Rollout> canary;
  if (!request->steps().empty()) {
    const std::vector<uint32_t> steps(request->steps().begin(), request->steps().end());
    absl::Status bad = CheckSteps(steps);
    if (bad.ok() && steps.size() < 2) {
      bad = absl::InvalidArgumentError("--steps: at least two steps, the last 100%");
    }
    if (bad.ok() && (!request->nodes().empty() || !request->node_selector().empty())) {
      bad = absl::InvalidArgumentError("--steps choose the nodes: no --nodes or --node-selector");
    }
    if (bad.ok() && (request->step_interval_seconds() == 0 || request->shadow())) {
      bad = absl::InvalidArgumentError(request->shadow()
                                           ? "a shadow candidate is judged on every node at once"
                                           : "--steps needs --interval");
    }
    if (!bad.ok()) return call.Finish(call.Refuse("policy", bad));
    canary.emplace();
    *canary->mutable_steps() = request->steps();
    canary->set_step_interval_seconds(request->step_interval_seconds());
    for (std::string& n : ChooseShare(LiveAgents(), steps[0])) canary->add_nodes(std::move(n));
    canary->set_next_step_unix_nanos(
        absl::ToUnixNanos(absl::Now() + absl::Seconds(request->step_interval_seconds())));
  } else if (!request->nodes().empty() || !request->node_selector().empty()) {
    if (!request->nodes().empty() && !request->node_selector().empty()) {
      return call.Finish(call.Refuse(
          "policy", absl::InvalidArgumentError("name canary nodes or a node selector, not both")));
    }
    if (request->shadow()) {
      return call.Finish(call.Refuse(
          "policy", absl::InvalidArgumentError(
                        "a shadow candidate is judged on every node: it takes no canary nodes")));
    }
    canary.emplace();
    *canary->mutable_nodes() = request->nodes();
    *canary->mutable_node_selector() = request->node_selector();
  }
  if (request->max_drop_increase() != 0) {
    if (!canary || !(request->max_drop_increase() > 1) || request->max_drop_increase() > 1e6) {
      return call.Finish(call.Refuse(
          "policy", absl::InvalidArgumentError(
                        canary ? "--max-drop-increase: a factor above 1 (e.g. 5x)"
                               : "--max-drop-increase watches a canary or staged rollout: give "
                                 "--nodes, --node-selector or --steps")));
    }
    canary->set_max_drop_increase(request->max_drop_increase());
  }
  auto result =
      request->shadow()
          ? AddShadow(call, *request)
          : MakeLive(call, {.policy = request->policy(),
                            .reason = request->reason(),
                            .allow_failsafe_change = request->allow_failsafe_change(),
                            .confirm_within = absl::Seconds(request->confirm_within_seconds()),
                            .canary = std::move(canary)});
  if (result.ok()) *response = *std::move(result);
  return call.Finish(result.status());
}

grpc::ServerUnaryReactor* ControlService::Rollback(grpc::CallbackServerContext* ctx,
                                                   const v1::RollbackRequest* request,
                                                   v1::PushResponse* response) {
  CallScope call(*this, ctx, "Rollback", Permission::kRollback);
  if (!call.authorized()) return call.Finish();
  if (request->reason().empty()) {
    return call.Finish(
        call.Refuse("policy", absl::InvalidArgumentError("a rollback needs a reason (--reason)")));
  }
  auto target = store_.Get(request->to_version());
  if (!target.ok()) return call.Finish(call.Refuse("policy", target.status()));
  auto result = MakeLive(call, {.policy = target->policy(),
                                .reason = request->reason(),
                                .allow_failsafe_change = request->allow_failsafe_change(),
                                .rollback_of = request->to_version()});
  if (result.ok()) *response = *std::move(result);
  return call.Finish(result.status());
}

grpc::ServerUnaryReactor* ControlService::Validate(grpc::CallbackServerContext* ctx,
                                                   const v1::ValidateRequest* request,
                                                   v1::ValidateResponse* response) {
  CallScope call(*this, ctx, "Validate", Permission::kEdit);
  if (!call.authorized()) return call.Finish();
  const std::shared_ptr<const v1::PolicyVersion> live = live_.Live();
  for (v1::Finding& f : Admit(request->policy(), live ? &live->policy() : nullptr,
                              request->allow_failsafe_change(), options_.baseline)) {
    *response->add_findings() = std::move(f);
  }
  response->set_valid(!HasErrors({response->findings().begin(), response->findings().end()}));
  return call.Finish(absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::Diff(grpc::CallbackServerContext* ctx,
                                               const v1::DiffRequest* request,
                                               v1::DiffResponse* response) {
  CallScope call(*this, ctx, "Diff", Permission::kEdit);
  if (!call.authorized()) return call.Finish();
  const std::shared_ptr<const v1::PolicyVersion> live = live_.Live();
  const v1::Policy empty;
  response->set_live_version(live ? live->version() : 0);
  for (const policy::Change& c :
       policy::DiffPolicies(live ? live->policy() : empty, request->policy())) {
    v1::DiffLine* line = response->add_lines();
    line->set_op(c.op == policy::Change::Op::kAdded     ? v1::DiffLine::OP_ADDED
                 : c.op == policy::Change::Op::kRemoved ? v1::DiffLine::OP_REMOVED
                                                        : v1::DiffLine::OP_CHANGED);
    line->set_section(c.section);
    line->set_text(c.text);
  }
  return call.Finish(absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::History(grpc::CallbackServerContext* ctx,
                                                  const v1::HistoryRequest* request,
                                                  v1::HistoryResponse* response) {
  CallScope call(*this, ctx, "History", Permission::kRead);
  if (!call.authorized()) return call.Finish();
  auto versions = store_.History(request->limit());
  if (!versions.ok()) return call.Finish(versions.status());
  for (v1::PolicyVersion& v : *versions) *response->add_versions() = std::move(v);
  if (response->versions_size()) response->set_live_version(response->versions(0).version());
  return call.Finish(absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::Get(grpc::CallbackServerContext* ctx,
                                              const v1::GetRequest* request,
                                              v1::PolicyVersion* response) {
  CallScope call(*this, ctx, "Get", Permission::kRead);
  if (!call.authorized()) return call.Finish();
  if (request->version() == 0) {
    const std::shared_ptr<const v1::PolicyVersion> live = live_.Live();
    if (!live) return call.Finish(absl::NotFoundError("no policy has been pushed yet"));
    *response = *live;
    return call.Finish(absl::OkStatus());
  }
  auto version = store_.Get(request->version());
  if (version.ok()) *response = *std::move(version);
  return call.Finish(version.status());
}

grpc::ServerUnaryReactor* ControlService::Audit(grpc::CallbackServerContext* ctx,
                                                const v1::AuditRequest* request,
                                                v1::AuditResponse* response) {
  CallScope call(*this, ctx, "Audit", Permission::kRead);
  if (!call.authorized()) return call.Finish();
  constexpr uint32_t kPage = 1000;
  const uint32_t limit =
      request->limit() == 0 || request->limit() > kPage ? kPage : request->limit();
  auto entries = store_.Audit(request->after_seq(), limit + 1);
  if (!entries.ok()) return call.Finish(entries.status());
  response->set_more(entries->size() > limit);
  if (entries->size() > limit) entries->pop_back();
  for (v1::AuditEntry& e : *entries) *response->add_entries() = std::move(e);
  return call.Finish(absl::OkStatus());
}

// The node an agent's certificate speaks for: the NODE of
// `portcullis-agent:NODE`, or "" (any) for a shared certificate where those
// are allowed. PermissionDenied when the certificate may not speak for `node`.
absl::StatusOr<std::string> ControlService::BoundNode(const Caller& caller,
                                                      absl::string_view node) const {
  if (options_.insecure_plaintext) return std::string();
  if (absl::StartsWith(caller.principal, kNodeCertPrefix)) {
    const std::string bound = caller.principal.substr(kNodeCertPrefix.size());
    if (node != bound) {
      return absl::PermissionDeniedError(
          absl::StrCat("the certificate \"", caller.principal, "\" speaks for node \"", bound,
                       "\" only, not \"", absl::CEscape(node), "\""));
    }
    return bound;
  }
  if (options_.shared_agent_certs) return std::string();
  return absl::PermissionDeniedError(
      absl::StrCat("the agent certificate \"", caller.principal,
                   "\" names no node: agent certificates are "
                   "named ",
                   kNodeCertPrefix,
                   "NODE, one per node (docs/CONTROL.md), unless the service runs "
                   "with --allow-shared-agent-certs"));
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ControlService::Watch(grpc::CallbackServerContext* ctx,
                                                                  const grpc::ByteBuffer* raw) {
  constexpr absl::string_view kMethod = "Watch";
  v1::WatchRequest request;
  grpc::ByteBuffer copy = *raw;  // the parse consumes it; slices are shared, not copied
  const grpc::Status decoded =
      grpc::SerializationTraits<v1::WatchRequest>::Deserialize(&copy, &request);
  auto caller = authorizer_.Authorize(*ctx, kMethod, Permission::kAgent);
  if (caller.ok() && !decoded.ok()) {
    caller = absl::InvalidArgumentError(
        absl::StrCat("the watch request does not parse: ", decoded.error_message()));
  }
  absl::StatusOr<std::string> bound =
      caller.ok() ? BoundNode(*caller, request.node()) : caller.status();
  if (caller.ok() && !bound.ok()) refusals_.Refuse(*caller, kMethod, "node", bound.status());
  absl::StatusOr<grpc::ServerWriteReactor<grpc::ByteBuffer>*> stream =
      bound.ok() ? live_.Open(ctx, request,
                              {*bound, bound->empty() ? 0 : options_.max_streams_per_node_cert,
                               caller->certificate})
                 : bound.status();
  Count(kMethod, stream.status());
  if (stream.ok()) return *stream;
  class Refused : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
   public:
    explicit Refused(const grpc::Status& s) { Finish(s); }
    void OnDone() override { delete this; }
  };
  return new Refused(ToGrpc(stream.status()));
}

grpc::ServerUnaryReactor* ControlService::ReportStatus(grpc::CallbackServerContext* ctx,
                                                       const v1::AgentStatus* request,
                                                       v1::ReportStatusResponse*) {
  CallScope call(*this, ctx, "ReportStatus", Permission::kAgent);
  if (!call.authorized()) return call.Finish();
  if (request->node().empty()) {
    return call.Finish(absl::InvalidArgumentError("the status names no node"));
  }
  if (absl::StatusOr<std::string> bound = BoundNode(call.caller(), request->node()); !bound.ok()) {
    return call.Finish(call.Refuse("node", bound.status()));
  }
  if (absl::Status s = agents_->Report(*request); !s.ok()) return call.Finish(s);
  if (agent_share_) agent_share_->Publish(*request);
  if (request->reverted_version() != 0 && agents_->FirstReportOfRevert(*request)) {
    const Caller& caller = call.caller();
    absl::Status s = store_.AppendAudit(
        {caller.principal, caller.role, "Revert", "ok",
         absl::StrCat("node ", request->node(), " went back by itself from version ",
                      request->reverted_version(), " to ", request->reverted_to_version(), " at ",
                      FormatUnixNanos(request->reverted_unix_nanos()),
                      ": not confirmed within its window"),
         request->reverted_version()});
    if (!s.ok()) LogError("cannot audit an agent's revert", {{"error", std::string(s.message())}});
  }
  return call.Finish(absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::Confirm(grpc::CallbackServerContext* ctx,
                                                  const v1::ConfirmRequest* request,
                                                  v1::PolicyVersion* response) {
  CallScope call(*this, ctx, "Confirm", Permission::kEdit);
  if (!call.authorized()) return call.Finish();
  std::lock_guard<std::mutex> lock(push_mu_);  // against a revert racing it
  const std::shared_ptr<const v1::PolicyVersion> live = live_.Live();
  const uint64_t asked = request->version();
  auto refuse = [&](std::string why) {
    return call.Finish(call.Refuse("policy", absl::FailedPreconditionError(std::move(why))));
  };
  if (!live || live->version() != asked) {
    auto version = store_.Get(asked);
    if (!version.ok()) return call.Finish(call.Refuse("policy", version.status()));
    if (version->confirm_by_unix_nanos() != 0 && version->confirmed_unix_nanos() == 0) {
      return refuse(absl::StrCat("version ", asked, " was not confirmed by ",
                                 FormatUnixNanos(version->confirm_by_unix_nanos()),
                                 " and was reverted; push it again to retry"));
    }
    return refuse(absl::StrCat("version ", asked, " is not the live version (",
                               live ? live->version() : 0, "): there is nothing to confirm"));
  }
  if (live->confirm_by_unix_nanos() == 0) {
    return refuse(absl::StrCat("version ", asked,
                               " was not pushed with --confirm-within: there is nothing to "
                               "confirm"));
  }
  if (!AwaitsConfirmation(*live)) {
    *response = *live;  // confirmed already: saying so again is harmless
    response->clear_policy();
    return call.Finish(absl::OkStatus());
  }
  if (absl::Now() > absl::FromUnixNanos(live->confirm_by_unix_nanos())) {
    return refuse(absl::StrCat("the confirmation window of version ", asked, " closed at ",
                               FormatUnixNanos(live->confirm_by_unix_nanos()),
                               ": it is being reverted; push it again to retry"));
  }
  const Caller& caller = call.caller();
  auto confirmed = store_.Confirm(
      asked, {caller.principal, caller.role, "Confirm", "ok",
              absl::StrCat("confirmed before ", FormatUnixNanos(live->confirm_by_unix_nanos()))});
  if (!confirmed.ok()) return call.Finish(confirmed.status());
  LogInfo("version confirmed", {{"version", asked}, {"by", caller.principal}});
  Publish(*confirmed);
  *response = *std::move(confirmed);
  response->clear_policy();
  return call.Finish(absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::Status(grpc::CallbackServerContext* ctx,
                                                 const v1::StatusRequest*,
                                                 v1::StatusResponse* response) {
  CallScope call(*this, ctx, "Status", Permission::kRead);
  if (!call.authorized()) return call.Finish();
  if (const std::shared_ptr<const v1::PolicyVersion> live = live_.Live()) {
    response->set_live_version(live->version());
    response->set_live_hash(live->content_hash());
    if (live->has_rollout()) *response->mutable_rollout() = live->rollout();
  }
  // From the broadcast, not under push_mu_: status never waits for a push.
  if (const auto stable = live_.Stable()) response->set_stable_hash(stable->content_hash());
  if (follower_) {
    if (auto why = follower_->Unreachable()) response->set_store_unreachable(*why);
  }
  for (v1::AgentState& st : agents_->States()) *response->add_agents() = std::move(st);
  return call.Finish(absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::ShadowReport(grpc::CallbackServerContext* ctx,
                                                       const v1::ShadowReportRequest* request,
                                                       v1::ShadowReportResponse* response) {
  CallScope call(*this, ctx, "ShadowReport", Permission::kRead);
  if (!call.authorized()) return call.Finish();
  const std::shared_ptr<const v1::PolicyVersion> live = live_.Live();
  *response = BuildShadowReport(live.get(), agents_->States(), std::min(request->top(), 1000u));
  return call.Finish(absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::PromoteShadow(grpc::CallbackServerContext* ctx,
                                                        const v1::PromoteShadowRequest* request,
                                                        v1::PushResponse* response) {
  CallScope call(*this, ctx, "PromoteShadow", Permission::kEdit);
  if (!call.authorized()) return call.Finish();
  if (request->reason().empty()) {
    return call.Finish(
        call.Refuse("policy", absl::InvalidArgumentError("a promotion needs a reason (--reason)")));
  }
  const std::shared_ptr<const v1::PolicyVersion> live = live_.Live();
  if (!live || !live->has_shadow()) {
    return call.Finish(call.Refuse(
        "policy", absl::FailedPreconditionError("there is no shadow candidate to promote")));
  }
  const uint64_t id = live->shadow().id();
  if (request->id() != 0 && request->id() != id) {
    return call.Finish(call.Refuse(
        "policy", absl::FailedPreconditionError(absl::StrCat(
                      "the shadow candidate is ", id, ", not ", request->id(),
                      ": review its report (portcullisctl shadow report), then promote it"))));
  }
  auto result = MakeLive(call, {.policy = live->shadow().policy(),
                                .reason = request->reason(),
                                .allow_failsafe_change = request->allow_failsafe_change(),
                                .promotes_shadow = id});
  if (result.ok()) *response = *std::move(result);
  return call.Finish(result.status());
}

grpc::ServerUnaryReactor* ControlService::DiscardShadow(grpc::CallbackServerContext* ctx,
                                                        const v1::DiscardShadowRequest* request,
                                                        v1::DiscardShadowResponse* response) {
  CallScope call(*this, ctx, "DiscardShadow", Permission::kEdit);
  if (!call.authorized()) return call.Finish();
  if (request->reason().empty()) {
    return call.Finish(
        call.Refuse("policy", absl::InvalidArgumentError("discarding needs a reason (--reason)")));
  }
  std::lock_guard<std::mutex> lock(push_mu_);
  if (!shadow_ || (request->id() != 0 && request->id() != shadow_->id())) {
    return call.Finish(call.Refuse(
        "policy", absl::FailedPreconditionError(
                      shadow_ ? absl::StrCat("the shadow candidate is ", shadow_->id(), ", not ",
                                             request->id(), ": nothing was discarded")
                              : std::string("there is no shadow candidate to discard"))));
  }
  const Caller& caller = call.caller();
  const uint64_t id = shadow_->id();
  if (absl::Status s = store_.DiscardShadow(
          id, {caller.principal, caller.role, "DiscardShadow", "ok",
               absl::StrCat("discarded shadow candidate ", id, "; reason: ", request->reason())});
      !s.ok()) {
    return call.Finish(s);
  }
  LogInfo("shadow candidate discarded", {{"shadow", id}, {"by", caller.principal}});
  shadow_.reset();
  ++shadow_generation_;
  if (const std::shared_ptr<const v1::PolicyVersion> live = live_.Live()) Publish(*live);
  response->set_id(id);
  return call.Finish(absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::PromoteRollout(grpc::CallbackServerContext* ctx,
                                                         const v1::RolloutRequest* request,
                                                         v1::PushResponse* response) {
  CallScope call(*this, ctx, "PromoteRollout", Permission::kEdit);
  if (!call.authorized()) return call.Finish();
  if (request->reason().empty()) {
    return call.Finish(
        call.Refuse("policy", absl::InvalidArgumentError("a promotion needs a reason (--reason)")));
  }
  std::lock_guard<std::mutex> lock(push_mu_);
  if (absl::Status s = IsCurrentRollout(rollout_, request->version()); !s.ok()) {
    return call.Finish(call.Refuse("policy", s));
  }
  const uint64_t version = rollout_->version();
  const Caller& caller = call.caller();
  if (absl::Status s = store_.PromoteRollout(
          version, {caller.principal, caller.role, "PromoteRollout", "ok",
                    absl::StrCat("canary version ", version, " (on ", DescribeTargets(*rollout_),
                                 ") is live on every node; reason: ", request->reason())});
      !s.ok()) {
    return call.Finish(s);
  }
  LogInfo("canary promoted to every node", {{"version", version}, {"by", caller.principal}});
  rollout_.reset();
  stable_.reset();
  const std::shared_ptr<const v1::PolicyVersion> live = live_.Live();
  Publish(*live);
  response->set_version(version);
  response->set_content_hash(live->content_hash());
  return call.Finish(absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::AbortRollout(grpc::CallbackServerContext* ctx,
                                                       const v1::RolloutRequest* request,
                                                       v1::PushResponse* response) {
  CallScope call(*this, ctx, "AbortRollout", Permission::kEdit);
  if (!call.authorized()) return call.Finish();
  if (request->reason().empty()) {
    return call.Finish(
        call.Refuse("policy", absl::InvalidArgumentError("an abort needs a reason (--reason)")));
  }
  const std::shared_ptr<const v1::PolicyVersion> live = live_.Live();
  std::optional<v1::Rollout> rollout;
  if (live && live->has_rollout()) rollout = live->rollout();
  if (absl::Status s = IsCurrentRollout(rollout, request->version()); !s.ok()) {
    return call.Finish(call.Refuse("policy", s));
  }
  auto result = Abort(call, rollout->version(), request->reason());
  if (result.ok()) *response = *std::move(result);
  return call.Finish(result.status());
}

}  // namespace portcullis::control
