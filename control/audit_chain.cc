#include "control/audit_chain.h"

#include "absl/strings/str_cat.h"
#include "policy/text.h"

namespace portcullis::control {
namespace {

// Length-prefixed, so that no two different entries encode the same.
void Field(std::string& out, absl::string_view value) {
  absl::StrAppend(&out, value.size(), ":", value, ";");
}

}  // namespace

std::string AuditEntryHash(const v1::AuditEntry& e) {
  std::string canonical;
  Field(canonical, e.prev_hash());
  Field(canonical, absl::StrCat(e.seq()));
  Field(canonical, absl::StrCat(e.time_unix_nanos()));
  Field(canonical, e.principal());
  Field(canonical, e.role());
  Field(canonical, e.method());
  Field(canonical, e.outcome());
  Field(canonical, e.detail());
  Field(canonical, absl::StrCat(e.version()));
  // Entries written before the chain covered policies have none; their
  // hashes stay what they were.
  if (!e.content_hash().empty()) Field(canonical, e.content_hash());
  return policy::Sha256Label(canonical);
}

absl::Status VerifyVersionAgainstAudit(const v1::PolicyVersion& version,
                                       const v1::AuditEntry& entry) {
  const std::string actual = policy::ContentHash(version.policy());
  if (actual != entry.content_hash() || version.content_hash() != entry.content_hash()) {
    return absl::DataLossError(absl::StrCat(
        "version ", version.version(), " does not hold the policy audit entry ", entry.seq(),
        " recorded: its policy hashes to ", actual, ", the entry says ", entry.content_hash()));
  }
  return absl::OkStatus();
}

absl::Status VerifyAuditChain(const std::vector<v1::AuditEntry>& entries, std::string prev_hash) {
  uint64_t expected_seq = prev_hash.empty() ? 1 : entries.empty() ? 0 : entries.front().seq();
  for (const v1::AuditEntry& e : entries) {
    if (e.seq() != expected_seq) {
      return absl::DataLossError(absl::StrCat("audit entry ", expected_seq,
                                              " is missing (the next one is ", e.seq(), ")"));
    }
    if (e.prev_hash() != prev_hash) {
      return absl::DataLossError(absl::StrCat("audit entry ", e.seq(),
                                              " does not link to the entry before it (prev_hash ",
                                              e.prev_hash(), ", expected ", prev_hash, ")"));
    }
    const std::string hash = AuditEntryHash(e);
    if (e.hash() != hash) {
      return absl::DataLossError(absl::StrCat("audit entry ", e.seq(), " was altered: its hash is ",
                                              e.hash(), " but its content hashes to ", hash));
    }
    prev_hash = e.hash();
    ++expected_seq;
  }
  return absl::OkStatus();
}

}  // namespace portcullis::control
