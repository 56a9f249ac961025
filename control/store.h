// The control service's embedded store: policy versions and the audit log in
// one SQLite database (WAL, synchronous=FULL) in the state directory. A write
// returns only once it is durable, so an acknowledged push survives kill -9
// and power loss. The audit table is append-only: triggers refuse UPDATE and
// DELETE, and each entry is hash-chained to the one before (audit_chain.h).
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "control/audit_chain.h"
#include "portcullis/v1/control.pb.h"

namespace portcullis::control {

// An audit entry before the store numbers, times and chains it.
struct AuditRecord {
  std::string principal, role, method, outcome, detail;
  uint64_t version = 0;
  std::string content_hash;  // of the version's policy (set by AddVersion)
};

class Store {
 public:
  // Opens (creating if needed) STATE_DIR/control.db. A database that fails
  // SQLite's integrity check is refused with a message that says how to
  // restore it.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& state_dir);
  ~Store();

  // The newest version; nullopt before the first push.
  absl::StatusOr<std::optional<v1::PolicyVersion>> Live();
  absl::StatusOr<v1::PolicyVersion> Get(uint64_t version);
  // Newest first, without policy bodies; `limit` 0 = all.
  absl::StatusOr<std::vector<v1::PolicyVersion>> History(uint32_t limit);

  // Stores `version` (its number is assigned: live + 1) with its audit
  // entry, in one durable transaction, and ends the shadow candidate (it
  // was judged against the version before; promoted, when it is this
  // version's policy), and the rollout in progress; a version with a
  // `rollout` starts one. Returns it as stored.
  absl::StatusOr<v1::PolicyVersion> AddVersion(v1::PolicyVersion version, AuditRecord audit);
  absl::Status AppendAudit(AuditRecord audit);
  // Records `version` as confirmed, with its audit entry, in one durable
  // transaction (the caller checks it was not already). Returns the version
  // as stored.
  absl::StatusOr<v1::PolicyVersion> Confirm(uint64_t version, AuditRecord audit);
  // Stores `candidate` (its id is assigned) as the shadow candidate, ending
  // the one before, with its audit entry, in one durable transaction.
  absl::StatusOr<v1::ShadowCandidate> AddShadow(v1::ShadowCandidate candidate, AuditRecord audit);
  // The current shadow candidate; nullopt when none.
  absl::StatusOr<std::optional<v1::ShadowCandidate>> Shadow();
  // Ends candidate `id` (discarded), with its audit entry. NotFound when it
  // is not the current one.
  absl::Status DiscardShadow(uint64_t id, AuditRecord audit);

  // The canary rollout in progress (a version stored with its `rollout`),
  // if any. Any later version ends it.
  absl::StatusOr<std::optional<v1::Rollout>> Rollout();
  // Ends the rollout of canary `version`: it is live everywhere now. With
  // its audit entry. NotFound when it is not the rollout in progress.
  absl::Status PromoteRollout(uint64_t version, AuditRecord audit);
  // Stores the next step of the staged rollout in progress (same version),
  // with its audit entry. NotFound when it is not in progress.
  absl::Status UpdateRollout(const v1::Rollout& rollout, AuditRecord audit);

  // Entries with seq > after_seq, oldest first, at most `limit`.
  absl::StatusOr<std::vector<v1::AuditEntry>> Audit(uint64_t after_seq, uint32_t limit);
  // Walks the whole chain, and with a signer the signatures made by its key.
  absl::Status VerifyAudit();

  // From now on each new audit entry is signed by `signer` (--audit-signing-key).
  void SetAuditSigner(std::unique_ptr<const AuditSigner> signer) { signer_ = std::move(signer); }

 private:
  explicit Store(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  absl::Status Exec(const char* sql);
  absl::Status Error(absl::string_view what) const;
  // Under mu_: BEGIN IMMEDIATE, `body`, COMMIT; ROLLBACK when either fails.
  absl::Status InTransaction(const std::function<absl::Status()>& body);
  // Under mu_, inside a transaction.
  absl::StatusOr<v1::AuditEntry> InsertAudit(AuditRecord audit, int64_t now_ns);

  std::mutex mu_;
  sqlite3* db_;
  std::string path_;
  std::unique_ptr<const AuditSigner> signer_;  // set before the service starts
};

}  // namespace portcullis::control
