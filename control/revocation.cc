#include "control/revocation.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <ctime>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "control/openssl_ptr.h"
#include "policy/yaml_loader.h"

namespace portcullis::control {
namespace {

std::string SerialHex(const ASN1_INTEGER* serial) {
  BignumPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!bn) return "";
  char* hex = BN_bn2hex(bn.get());
  std::string out = hex ? hex : "";
  OPENSSL_free(hex);
  return out;
}

uint64_t NameHash(const X509_NAME* name) {
  int ok = 0;
  const unsigned long h = X509_NAME_hash_ex(name, nullptr, nullptr, &ok);
  return ok ? h : 0;
}

std::string NameLine(const X509_NAME* name) {
  char buf[512];
  X509_NAME_oneline(name, buf, sizeof(buf));
  return buf;
}

// Every PEM block in `text` that `read` reads.
template <typename Ptr, typename Read>
std::vector<Ptr> ReadAll(absl::string_view text, Read read) {
  std::vector<Ptr> out;
  BioPtr bio = MemoryBio(text);
  while (bio) {
    Ptr item(read(bio.get(), nullptr, nullptr, nullptr));
    if (!item) break;
    out.push_back(std::move(item));
  }
  return out;
}

}  // namespace

absl::StatusOr<PeerCertificate> ParsePeerCertificate(absl::string_view pem) {
  BioPtr bio = MemoryBio(pem);
  CertPtr cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!cert) return absl::UnauthenticatedError("the peer's certificate does not parse");
  PeerCertificate out;
  out.issuer = NameLine(X509_get_issuer_name(cert.get()));
  out.issuer_hash = NameHash(X509_get_issuer_name(cert.get()));
  out.serial = SerialHex(X509_get0_serialNumber(cert.get()));
  struct tm tm = {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &tm) != 1) {
    return absl::UnauthenticatedError("the peer's certificate has no valid expiry");
  }
  out.not_after_unix = timegm(&tm);
  return out;
}

absl::StatusOr<std::unique_ptr<RevocationList>> RevocationList::Open(std::string crl_path,
                                                                     std::string ca_path) {
  std::unique_ptr<RevocationList> list(new RevocationList(std::move(crl_path), std::move(ca_path)));
  const std::string stamp = list->FileStamp();
  auto entries = list->Load();
  if (!entries.ok()) return entries.status();
  list->revoked_ = *std::move(entries);
  list->stamp_ = stamp;
  return list;
}

std::string RevocationList::FileStamp() const {
  struct stat st;
  if (stat(crl_path_.c_str(), &st) != 0) return "";
  return absl::StrCat(st.st_dev, ":", st.st_ino, ":", st.st_size, ":", st.st_mtim.tv_sec, ".",
                      st.st_mtim.tv_nsec);
}

absl::StatusOr<RevocationList::Entries> RevocationList::Load() const {
  const auto fail = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("--crl ", crl_path_, ": ", why));
  };
  auto text = policy::ReadTextFile(crl_path_);
  if (!text.ok()) return fail(text.status().message());
  auto ca_text = policy::ReadTextFile(ca_path_);
  if (!ca_text.ok()) return fail(absl::StrCat("the CA bundle: ", ca_text.status().message()));
  const std::vector<CrlPtr> crls = ReadAll<CrlPtr>(*text, PEM_read_bio_X509_CRL);
  if (crls.empty()) return fail("no PEM CRL (-----BEGIN X509 CRL-----) in the file");
  const std::vector<CertPtr> cas = ReadAll<CertPtr>(*ca_text, PEM_read_bio_X509);
  Entries entries;
  for (const CrlPtr& crl : crls) {
    const X509_NAME* issuer = X509_CRL_get_issuer(crl.get());
    bool verified = false;
    for (const CertPtr& ca : cas) {
      if (X509_NAME_cmp(X509_get_subject_name(ca.get()), issuer) == 0 &&
          X509_CRL_verify(crl.get(), X509_get0_pubkey(ca.get())) == 1) {
        verified = true;
        break;
      }
    }
    if (!verified) {
      return fail(absl::StrCat("the CRL of \"", NameLine(issuer), "\" is not signed by a CA of ",
                               ca_path_));
    }
    if (const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl.get());
        next != nullptr && X509_cmp_current_time(next) < 0) {
      // Enforced still: an out-of-date list revokes no less than it did.
      LogWarning("the CRL is past its next update; renew it",
                 {{"crl", crl_path_}, {"issuer", NameLine(issuer)}});
    }
    const uint64_t hash = NameHash(issuer);
    STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
    for (int i = 0; i < sk_X509_REVOKED_num(revoked); ++i) {
      entries.emplace(hash,
                      SerialHex(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i))));
    }
  }
  return entries;
}

bool RevocationList::Refresh() {
  const std::string stamp = FileStamp();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stamp == stamp_) return false;
  }
  auto entries = Load();
  std::lock_guard<std::mutex> lock(mu_);
  stamp_ = stamp;  // a bad file is reported once, not at every refresh
  if (!entries.ok()) {
    LogError("cannot use the new CRL; keeping the previous one",
             {{"error", std::string(entries.status().message())}});
    return false;
  }
  LogInfo("CRL reloaded", {{"crl", crl_path_}, {"revoked", static_cast<int64_t>(entries->size())}});
  revoked_ = *std::move(entries);
  return true;
}

bool RevocationList::Revoked(const PeerCertificate& cert) const {
  std::lock_guard<std::mutex> lock(mu_);
  return revoked_.count({cert.issuer_hash, cert.serial}) != 0;
}

absl::Status CheckPeer(const PeerCertificate& cert, const RevocationList* crl, absl::Time now) {
  if (absl::FromUnixSeconds(cert.not_after_unix) < now) {
    return absl::UnauthenticatedError(
        absl::StrCat("the certificate with serial ", cert.serial, " expired at ",
                     absl::FormatTime(absl::FromUnixSeconds(cert.not_after_unix))));
  }
  if (crl != nullptr && crl->Revoked(cert)) {
    return absl::UnauthenticatedError(absl::StrCat("the certificate with serial ", cert.serial,
                                                   " of \"", cert.issuer, "\" is revoked by ",
                                                   crl->path()));
  }
  return absl::OkStatus();
}

}  // namespace portcullis::control
