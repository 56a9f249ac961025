#include "control/service.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "control/admission.h"
#include "policy/compiler.h"
#include "policy/diff.h"
#include "policy/text.h"
#include "policy/validator.h"

namespace portcullis::control {
namespace {

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

}  // namespace

// One agent's policy stream: the live version at once (unless the agent has
// it), then each newer one. Only the newest pending version is kept, so a
// slow agent or a burst of pushes costs one write, not a queue.
class WatchReactor : public grpc::ServerWriteReactor<v1::PolicyVersion> {
 public:
  WatchReactor(ControlService* service, grpc::CallbackServerContext* ctx,
               const v1::WatchRequest& request)
      : service_(service) {
    std::shared_ptr<const v1::PolicyVersion> live;
    {
      std::lock_guard<std::mutex> lock(service_->watch_mu_);
      service_->watchers_.insert(this);
      service_->watch_streams_.Set(static_cast<double>(service_->watchers_.size()));
      live = service_->live_;
    }
    // Headers at once: the agent learns that the stream is up even when it
    // has the live version already and nothing else is sent.
    ctx->AddInitialMetadata("portcullis-live-version", absl::StrCat(live ? live->version() : 0));
    StartSendInitialMetadata();
    if (live && !(live->version() == request.applied_version() &&
                  live->content_hash() == request.applied_hash())) {
      Offer(std::move(live));
    }
  }

  // Replaces what is pending; writes it unless a write is in flight.
  void Offer(std::shared_ptr<const v1::PolicyVersion> version) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    pending_ = std::move(version);
    if (!writing_) WriteNext();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    current_.reset();
    if (!ok) {
      FinishOnce(grpc::Status::CANCELLED);
      return;
    }
    WriteNext();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    FinishOnce(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(service_->watch_mu_);
      service_->watchers_.erase(this);
      service_->watch_streams_.Set(static_cast<double>(service_->watchers_.size()));
    }
    delete this;
  }

  // At shutdown: end the stream.
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    FinishOnce(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the control service is stopping"));
  }

