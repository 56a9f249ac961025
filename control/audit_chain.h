// The audit log's hash chain. Each entry's hash covers the previous entry's
// hash and every field of its own, so that changing, removing or reordering
// an entry breaks every later link. The control service and
// `portcullisctl audit --verify` use this one definition.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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

// The service's audit signing key (Ed25519, PEM), kept apart from the
// store, in a Secret: each entry's hash is signed with it, so that whoever
// can write the database but cannot read the key cannot rewrite the chain
// so that it still verifies.
class AuditSigner {
 public:
  // Errors name --audit-signing-key and the file.
  static absl::StatusOr<std::unique_ptr<AuditSigner>> Load(const std::string& path);
  ~AuditSigner();

  // The `signature` of an entry whose hash is `hash`.
  std::string Sign(absl::string_view hash) const;
  const std::string& key_id() const { return key_id_; }
  // The public key, PEM: what `audit --verify --audit-public-key` is given.
  std::string PublicKeyPem() const;

 private:
  struct Key;
  AuditSigner(std::unique_ptr<Key> key, std::string key_id);
  std::unique_ptr<Key> key_;
  std::string key_id_;
};

// Public keys that verify entries' signatures, by key id.
class AuditKeys {
 public:
  // One or more PEM Ed25519 public keys (every key the log was signed
  // with, across rotations). Errors name `source`.
  static absl::StatusOr<AuditKeys> Parse(absl::string_view pem, absl::string_view source);

  AuditKeys(AuditKeys&&);
  AuditKeys& operator=(AuditKeys&&);
  ~AuditKeys();

  // Checks `entries`, consecutive, oldest first (a page of the log;
  // `first_signed` carries the scan from page to page: 0 at the start):
  // - each entry signed by a key of these verifies;
  // - from the first signed entry on, every entry is signed (entries added
  //   by a service without its key, or forged, show as unsigned);
  // - with `all_keys_known`, every signature is by a key of these, and when
  //   `entries` end at the newest entry, one at least is signed.
  // DataLoss names the first entry that fails.
  absl::Status Verify(const std::vector<v1::AuditEntry>& entries, bool all_keys_known,
                      uint64_t& first_signed) const;

 private:
  struct Key;
  AuditKeys();
  std::map<std::string, std::unique_ptr<Key>> keys_;
};

}  // namespace portcullis::control
