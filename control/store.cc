#include "control/store.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace portcullis::control {
namespace {
constexpr char kMovedPayload[] = "portcullis.control/store-moved";
}  // namespace

absl::Status StoreMovedError(uint64_t checked_at, uint64_t now) {
  absl::Status s = absl::AbortedError(
      absl::StrCat("the store moved (generation ", checked_at, " -> ", now,
                   ") while this change was checked: another replica changed it first"));
  s.SetPayload(kMovedPayload, absl::Cord("1"));
  return s;
}

bool StoreMoved(const absl::Status& status) {
  return absl::IsAborted(status) && status.GetPayload(kMovedPayload).has_value();
}

absl::Status CheckNextStep(const v1::Rollout& stored, const v1::Rollout& next) {
  if (next.step() == stored.step() + 1) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("the rollout of version ", next.version(), " is at step ", stored.step() + 1,
                   ", not step ", next.step(), ": another replica took this step"));
}

absl::StatusOr<uint64_t> Store::AwaitChange(uint64_t, absl::Duration) {
  return absl::UnimplementedError("this store has one writer: nothing else changes it");
}

absl::StatusOr<std::optional<v1::PolicyVersion>> Store::LiveHeader() {
  auto newest = History(1);
  if (!newest.ok()) return newest.status();
  if (newest->empty()) return std::nullopt;
  return newest->front();
}

std::unique_ptr<AgentShare> Store::ShareAgents(AgentRegistry&) { return nullptr; }

v1::AuditEntry Store::ChainEntry(AuditRecord audit, uint64_t seq, std::string prev_hash,
                                 int64_t now_ns) const {
  v1::AuditEntry e;
  e.set_seq(seq);
  e.set_prev_hash(std::move(prev_hash));
  e.set_time_unix_nanos(now_ns);
  e.set_principal(std::move(audit.principal));
  e.set_role(std::move(audit.role));
  e.set_method(std::move(audit.method));
  e.set_outcome(std::move(audit.outcome));
  e.set_detail(std::move(audit.detail));
  e.set_version(audit.version);
  e.set_content_hash(std::move(audit.content_hash));
  e.set_hash(AuditEntryHash(e));
  if (signer_) e.set_signature(signer_->Sign(e.hash()));
  return e;
}

absl::Status Store::VerifyAudit() {
  std::optional<AuditKeys> keys;
  if (signer_) {
    auto parsed = AuditKeys::Parse(signer_->PublicKeyPem(), "the audit signing key");
    if (!parsed.ok()) return parsed.status();
    keys = *std::move(parsed);
  }
  std::string prev;
  uint64_t after = 0, first_signed = 0;
  for (;;) {
    auto page = Audit(after, 10000);
    if (!page.ok()) return page.status();
    if (page->empty()) return absl::OkStatus();
    if (absl::Status s = VerifyAuditChain(*page, prev); !s.ok()) return s;
    // Entries by earlier keys (before a rotation) are checked by
    // `audit --verify`, which is given every public key.
    if (keys) {
      if (absl::Status s = keys->Verify(*page, /*all_keys_known=*/false, first_signed); !s.ok()) {
        return s;
      }
    }
    for (const v1::AuditEntry& e : *page) {
      if (e.content_hash().empty()) continue;
      auto version = Get(e.version());
      if (!version.ok()) return version.status();
      if (absl::Status s = VerifyVersionAgainstAudit(*version, e); !s.ok()) return s;
    }
    prev = page->back().hash();
    after = page->back().seq();
  }
}

}  // namespace portcullis::control