 private:
  void WriteNext() {
    if (!pending_ || finished_) return;
    current_ = std::move(pending_);
    writing_ = true;
    StartWrite(current_.get());
  }
  void FinishOnce(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  ControlService* service_;
  std::mutex mu_;
  bool writing_ = false;
  bool finished_ = false;
  std::shared_ptr<const v1::PolicyVersion> current_, pending_;
};

ControlService::ControlService(Store& store, ServiceOptions options, prometheus::Registry& registry)
    : store_(store),
      options_(std::move(options)),
      agents_(std::make_shared<AgentRegistry>(options_.stale_after)),
      requests_(prometheus::BuildCounter()
                    .Name("portcullis_control_requests_total")
                    .Help("Calls to the control service, by method and gRPC status code")
                    .Register(registry)),
      refusals_(prometheus::BuildCounter()
                    .Name("portcullis_control_refusals_total")
                    .Help("Refused calls, by method and reason: unauthenticated, "
                          "permission_denied, policy (invalid, or against the baseline)")
                    .Register(registry)),
      live_version_(prometheus::BuildGauge()
                        .Name("portcullis_control_live_version")
                        .Help("The live policy version")
                        .Register(registry)
                        .Add({})),
      watch_streams_(prometheus::BuildGauge()
                         .Name("portcullis_control_watch_streams")
                         .Help("Open agent policy streams")
                         .Register(registry)
                         .Add({})),
      audit_chain_valid_(prometheus::BuildGauge()
                             .Name("portcullis_control_audit_chain_valid")
                             .Help("1 when the audit log's hash chain verified at start, else 0")
                             .Register(registry)
                             .Add({})) {}

absl::StatusOr<std::unique_ptr<ControlService>> ControlService::Create(
    Store& store, ServiceOptions options, prometheus::Registry& registry) {
  std::unique_ptr<ControlService> s(new ControlService(store, std::move(options), registry));
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
  s->refusal_flusher_ = std::thread([svc = s.get()] {
    std::unique_lock<std::mutex> lock(svc->refusals_mu_);
    while (!svc->refusals_cv_.wait_for(lock, std::chrono::seconds(1),
                                       [svc] { return svc->stopping_; })) {
      lock.unlock();
      svc->FlushRefusalSummary();
      lock.lock();
    }
  });
  auto live = store.Live();
  if (!live.ok()) return live.status();
  if (*live) s->Publish(std::make_shared<const v1::PolicyVersion>(**std::move(live)));
  return s;
}

ControlService::~ControlService() {
  {
    std::lock_guard<std::mutex> lock(refusals_mu_);
    stopping_ = true;
  }
  refusals_cv_.notify_all();
  if (refusal_flusher_.joinable()) refusal_flusher_.join();
  FlushRefusalSummary();
  std::lock_guard<std::mutex> lock(watch_mu_);
  for (WatchReactor* w : watchers_) w->Close();
}

absl::StatusOr<ControlService::Caller> ControlService::Authorize(grpc::CallbackServerContext* ctx,
                                                                 absl::string_view method,
                                                                 Permission permission) {
  if (options_.insecure_plaintext) return Caller{"(plaintext)", "any"};
  Caller caller;
  const std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
  if (auth) {
    for (const grpc::string_ref& cn : auth->FindPropertyValues("x509_common_name")) {
      caller.principal.assign(cn.data(), cn.size());
    }
  }
  if (caller.principal.empty()) {
    absl::Status why = absl::UnauthenticatedError(
        "no client certificate: every call needs a certificate issued by the control service's "
        "CA (--cert and --key)");
    Refuse(caller, method, "unauthenticated", why);
    return why;
  }
  std::optional<Role> role;
  {
    std::lock_guard<std::mutex> lock(roles_mu_);
    struct stat st;
    const int64_t mtime =
        stat(options_.role_map_path.c_str(), &st) == 0
            ? static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec
            : -1;
    if (mtime != roles_mtime_ || !roles_) {
      auto loaded = RoleMap::Load(options_.role_map_path);
      if (loaded.ok()) {
        roles_ = *std::move(loaded);
        roles_mtime_ = mtime;
      } else {
        LogError("cannot read the role map; keeping the previous one",
                 {{"error", std::string(loaded.status().message())}});
      }
    }
    if (roles_) role = roles_->RoleOf(caller.principal);
  }
  if (!role) {
    absl::Status why = absl::PermissionDeniedError(absl::StrCat(
        "certificate \"", caller.principal, "\" has no role in ", options_.role_map_path));
    Refuse(caller, method, "permission_denied", why);
    return why;
  }
  caller.role = std::string(RoleName(*role));
  if (!Allows(*role, permission)) {
    absl::Status why =
        absl::PermissionDeniedError(absl::StrCat(method, " needs the role ", RolesWith(permission),
                                                 "; \"", caller.principal, "\" is ", caller.role));
    Refuse(caller, method, "permission_denied", why);
    return why;
  }
  return caller;
}

void ControlService::Refuse(const Caller& caller, absl::string_view method,
                            absl::string_view reason, const absl::Status& why) {
  refusals_.Add({{"method", std::string(method)}, {"reason", std::string(reason)}}).Increment();
  const int64_t second = absl::ToInt64Seconds(AgentRegistry::SteadyNow());
  {
    std::lock_guard<std::mutex> lock(refusals_mu_);
    if (second != refusal_second_) {
      refusal_second_ = second;
      itemised_this_second_ = 0;
    }
    if (itemised_this_second_ >= options_.itemised_refusals_per_second) {
      ++not_itemised_[absl::StrCat(method, "/", reason)];
      return;
    }
    ++itemised_this_second_;
  }
  absl::Status s = store_.AppendAudit({caller.principal, caller.role, std::string(method),
                                       "refused", std::string(why.message()), 0});
  if (!s.ok()) LogError("cannot audit a refusal", {{"error", std::string(s.message())}});
  LogWarning("refused", {{"method", std::string(method)},
                         {"principal", caller.principal},
                         {"reason", std::string(reason)},
                         {"detail", std::string(why.message())}});
}

void ControlService::FlushRefusalSummary() {
  std::map<std::string, int64_t> counts;
  {
    std::lock_guard<std::mutex> lock(refusals_mu_);
    counts.swap(not_itemised_);
  }
  if (counts.empty()) return;
  int64_t total = 0;
  std::vector<std::string> parts;
  for (const auto& [key, n] : counts) {
    total += n;
    parts.push_back(absl::StrCat(key, " x", n));
  }
  const std::string detail =
      absl::StrCat(total, " more refusals, over the itemised rate: ", absl::StrJoin(parts, ", "));
  if (absl::Status s = store_.AppendAudit({"", "", "(many)", "refused", detail, 0}); !s.ok()) {
    LogError("cannot audit refusals", {{"error", std::string(s.message())}});
  }
  LogWarning("refusals over the itemised rate", {{"detail", detail}});
}

grpc::ServerUnaryReactor* ControlService::Done(grpc::CallbackServerContext* ctx,
                                               absl::string_view method,
                                               const absl::Status& status) {
  requests_
      .Add({{"method", std::string(method)},
            {"code", std::string(absl::StatusCodeToString(status.code()))}})
      .Increment();
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpc(status));
  return reactor;
}

