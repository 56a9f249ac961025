#include "tests/support/test_crl.h"

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"

namespace portcullis::testing {
namespace {

using File = std::unique_ptr<FILE, int (*)(FILE*)>;

File Open(const std::string& path, const char* mode) {
  return File(fopen(path.c_str(), mode), fclose);
}

std::unique_ptr<X509, void (*)(X509*)> ReadCert(const std::string& path) {
  File f = Open(path, "r");
  return {f ? PEM_read_X509(f.get(), nullptr, nullptr, nullptr) : nullptr, X509_free};
}

}  // namespace

absl::StatusOr<std::string> CertificateSerial(const std::string& pem_path) {
  auto cert = ReadCert(pem_path);
  if (!cert) return absl::NotFoundError(absl::StrCat("cannot read ", pem_path));
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr);
  char* hex = BN_bn2hex(bn);
  std::string out = hex;
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

absl::Status WriteTestCrl(const std::string& tls_dir, const std::vector<std::string>& revoked,
                          const std::string& path) {
  auto ca = ReadCert(tls_dir + "/ca.crt");
  File key_file = Open(tls_dir + "/ca.key", "r");
  std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)> ca_key(
      key_file ? PEM_read_PrivateKey(key_file.get(), nullptr, nullptr, nullptr) : nullptr,
      EVP_PKEY_free);
  if (!ca || !ca_key) return absl::NotFoundError(absl::StrCat("no dev CA in ", tls_dir));
  std::unique_ptr<X509_CRL, void (*)(X509_CRL*)> crl(X509_CRL_new(), X509_CRL_free);
  X509_CRL_set_version(crl.get(), 1);
  X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca.get()));
  std::unique_ptr<ASN1_TIME, void (*)(ASN1_TIME*)> now(X509_gmtime_adj(nullptr, -60),
                                                       ASN1_TIME_free);
  std::unique_ptr<ASN1_TIME, void (*)(ASN1_TIME*)> next(X509_gmtime_adj(nullptr, 86400),
                                                        ASN1_TIME_free);
  X509_CRL_set1_lastUpdate(crl.get(), now.get());
  X509_CRL_set1_nextUpdate(crl.get(), next.get());
  for (const std::string& file : revoked) {
    auto cert = ReadCert(file);
    if (!cert) return absl::NotFoundError(absl::StrCat("cannot read ", file));
    X509_REVOKED* entry = X509_REVOKED_new();
    X509_REVOKED_set_serialNumber(entry, X509_get_serialNumber(cert.get()));
    X509_REVOKED_set_revocationDate(entry, now.get());
    X509_CRL_add0_revoked(crl.get(), entry);
  }
  X509_CRL_sort(crl.get());
  if (X509_CRL_sign(crl.get(), ca_key.get(), EVP_sha256()) == 0) {
    return absl::InternalError("cannot sign the CRL");
  }
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  {
    File out = Open(tmp, "w");
    if (!out || PEM_write_X509_CRL(out.get(), crl.get()) != 1) {
      return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
    }
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot rename onto ", path));
  }
  return absl::OkStatus();
}

}  // namespace portcullis::testing
