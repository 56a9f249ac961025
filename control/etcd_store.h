// The store on etcd (--store etcd): every replica of the control service
// keeps its durable state in one etcd cluster, under a prefix P
// (--etcd-prefix):
//
//   P/head                   the head (portcullis/store/etcd.proto): the live
//                            version, the audit chain's end, the shadow
//                            candidate and the rollout in progress
//   P/versions/N             version N without its policy (for history)
//   P/policies/N             version N's policy
//   P/confirmations/N        when version N was confirmed
//   P/audit/N                audit entry N
//   P/shadows/N              shadow candidate N
//   P/agents/NODE            the node's latest report (control/etcd_agents.h)
//
// Each change is one etcd transaction that writes its records and the new
// head only if the head is the one the change was checked against
// (mod_revision compare). When another replica got there first, the change
// is checked again against the new head: version numbers stay gapless, the
// audit chain linear, and two changes never both win. etcd acknowledges a
// transaction once a quorum of members has it on disk.
#pragma once

#include <memory>
#include <string>

#include "control/etcd_client.h"
#include "control/store.h"
#include "portcullis/store/etcd.pb.h"

namespace portcullis::control {

class EtcdStore final : public Store {
 public:
  // Connects and reads the head once, so that a wrong endpoint, prefix or
  // certificate is reported at start, not at the first push.
  static absl::StatusOr<std::unique_ptr<EtcdStore>> Open(const EtcdOptions& options,
                                                         const std::string& prefix);

  absl::StatusOr<std::optional<v1::PolicyVersion>> Live() override;
  absl::StatusOr<std::optional<v1::PolicyVersion>> LiveHeader() override;
  absl::StatusOr<v1::PolicyVersion> Get(uint64_t version) override;
  absl::StatusOr<std::vector<v1::PolicyVersion>> History(uint32_t limit) override;
  absl::StatusOr<uint64_t> Generation() override;
  bool Shared() const override { return true; }
  absl::StatusOr<uint64_t> AwaitChange(uint64_t generation, absl::Duration timeout) override;
  // P/agents/NODE (control/etcd_agents.h); this replica is named
  // HOSTNAME/PID/N in its records.
  std::unique_ptr<AgentShare> ShareAgents(AgentRegistry& registry) override;
  absl::StatusOr<v1::PolicyVersion> AddVersion(
      v1::PolicyVersion version, AuditRecord audit,
      std::optional<uint64_t> checked_at = std::nullopt) override;
  absl::Status AppendAudit(AuditRecord audit) override;
  absl::StatusOr<v1::PolicyVersion> Confirm(uint64_t version, AuditRecord audit) override;
  absl::StatusOr<v1::ShadowCandidate> AddShadow(v1::ShadowCandidate candidate,
                                                AuditRecord audit) override;
  absl::StatusOr<std::optional<v1::ShadowCandidate>> Shadow() override;
  absl::Status DiscardShadow(uint64_t id, AuditRecord audit) override;
  absl::StatusOr<std::optional<v1::Rollout>> Rollout() override;
  absl::Status PromoteRollout(uint64_t version, AuditRecord audit) override;
  absl::Status UpdateRollout(const v1::Rollout& rollout, AuditRecord audit) override;
  absl::StatusOr<std::vector<v1::AuditEntry>> Audit(uint64_t after_seq, uint32_t limit) override;

  // P/<kind>/N, N zero-padded so that keys sort as numbers.
  std::string Key(const char* kind, uint64_t n) const;

 private:
  struct Head {
    store::EtcdHead record;
    int64_t mod_revision = 0;  // 0: no head yet (an empty store)
  };
  // One change, planned against `head`: it checks the head (an error ends
  // the change), updates it, and adds its writes and compares to `txn`.
  // `audit` is the entry the change appends; `now` its time.
  using Plan = std::function<absl::Status(store::EtcdHead& head, etcdserverpb::TxnRequest& txn,
                                          AuditRecord& audit)>;

  EtcdStore(std::unique_ptr<EtcdClient> client, std::string prefix)
      : client_(std::move(client)), prefix_(std::move(prefix)) {}
  absl::StatusOr<Head> ReadHead();
  // Version N, with or without its policy; and the live one (nullopt
  // before the first push).
  absl::StatusOr<v1::PolicyVersion> Read(uint64_t version, bool with_policy);
  absl::StatusOr<std::optional<v1::PolicyVersion>> ReadLive(bool with_policy);
  // Reads the head, plans, commits the plan with its audit entry and the new
  // head if the head did not move; re-plans when it did. Returns the head
  // as committed.
  absl::StatusOr<store::EtcdHead> Change(AuditRecord audit, const Plan& plan);

  std::unique_ptr<EtcdClient> client_;
  std::string prefix_;
};

}  // namespace portcullis::control
