// portcullis-control's gRPC service (control.proto). Every call is checked
// against the caller's role (Authorizer); every change, attempted change and
// refusal is audited (RefusalAuditor for refusals); the live version reaches
// the agents through LiveBroadcast. Pushes are serialised, validated with the validator that
// `portcullisctl validate` uses, compiled (so that what no agent could load
// is refused), checked against the baseline, stored durably, and only then
// acknowledged and streamed to the watching agents.
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "control/agent_registry.h"
#include "control/authorizer.h"
#include "control/baseline.h"
#include "control/live_broadcast.h"
#include "control/refusals.h"
#include "control/revocation.h"
#include "control/roles.h"
#include "control/store.h"
#include "control/store_follower.h"
#include "portcullis/v1/control.grpc.pb.h"

namespace portcullis::control {

struct ServiceOptions {
  Baseline baseline;
  std::string role_map_path;        // STATE_DIR/roles.yaml, re-read when it changes
  bool insecure_plaintext = false;  // every caller may do everything
  absl::Duration stale_after = absl::Seconds(45);
  uint32_t max_watch_streams = 10000;
  // Agent certificates not named portcullis-agent:NODE (one shared by every
  // node, as --dev makes) may speak for any node. Off: such a certificate
  // is refused, and each node's certificate speaks for its node only.
  bool shared_agent_certs = false;
  uint32_t max_streams_per_node_cert = 4;
  // Refusals written to the audit log one row each per `refusal_window`;
  // beyond that they are counted into one summary row a window (a flood of
  // bad calls, from anyone, costs a bounded number of rows a minute, and
  // every refusal is still accounted for).
  int itemised_refusals = 20;
  absl::Duration refusal_window = absl::Minutes(1);
  // --crl: the CRL file (PEM), re-read by CheckCredentials when it changes,
  // and the CA bundle that must have signed it. Empty: no CRL.
  std::string crl_path, ca_path;
};

class CallScope;

// Watch is raw (ByteBuffer): LiveBroadcast writes a version's bytes,
// encoded once for every stream.
class ControlService final
    : public v1::Control::WithRawCallbackMethod_Watch<v1::Control::CallbackService> {
 public:
  static absl::StatusOr<std::unique_ptr<ControlService>> Create(Store& store,
                                                                ServiceOptions options,
                                                                prometheus::Registry& registry);
  ~ControlService() override;

  std::shared_ptr<AgentRegistry> agents() const { return agents_; }

  // Re-reads the CRL if it changed, and ends the policy streams of
  // certificates revoked or expired since they were opened (each call is
  // checked as it comes). The caller runs it periodically. Returns how
  // many streams it ended.
  size_t CheckCredentials();

  grpc::ServerUnaryReactor* Push(grpc::CallbackServerContext* ctx, const v1::PushRequest* request,
                                 v1::PushResponse* response) override;
  grpc::ServerUnaryReactor* Validate(grpc::CallbackServerContext* ctx,
                                     const v1::ValidateRequest* request,
                                     v1::ValidateResponse* response) override;
  grpc::ServerUnaryReactor* Diff(grpc::CallbackServerContext* ctx, const v1::DiffRequest* request,
                                 v1::DiffResponse* response) override;
  grpc::ServerUnaryReactor* History(grpc::CallbackServerContext* ctx,
                                    const v1::HistoryRequest* request,
                                    v1::HistoryResponse* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const v1::GetRequest* request,
                                v1::PolicyVersion* response) override;
  grpc::ServerUnaryReactor* Rollback(grpc::CallbackServerContext* ctx,
                                     const v1::RollbackRequest* request,
                                     v1::PushResponse* response) override;
  grpc::ServerUnaryReactor* Audit(grpc::CallbackServerContext* ctx, const v1::AuditRequest* request,
                                  v1::AuditResponse* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Watch(grpc::CallbackServerContext* ctx,
                                                    const grpc::ByteBuffer* raw) override;
  grpc::ServerUnaryReactor* ReportStatus(grpc::CallbackServerContext* ctx,
                                         const v1::AgentStatus* request,
                                         v1::ReportStatusResponse* response) override;
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx,
                                   const v1::StatusRequest* request,
                                   v1::StatusResponse* response) override;
  grpc::ServerUnaryReactor* Confirm(grpc::CallbackServerContext* ctx,
                                    const v1::ConfirmRequest* request,
                                    v1::PolicyVersion* response) override;
  grpc::ServerUnaryReactor* ShadowReport(grpc::CallbackServerContext* ctx,
                                         const v1::ShadowReportRequest* request,
                                         v1::ShadowReportResponse* response) override;
  grpc::ServerUnaryReactor* PromoteShadow(grpc::CallbackServerContext* ctx,
                                          const v1::PromoteShadowRequest* request,
                                          v1::PushResponse* response) override;
  grpc::ServerUnaryReactor* DiscardShadow(grpc::CallbackServerContext* ctx,
                                          const v1::DiscardShadowRequest* request,
                                          v1::DiscardShadowResponse* response) override;
  grpc::ServerUnaryReactor* PromoteRollout(grpc::CallbackServerContext* ctx,
                                           const v1::RolloutRequest* request,
                                           v1::PushResponse* response) override;
  grpc::ServerUnaryReactor* AbortRollout(grpc::CallbackServerContext* ctx,
                                         const v1::RolloutRequest* request,
                                         v1::PushResponse* response) override;

 private:
  absl::StatusOr<std::string> BoundNode(const Caller& caller, absl::string_view node) const;
  friend class CallScope;

  ControlService(Store& store, ServiceOptions options, std::unique_ptr<RevocationList> crl,
                 prometheus::Registry& registry);

  // What Push, Rollback and the revert of an unconfirmed push ask for.
  struct Change {
    const v1::Policy& policy;
    std::string reason;
    bool allow_failsafe_change = false;
    uint64_t rollback_of = 0;
    absl::Duration confirm_within = absl::ZeroDuration();  // 0: needs no confirmation
    // A revert of this unconfirmed version: Aborted if it is no longer live
    // and unconfirmed (confirmed, or replaced, meanwhile).
    uint64_t revert_of = 0;
    // A promotion of this shadow candidate: Aborted if it is no longer the
    // current one.
    uint64_t promotes_shadow = 0;
    // A canary: live on the nodes it selects only (its version numbers
    // are set when stored).
    std::optional<v1::Rollout> canary;
    // An abort of this canary version: Aborted if it is no longer the
    // rollout in progress.
    uint64_t aborts_rollout = 0;
  };
  // Check, store, stream, under push_mu_.
  absl::StatusOr<v1::PushResponse> MakeLive(CallScope& call, const Change& change);
  // Sleeps until the live version's next deadline: reverts it if its
  // confirmation deadline passes unconfirmed, and takes a staged rollout's
  // next step when it is due.
  void DeadlineLoop();
  void RevertUnconfirmed(const v1::PolicyVersion& pending);
  // The staged rollout of `live` (as published) extends to its next step,
  // unless it changed meanwhile; the last step promotes it.
  absl::Status NextRolloutStep(const v1::PolicyVersion& live);
  // A step the store refused because another replica took it (each runs
  // the timer): logged, and OK.
  static absl::Status TakenElsewhere(uint64_t version, const absl::Status& why);
  // Aborts the rollout of `live` (as published) when, on a canary node,
  // drops by a watched reason rose past its bound (max_drop_increase).
  absl::Status WatchRollout(const v1::PolicyVersion& live);
  // Ends the rollout of canary `version`: the version the other nodes run
  // becomes live again, as a new version. The one abort of rollout abort
  // and of the automatic abort.
  absl::StatusOr<v1::PushResponse> Abort(CallScope& call, uint64_t version,
                                         const std::string& reason);
  // Non-stale agents' node names.
  std::vector<std::string> LiveAgents() const;
  // Stores `request`'s policy as the shadow candidate, under push_mu_.
  absl::StatusOr<v1::PushResponse> AddShadow(CallScope& call, const v1::PushRequest& request);
  // Makes `version` live, with the current shadow candidate; under push_mu_.
  void Publish(v1::PolicyVersion version);
  // Reads the live version, shadow candidate and rollout from the store and
  // publishes what changed (another replica's change); under push_mu_.
  absl::Status Load();
  // One attempt of MakeLive against what was loaded; under push_mu_.
  absl::StatusOr<v1::PushResponse> MakeLiveOnce(CallScope& call, const Change& change);
  // Counts a finished call by method and code.
  void Count(absl::string_view method, const absl::Status& status);

  Store& store_;
  const ServiceOptions options_;
  std::shared_ptr<AgentRegistry> agents_;
  prometheus::Family<prometheus::Counter>& requests_;  // method, code
  prometheus::Gauge& audit_chain_valid_;
  RefusalAuditor refusals_;
  const std::unique_ptr<RevocationList> crl_;  // null without --crl
  Authorizer authorizer_;
  // The live version, kept in memory from start and each Publish, so that no
  // call reads and decodes it from the store again.
  LiveBroadcast live_;
  std::mutex push_mu_;  // one push, rollback, confirmation, revert or shadow change at a time
  // The shadow candidate (under push_mu_), and how often it changed: agents'
  // streams order updates of one version by it.
  std::optional<v1::ShadowCandidate> shadow_;
  uint64_t shadow_generation_ = 0;
  // The canary rollout in progress (under push_mu_), and the version the
  // nodes it does not select keep.
  std::optional<v1::Rollout> rollout_;
  std::shared_ptr<const v1::PolicyVersion> stable_;
  std::mutex revert_mu_;
  std::condition_variable revert_cv_;  // a new live version (or rollout step), or stopping
  bool stopping_ = false;              // under revert_mu_
  std::thread reverter_;
  // The store generation the cached state above was loaded at, and whether
  // it still is (under push_mu_): a change checked against it is refused by
  // the store once another replica moved it, then loaded and checked again.
  uint64_t generation_ = 0;
  bool loaded_ = false;
  // With a shared store (etcd): publishes other replicas' changes. Null
  // with SQLite, which only this process writes.
  std::unique_ptr<StoreFollower> follower_;
  // With a Shared store: the other replicas' agent reports into agents_,
  // and this one's out to them; nullptr otherwise.
  std::unique_ptr<AgentShare> agent_share_;
};

// A version pushed with --confirm-within and not confirmed yet.
bool AwaitsConfirmation(const v1::PolicyVersion& version);

}  // namespace portcullis::control
