#include "control/audit_chain.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "control/openssl_ptr.h"
#include "policy/text.h"
#include "policy/yaml_loader.h"

namespace portcullis::control {
namespace {

// Length-prefixed, so that no two different entries encode the same.
void Field(std::string& out, absl::string_view value) {
  absl::StrAppend(&out, value.size(), ":", value, ";");
}

// What is signed: the entry's hash, under a label of its own, so that a
// signature over anything else is never mistaken for one.
std::string Signed(absl::string_view hash) { return absl::StrCat("portcullis audit v1\n", hash); }

// 16 hex digits of the SHA-256 of the raw public key.
std::string KeyId(EVP_PKEY* key) {
  unsigned char raw[64];
  size_t len = sizeof(raw);
  if (EVP_PKEY_get_raw_public_key(key, raw, &len) != 1) return "";
  const std::string label =
      policy::Sha256Label(absl::string_view(reinterpret_cast<const char*>(raw), len));
  return label.substr(label.find(':') + 1, 16);
}

bool IsEd25519(EVP_PKEY* key) { return EVP_PKEY_get_id(key) == EVP_PKEY_ED25519; }

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

struct AuditSigner::Key {
  KeyPtr pkey;
};

AuditSigner::AuditSigner(std::unique_ptr<Key> key, std::string key_id)
    : key_(std::move(key)), key_id_(std::move(key_id)) {}
AuditSigner::~AuditSigner() = default;

absl::StatusOr<std::unique_ptr<AuditSigner>> AuditSigner::Load(const std::string& path) {
  auto text = policy::ReadTextFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--audit-signing-key: ", text.status().message()));
  }
  BioPtr bio = MemoryBio(*text);
  auto key = std::make_unique<Key>();
  key->pkey.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key->pkey || !IsEd25519(key->pkey.get())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--audit-signing-key ", path,
        ": not a PEM Ed25519 private key (make one with: openssl genpkey -algorithm ed25519)"));
  }
  std::string id = KeyId(key->pkey.get());
  return std::unique_ptr<AuditSigner>(new AuditSigner(std::move(key), std::move(id)));
}

std::string AuditSigner::Sign(absl::string_view hash) const {
  const std::string message = Signed(hash);
  unsigned char sig[64];
  size_t len = sizeof(sig);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_->pkey.get()) != 1 ||
      EVP_DigestSign(ctx.get(), sig, &len, reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1) {
    return "";  // shows as an unsigned entry, which verification reports
  }
  return absl::StrCat(
      "ed25519:", key_id_, ":",
      absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(sig), len)));
}

std::string AuditSigner::PublicKeyPem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PUBKEY(bio.get(), key_->pkey.get());
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

struct AuditKeys::Key {
  KeyPtr pkey;
};

AuditKeys::AuditKeys() = default;
AuditKeys::AuditKeys(AuditKeys&&) = default;
AuditKeys& AuditKeys::operator=(AuditKeys&&) = default;
AuditKeys::~AuditKeys() = default;

absl::StatusOr<AuditKeys> AuditKeys::Parse(absl::string_view pem, absl::string_view source) {
  AuditKeys keys;
  BioPtr bio = MemoryBio(pem);
  for (;;) {
    auto key = std::make_unique<Key>();
    key->pkey.reset(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
    if (!key->pkey) break;
    if (!IsEd25519(key->pkey.get())) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": a key that is not Ed25519"));
    }
    keys.keys_[KeyId(key->pkey.get())] = std::move(key);
  }
  if (keys.keys_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": no PEM public key (-----BEGIN PUBLIC KEY-----)"));
  }
  return keys;
}

absl::Status AuditKeys::Verify(const std::vector<v1::AuditEntry>& entries, bool all_keys_known,
                               uint64_t& first_signed) const {
  for (const v1::AuditEntry& e : entries) {
    if (e.signature().empty()) {
      if (first_signed != 0) {
        return absl::DataLossError(
            absl::StrCat("audit entry ", e.seq(), " is not signed, but entry ", first_signed,
                         " and those after it were: it was added without the signing key"));
      }
      continue;
    }
    if (first_signed == 0) first_signed = e.seq();
    const std::vector<std::string> parts = absl::StrSplit(e.signature(), absl::MaxSplits(':', 2));
    std::string sig;
    if (parts.size() != 3 || parts[0] != "ed25519" || !absl::Base64Unescape(parts[2], &sig)) {
      return absl::DataLossError(
          absl::StrCat("audit entry ", e.seq(), " has a malformed signature"));
    }
    auto key = keys_.find(parts[1]);
    if (key == keys_.end()) {
      if (!all_keys_known) continue;
      return absl::DataLossError(absl::StrCat(
          "audit entry ", e.seq(), " is signed by a key not given (key id ", parts[1], ")"));
    }
    const std::string message = Signed(e.hash());
    MdCtxPtr ctx(EVP_MD_CTX_new());
    if (EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key->second->pkey.get()) != 1 ||
        EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                         reinterpret_cast<const unsigned char*>(message.data()),
                         message.size()) != 1) {
      return absl::DataLossError(absl::StrCat("audit entry ", e.seq(),
                                              "'s signature does not verify: the entry or "
                                              "the chain before it was rewritten"));
    }
  }
  if (all_keys_known && !entries.empty() && first_signed == 0) {
    return absl::DataLossError(
        "no audit entry is signed: the service runs without --audit-signing-key, or the "
        "signatures were stripped");
  }
  return absl::OkStatus();
}

}  // namespace portcullis::control
