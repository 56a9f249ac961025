// The control service's durable state, behind one interface with two
// backends: SqliteStore (the default: one file in --state-dir, for one
// replica) and EtcdStore (--store etcd: every replica on one etcd cluster).
// Both keep the same facts and pass the same tests (tests/store_test.cc):
// gapless version numbers, a linear hash-chained audit log that every change
// extends in the same durable transaction, at most one shadow candidate and
// one rollout in progress. A change returns only once it is durable.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "control/audit_chain.h"
#include "portcullis/v1/control.pb.h"

namespace portcullis::control {

class AgentRegistry;

// Agents' reports shared by every replica of a shared store, so that each
// replica's registry (and so its status, drift and canary gates) holds
// every agent, whichever replica the agent reports to.
class AgentShare {
 public:
  virtual ~AgentShare() = default;
  // Shares a report this replica received and kept in its registry.
  virtual void Publish(const v1::AgentStatus& status) = 0;
};

// An audit entry before the store numbers, times and chains it.
struct AuditRecord {
  std::string principal, role, method, outcome, detail;
  uint64_t version = 0;
  std::string content_hash;  // of the version's policy (set by AddVersion)
};

class Store {
 public:
  virtual ~Store() = default;

  // The newest version; nullopt before the first push.
  virtual absl::StatusOr<std::optional<v1::PolicyVersion>> Live() = 0;
  virtual absl::StatusOr<v1::PolicyVersion> Get(uint64_t version) = 0;
  // Live() without the policy: enough to tell whether the live version or
  // its confirmation changed, without reading a policy of 100k prefixes.
  virtual absl::StatusOr<std::optional<v1::PolicyVersion>> LiveHeader();
  // Newest first, without policy bodies; `limit` 0 = all.
  virtual absl::StatusOr<std::vector<v1::PolicyVersion>> History(uint32_t limit) = 0;

  // The store's generation: the audit log's last seq (0 when empty). Every
  // change appends an entry, so a change checked against generation G is
  // checked against stale state once the generation moved past G.
  virtual absl::StatusOr<uint64_t> Generation() = 0;
  // Whether other processes (replicas) change this store too. Only then can
  // it move under a replica, which must then follow it (AwaitChange).
  virtual bool Shared() const { return false; }
  // Returns the generation once it differs from `generation`, or after
  // `timeout` (then the same, read anew: an error means the store is
  // unreachable). Only for a Shared store.
  virtual absl::StatusOr<uint64_t> AwaitChange(uint64_t generation, absl::Duration timeout);
  // For a Shared store: shares this replica's agent reports with the other
  // replicas, and keeps theirs in `registry` (which must outlive the
  // result). nullptr for a store only this process uses: its registry is
  // the whole picture.
  virtual std::unique_ptr<AgentShare> ShareAgents(AgentRegistry& registry);

  // Stores `version` (its number is assigned: live + 1) with its audit
  // entry, in one durable transaction, and ends the shadow candidate (it
  // was judged against the version before; promoted, when it is this
  // version's policy), and the rollout in progress; a version with a
  // `rollout` starts one. Returns it as stored. With `checked_at`, the
  // generation the caller checked the version against: if the store has
  // moved since (another replica's change), nothing is stored and the
  // error is StoreMoved, for the caller to read the store and check again.
  virtual absl::StatusOr<v1::PolicyVersion> AddVersion(
      v1::PolicyVersion version, AuditRecord audit,
      std::optional<uint64_t> checked_at = std::nullopt) = 0;
  virtual absl::Status AppendAudit(AuditRecord audit) = 0;
  // Records `version` as confirmed, with its audit entry, in one durable
  // transaction. NotFound for no such version, FailedPrecondition when it
  // is confirmed already or no longer live. Returns the version as stored.
  virtual absl::StatusOr<v1::PolicyVersion> Confirm(uint64_t version, AuditRecord audit) = 0;
  // Stores `candidate` (its id is assigned) as the shadow candidate, ending
  // the one before, with its audit entry, in one durable transaction.
  virtual absl::StatusOr<v1::ShadowCandidate> AddShadow(v1::ShadowCandidate candidate,
                                                        AuditRecord audit) = 0;
  // The current shadow candidate; nullopt when none.
  virtual absl::StatusOr<std::optional<v1::ShadowCandidate>> Shadow() = 0;
  // Ends candidate `id` (discarded), with its audit entry. NotFound when it
  // is not the current one.
  virtual absl::Status DiscardShadow(uint64_t id, AuditRecord audit) = 0;

  // The canary rollout in progress (a version stored with its `rollout`),
  // if any. Any later version ends it.
  virtual absl::StatusOr<std::optional<v1::Rollout>> Rollout() = 0;
  // Ends the rollout of canary `version`: it is live everywhere now. With
  // its audit entry. NotFound when it is not the rollout in progress.
  virtual absl::Status PromoteRollout(uint64_t version, AuditRecord audit) = 0;
  // Stores the next step of the staged rollout in progress (same version),
  // with its audit entry. NotFound when it is not in progress;
  // FailedPrecondition when `rollout` is not the step after the stored one
  // (another replica took it: every replica runs the rollout's timer).
  virtual absl::Status UpdateRollout(const v1::Rollout& rollout, AuditRecord audit) = 0;

  // Entries with seq > after_seq, oldest first, at most `limit` (0 = all).
  virtual absl::StatusOr<std::vector<v1::AuditEntry>> Audit(uint64_t after_seq, uint32_t limit) = 0;
  // Walks the whole chain, and with a signer the signatures made by its key,
  // and checks each version against the entry that made it.
  absl::Status VerifyAudit();

  // From now on each new audit entry is signed by `signer` (--audit-signing-key).
  void SetAuditSigner(std::unique_ptr<const AuditSigner> signer) { signer_ = std::move(signer); }

 protected:
  // The entry `audit` becomes as number `seq` after `prev_hash`: timed,
  // hashed and, with a signer, signed. Both backends chain through this.
  v1::AuditEntry ChainEntry(AuditRecord audit, uint64_t seq, std::string prev_hash,
                            int64_t now_ns) const;

 private:
  std::unique_ptr<const AuditSigner> signer_;  // set before the service starts
};

// The error of a change checked against a generation the store has moved
// past (Aborted, marked so that it is told from other refusals), and the test.
absl::Status StoreMovedError(uint64_t checked_at, uint64_t now);
// UpdateRollout's check: `next` is one step after `stored`.
absl::Status CheckNextStep(const v1::Rollout& stored, const v1::Rollout& next);
bool StoreMoved(const absl::Status& status);

}  // namespace portcullis::control