std::shared_ptr<const v1::PolicyVersion> ControlService::Live() const {
  std::lock_guard<std::mutex> lock(watch_mu_);
  return live_;
}

void ControlService::Publish(std::shared_ptr<const v1::PolicyVersion> version) {
  live_version_.Set(static_cast<double>(version->version()));
  agents_->SetLiveHash(version->content_hash());
  std::lock_guard<std::mutex> lock(watch_mu_);
  live_ = version;
  for (WatchReactor* w : watchers_) w->Offer(version);
}

absl::StatusOr<v1::PushResponse> ControlService::MakeLive(
    const Caller& caller, absl::string_view method, const v1::Policy& policy, std::string reason,
    bool allow_failsafe_change, uint64_t rollback_of) {
  std::lock_guard<std::mutex> lock(push_mu_);
  // Only this function (under push_mu_) changes what is live.
  const std::shared_ptr<const v1::PolicyVersion> live = Live();
  const v1::Policy* live_policy = live ? &live->policy() : nullptr;
  const std::vector<v1::Finding> findings =
      Admit(policy, live_policy, allow_failsafe_change, options_.baseline);
  if (HasErrors(findings)) {
    // Validation errors and baseline refusals read alike: each names the rule.
    absl::Status why =
        absl::FailedPreconditionError(absl::StrCat("policy refused:\n", FormatFindings(findings)));
    Refuse(caller, method, "policy", why);
    return why;
  }
  v1::PushResponse response;
  const std::string hash = policy::ContentHash(policy);
  if (live && live->content_hash() == hash) {
    response.set_version(live->version());
    response.set_content_hash(hash);
    response.set_unchanged(true);
    store_
        .AppendAudit({caller.principal, caller.role, std::string(method), "ok",
                      absl::StrCat("unchanged: equals the live version ", live->version(),
                                   "; reason: ", reason),
                      live->version()})
        .IgnoreError();
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
  if (live_policy) {
    const auto changes = policy::DiffPolicies(*live_policy, policy);
    absl::StrAppend(&detail, changes.size(), " change", changes.size() == 1 ? "" : "s",
                    " from version ", live->version(), "; ");
  }
  absl::StrAppend(&detail, "reason: ", reason);
  auto stored = store_.AddVersion(
      std::move(version), {caller.principal, caller.role, std::string(method), "ok", detail, 0});
  if (!stored.ok()) {
    LogError("cannot store a version", {{"error", std::string(stored.status().message())}});
    return stored.status();
  }
  LogInfo("new live version", {{"version", stored->version()},
                               {"author", caller.principal},
                               {"method", std::string(method)},
                               {"hash", hash}});
  response.set_version(stored->version());
  response.set_content_hash(hash);
  Publish(std::make_shared<const v1::PolicyVersion>(*std::move(stored)));
  return response;
}

grpc::ServerUnaryReactor* ControlService::Push(grpc::CallbackServerContext* ctx,
                                               const v1::PushRequest* request,
                                               v1::PushResponse* response) {
  auto caller = Authorize(ctx, "Push", Permission::kEdit);
  if (!caller.ok()) return Done(ctx, "Push", caller.status());
  if (request->reason().empty()) {
    absl::Status why = absl::InvalidArgumentError("a push needs a reason (--reason)");
    Refuse(*caller, "Push", "policy", why);
    return Done(ctx, "Push", why);
  }
  auto result = MakeLive(*caller, "Push", request->policy(), request->reason(),
                         request->allow_failsafe_change(), 0);
  if (result.ok()) *response = *std::move(result);
  return Done(ctx, "Push", result.status());
}

grpc::ServerUnaryReactor* ControlService::Rollback(grpc::CallbackServerContext* ctx,
                                                   const v1::RollbackRequest* request,
                                                   v1::PushResponse* response) {
  auto caller = Authorize(ctx, "Rollback", Permission::kRollback);
  if (!caller.ok()) return Done(ctx, "Rollback", caller.status());
  if (request->reason().empty()) {
    absl::Status why = absl::InvalidArgumentError("a rollback needs a reason (--reason)");
    Refuse(*caller, "Rollback", "policy", why);
    return Done(ctx, "Rollback", why);
  }
  auto target = store_.Get(request->to_version());
  if (!target.ok()) {
    Refuse(*caller, "Rollback", "policy", target.status());
    return Done(ctx, "Rollback", target.status());
  }
  auto result = MakeLive(*caller, "Rollback", target->policy(), request->reason(),
                         request->allow_failsafe_change(), request->to_version());
  if (result.ok()) *response = *std::move(result);
  return Done(ctx, "Rollback", result.status());
}

grpc::ServerUnaryReactor* ControlService::Validate(grpc::CallbackServerContext* ctx,
                                                   const v1::ValidateRequest* request,
                                                   v1::ValidateResponse* response) {
  auto caller = Authorize(ctx, "Validate", Permission::kEdit);
  if (!caller.ok()) return Done(ctx, "Validate", caller.status());
  const std::shared_ptr<const v1::PolicyVersion> live = Live();
  for (v1::Finding& f : Admit(request->policy(), live ? &live->policy() : nullptr,
                              request->allow_failsafe_change(), options_.baseline)) {
    *response->add_findings() = std::move(f);
  }
  response->set_valid(!HasErrors({response->findings().begin(), response->findings().end()}));
  return Done(ctx, "Validate", absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::Diff(grpc::CallbackServerContext* ctx,
                                               const v1::DiffRequest* request,
                                               v1::DiffResponse* response) {
  auto caller = Authorize(ctx, "Diff", Permission::kEdit);
  if (!caller.ok()) return Done(ctx, "Diff", caller.status());
  const std::shared_ptr<const v1::PolicyVersion> live = Live();
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
  return Done(ctx, "Diff", absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::History(grpc::CallbackServerContext* ctx,
                                                  const v1::HistoryRequest* request,
                                                  v1::HistoryResponse* response) {
  auto caller = Authorize(ctx, "History", Permission::kRead);
  if (!caller.ok()) return Done(ctx, "History", caller.status());
  auto versions = store_.History(request->limit());
  if (!versions.ok()) return Done(ctx, "History", versions.status());
  for (v1::PolicyVersion& v : *versions) *response->add_versions() = std::move(v);
  if (response->versions_size()) response->set_live_version(response->versions(0).version());
  return Done(ctx, "History", absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::Get(grpc::CallbackServerContext* ctx,
                                              const v1::GetRequest* request,
                                              v1::PolicyVersion* response) {
  auto caller = Authorize(ctx, "Get", Permission::kRead);
  if (!caller.ok()) return Done(ctx, "Get", caller.status());
  if (request->version() == 0) {
    const std::shared_ptr<const v1::PolicyVersion> live = Live();
    if (!live) return Done(ctx, "Get", absl::NotFoundError("no policy has been pushed yet"));
    *response = *live;
    return Done(ctx, "Get", absl::OkStatus());
  }
  auto version = store_.Get(request->version());
  if (version.ok()) *response = *std::move(version);
  return Done(ctx, "Get", version.status());
}

grpc::ServerUnaryReactor* ControlService::Audit(grpc::CallbackServerContext* ctx,
                                                const v1::AuditRequest* request,
                                                v1::AuditResponse* response) {
  auto caller = Authorize(ctx, "Audit", Permission::kRead);
  if (!caller.ok()) return Done(ctx, "Audit", caller.status());
  constexpr uint32_t kPage = 1000;
  const uint32_t limit =
      request->limit() == 0 || request->limit() > kPage ? kPage : request->limit();
  auto entries = store_.Audit(request->after_seq(), limit + 1);
  if (!entries.ok()) return Done(ctx, "Audit", entries.status());
  response->set_more(entries->size() > limit);
  if (entries->size() > limit) entries->pop_back();
  for (v1::AuditEntry& e : *entries) *response->add_entries() = std::move(e);
  return Done(ctx, "Audit", absl::OkStatus());
}

grpc::ServerWriteReactor<v1::PolicyVersion>* ControlService::Watch(
    grpc::CallbackServerContext* ctx, const v1::WatchRequest* request) {
  auto caller = Authorize(ctx, "Watch", Permission::kAgent);
  absl::Status refused = caller.status();
  if (refused.ok()) {
    std::lock_guard<std::mutex> lock(watch_mu_);
    if (watchers_.size() >= options_.max_watch_streams) {
      refused = absl::ResourceExhaustedError(
          absl::StrCat("too many policy streams (", options_.max_watch_streams, ")"));
    }
  }
  requests_
      .Add({{"method", "Watch"}, {"code", std::string(absl::StatusCodeToString(refused.code()))}})
      .Increment();
  if (!refused.ok()) {
    class Refused : public grpc::ServerWriteReactor<v1::PolicyVersion> {
     public:
      explicit Refused(const grpc::Status& s) { Finish(s); }
      void OnDone() override { delete this; }
    };
    return new Refused(ToGrpc(refused));
  }
  return new WatchReactor(this, ctx, *request);
}

grpc::ServerUnaryReactor* ControlService::ReportStatus(grpc::CallbackServerContext* ctx,
                                                       const v1::AgentStatus* request,
                                                       v1::ReportStatusResponse*) {
  auto caller = Authorize(ctx, "ReportStatus", Permission::kAgent);
  if (!caller.ok()) return Done(ctx, "ReportStatus", caller.status());
  if (request->node().empty()) {
    return Done(ctx, "ReportStatus", absl::InvalidArgumentError("the status names no node"));
  }
  agents_->Report(*request);
  return Done(ctx, "ReportStatus", absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::Status(grpc::CallbackServerContext* ctx,
                                                 const v1::StatusRequest*,
                                                 v1::StatusResponse* response) {
  auto caller = Authorize(ctx, "Status", Permission::kRead);
  if (!caller.ok()) return Done(ctx, "Status", caller.status());
  if (const std::shared_ptr<const v1::PolicyVersion> live = Live()) {
    response->set_live_version(live->version());
    response->set_live_hash(live->content_hash());
  }
  for (v1::AgentState& s : agents_->States()) *response->add_agents() = std::move(s);
  return Done(ctx, "Status", absl::OkStatus());
}

}  // namespace portcullis::control
