// The embedded store (--store sqlite, the default): policy versions and the
// audit log in one SQLite database (WAL, synchronous=FULL) in the state
// directory, for one replica. A write returns only once it is durable, so an
// acknowledged push survives kill -9 and power loss. The audit table is
// append-only: triggers refuse UPDATE and DELETE.
#pragma once

#include <sqlite3.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "control/store.h"

namespace portcullis::control {

class SqliteStore final : public Store {
 public:
  // Opens (creating if needed) STATE_DIR/control.db. A database that fails
  // SQLite's integrity check is refused with a message that says how to
  // restore it.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& state_dir);
  ~SqliteStore() override;

  absl::StatusOr<std::optional<v1::PolicyVersion>> Live() override;
  absl::StatusOr<v1::PolicyVersion> Get(uint64_t version) override;
  absl::StatusOr<std::vector<v1::PolicyVersion>> History(uint32_t limit) override;
  absl::StatusOr<uint64_t> Generation() override;
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

 private:
  explicit SqliteStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  absl::Status Exec(const char* sql);
  absl::Status Error(absl::string_view what) const;
  // Under mu_: BEGIN IMMEDIATE, `body`, COMMIT; ROLLBACK when either fails.
  absl::Status InTransaction(const std::function<absl::Status()>& body);
  // Under mu_, inside a transaction.
  absl::StatusOr<v1::AuditEntry> InsertAudit(AuditRecord audit, int64_t now_ns);
  absl::StatusOr<uint64_t> GenerationLocked();  // under mu_

  std::mutex mu_;
  sqlite3* db_;
  std::string path_;
};

}  // namespace portcullis::control
