// The audit log's hash chain. Each entry's hash covers the previous entry's
// hash and every field of its own, so that changing, removing or reordering
// an entry breaks every later link. The control service and
// `portcullisctl audit --verify` use this one definition.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "portcullis/v1/control.pb.h"

namespace portcullis::control {

// "sha256:" + hex over prev_hash and the entry's fields (its own hash aside),
// the content hash of the version it made included.
std::string AuditEntryHash(const v1::AuditEntry& entry);

// Checks `entries` (consecutive, oldest first) link to each other and to
// `prev_hash` (the hash of the entry before the first; "" at the start of
// the log). DataLoss names the first entry that does not match.
absl::Status VerifyAuditChain(const std::vector<v1::AuditEntry>& entries, std::string prev_hash);

// Checks that `version` holds the policy `entry` (the audit entry that made
// it) recorded: its content hash, recomputed from the policy. DataLoss when
// a version's policy was replaced behind the service's back.
absl::Status VerifyVersionAgainstAudit(const v1::PolicyVersion& version,
                                       const v1::AuditEntry& entry);

}  // namespace portcullis::control
