#include "control/tls.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "control/openssl_ptr.h"
#include "control/roles.h"
#include "policy/yaml_loader.h"

namespace portcullis::control {
namespace {

namespace fs = std::filesystem;

constexpr const char* kRoles[] = {"admin", "editor", "viewer", "agent"};

absl::Status OpenSslError(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": OpenSSL error ", ERR_get_error()));
}

bool AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// A certificate for `cn`, signed by `issuer` (self-signed when null).
constexpr long kDevValiditySeconds = 60L * 60 * 24 * 825;

absl::StatusOr<CertPtr> MakeCertificate(const std::string& cn, EVP_PKEY* key, X509* issuer,
                                        EVP_PKEY* issuer_key, const std::string& extensions_kind,
                                        const std::string& san,
                                        long valid_seconds = kDevValiditySeconds) {
  CertPtr cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return OpenSslError("random serial");
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), valid_seconds);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("portcullis dev"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* signer = issuer ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  bool ok = true;
  if (extensions_kind == "ca") {
    ok = AddExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE") &&
         AddExtension(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign") &&
         AddExtension(cert.get(), signer, NID_subject_key_identifier, "hash");
  } else {
    ok = AddExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE") &&
         AddExtension(cert.get(), signer, NID_key_usage, "critical,digitalSignature") &&
         AddExtension(cert.get(), signer, NID_ext_key_usage,
                      extensions_kind == "server" ? "serverAuth" : "clientAuth") &&
         AddExtension(cert.get(), signer, NID_authority_key_identifier, "keyid") &&
         (san.empty() || AddExtension(cert.get(), signer, NID_subject_alt_name, san));
  }
  if (!ok) return OpenSslError(absl::StrCat("certificate extensions for ", cn));
  if (X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()) == 0) {
    return OpenSslError(absl::StrCat("signing the certificate for ", cn));
  }
  return cert;
}

absl::Status WritePem(const fs::path& path, X509* cert, EVP_PKEY* key) {
  FILE* f = fopen(path.c_str(), "wx");
  if (f == nullptr) return absl::UnavailableError(absl::StrCat("cannot write ", path.string()));
  bool ok = true;
  if (cert) ok = PEM_write_X509(f, cert) == 1;
  if (key) {
    fchmod(fileno(f), 0600);
    ok = PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  }
  ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
  fclose(f);
  return ok ? absl::OkStatus()
            : absl::UnavailableError(absl::StrCat("cannot write ", path.string()));
}

absl::Status WritePair(const fs::path& dir, const std::string& name, X509* cert, EVP_PKEY* key) {
  if (absl::Status s = WritePem(dir / (name + ".crt"), cert, nullptr); !s.ok()) return s;
  return WritePem(dir / (name + ".key"), nullptr, key);
}

}  // namespace

absl::StatusOr<TlsMaterial> ReadTlsFiles(const TlsPaths& paths, bool identity_optional,
                                         absl::string_view flag_prefix) {
  const std::string ca = absl::StrCat(flag_prefix, "ca"), cert = absl::StrCat(flag_prefix, "cert"),
                    key = absl::StrCat(flag_prefix, "key");
  if (paths.cert.empty() != paths.key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(cert, " and ", key, " go together"));
  }
  TlsMaterial m;
  for (auto [flag, path, out] :
       {std::tuple{&ca, &paths.ca, &m.ca}, std::tuple{&cert, &paths.cert, &m.cert},
        std::tuple{&key, &paths.key, &m.key}}) {
    if (path->empty()) {
      if (identity_optional && out != &m.ca) continue;
      return absl::InvalidArgumentError(absl::StrCat(*flag, " is required"));
    }
    auto text = policy::ReadTextFile(*path);
    if (!text.ok()) {
      return absl::Status(text.status().code(), absl::StrCat(*flag, ": ", text.status().message()));
    }
    if (text->find("-----BEGIN") == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(*flag, " ", *path, ": not a PEM file"));
    }
    *out = *std::move(text);
  }
  return m;
}

namespace {

// One watcher (one thread re-reading the files) per set of files, shared by
// the channels that use them: a process simulating thousands of agents
// would otherwise run thousands.
std::shared_ptr<grpc::experimental::CertificateProviderInterface> FileWatcher(
    const TlsPaths& paths, absl::Duration refresh) {
  using Provider = grpc::experimental::FileWatcherCertificateProvider;
  static std::mutex mu;
  static std::map<std::tuple<std::string, std::string, std::string, int64_t>,
                  std::weak_ptr<Provider>>
      watchers;
  const auto seconds = static_cast<unsigned>(std::max<int64_t>(1, absl::ToInt64Seconds(refresh)));
  std::lock_guard<std::mutex> lock(mu);
  std::weak_ptr<Provider>& slot = watchers[{paths.ca, paths.cert, paths.key, seconds}];
  std::shared_ptr<Provider> provider = slot.lock();
  if (!provider) {
    provider = paths.cert.empty()
                   ? std::make_shared<Provider>(paths.ca, seconds)
                   : std::make_shared<Provider>(paths.key, paths.cert, paths.ca, seconds);
    slot = provider;
  }
  return provider;
}

}  // namespace

std::shared_ptr<grpc::ServerCredentials> ReloadingServerCredentials(const TlsPaths& paths,
                                                                    absl::Duration refresh) {
  grpc::experimental::TlsServerCredentialsOptions options(FileWatcher(paths, refresh));
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  // Requested, not required: a caller without one is told why by the
  // Authorizer instead of seeing a closed socket.
  options.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  return grpc::experimental::TlsServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> ReloadingChannelCredentials(const TlsPaths& paths,
                                                                      absl::Duration refresh) {
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(FileWatcher(paths, refresh));
  options.watch_root_certs();
  if (!paths.cert.empty()) options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  return grpc::experimental::TlsCredentials(options);
}

absl::StatusOr<TlsPaths> EnsureDevCertificates(const std::string& state_dir) {
  const fs::path dir = fs::path(state_dir) / "tls";
  const TlsPaths server{(dir / "ca.crt").string(), (dir / "server.crt").string(),
                        (dir / "server.key").string()};
  std::error_code ec;
  if (fs::exists(dir / "ca.crt", ec)) return server;

  fs::create_directories(state_dir, ec);
  const fs::path tmp = fs::path(state_dir) / absl::StrCat(".tls.", getpid());
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec)) {
    return absl::UnavailableError(absl::StrCat("cannot create ", tmp.string(), ": ", ec.message()));
  }
  fs::permissions(tmp, fs::perms::owner_all, ec);
  auto fail = [&](absl::Status s) {
    fs::remove_all(tmp, ec);
    return s;
  };
  KeyPtr ca_key(EVP_EC_gen("P-256"));
  if (!ca_key) return fail(OpenSslError("generating the CA key"));
  auto ca = MakeCertificate("portcullis dev CA", ca_key.get(), nullptr, nullptr, "ca", "");
  if (!ca.ok()) return fail(ca.status());
  if (absl::Status s = WritePair(tmp, "ca", ca->get(), ca_key.get()); !s.ok()) return fail(s);

  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  struct Leaf {
    std::string file, cn, kind, san;
  };
  std::vector<Leaf> leaves = {{"server", "portcullis-control", "server",
                               absl::StrCat("DNS:portcullis-control,DNS:localhost,DNS:", host,
                                            ",IP:127.0.0.1,IP:0:0:0:0:0:0:0:1")}};
  for (const char* role : kRoles) leaves.push_back({role, role, "client", ""});
  for (const Leaf& leaf : leaves) {
    KeyPtr key(EVP_EC_gen("P-256"));
    if (!key) return fail(OpenSslError("generating a key"));
    auto cert = MakeCertificate(leaf.cn, key.get(), ca->get(), ca_key.get(), leaf.kind, leaf.san);
    if (!cert.ok()) return fail(cert.status());
    if (absl::Status s = WritePair(tmp, leaf.file, cert->get(), key.get()); !s.ok()) return fail(s);
  }
  fs::rename(tmp, dir, ec);
  if (ec) {
    return fail(absl::UnavailableError(
        absl::StrCat("cannot move the dev certificates into ", dir.string(), ": ", ec.message())));
  }
  return server;
}

absl::Status IssueDevNodeCertificate(const std::string& state_dir, const std::string& node) {
  const fs::path dir = fs::path(state_dir) / "tls";
  const std::string name = absl::StrCat("agent-", node);
  std::error_code ec;
  if (fs::exists(dir / (name + ".crt"), ec)) return absl::OkStatus();
  return IssueDevCertificate(dir.string(), {absl::StrCat(kNodeCertPrefix, node)},
                             (dir / (name + ".crt")).string(), (dir / (name + ".key")).string());
}

absl::StatusOr<std::string> EnsureDevAuditKey(const std::string& state_dir) {
  const fs::path dir = fs::path(state_dir) / "tls";
  const fs::path key_path = dir / "audit-signing.key", pub_path = dir / "audit-signing.pub";
  std::error_code ec;
  if (fs::exists(key_path, ec)) return key_path.string();
  if (fs::create_directories(dir, ec)) fs::permissions(dir, fs::perms::owner_all, ec);
  KeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) return OpenSslError("generating the audit signing key");
  // The public half first: a crash leaves no private key without it.
  std::unique_ptr<FILE, int (*)(FILE*)> pub(fopen(pub_path.c_str(), "w"), fclose);
  if (!pub || PEM_write_PUBKEY(pub.get(), key.get()) != 1 || fflush(pub.get()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot write ", pub_path.string()));
  }
  if (absl::Status s = WritePem(key_path, nullptr, key.get()); !s.ok()) return s;
  return key_path.string();
}

absl::Status IssueDevCertificate(const std::string& tls_dir, const DevLeaf& leaf,
                                 const std::string& crt_path, const std::string& key_path) {
  const fs::path dir(tls_dir);
  auto read = [&](const char* file, auto reader) {
    std::unique_ptr<FILE, int (*)(FILE*)> f(fopen((dir / file).c_str(), "r"), fclose);
    return f ? reader(f.get()) : nullptr;
  };
  CertPtr ca(read("ca.crt", [](FILE* f) { return PEM_read_X509(f, nullptr, nullptr, nullptr); }));
  KeyPtr ca_key(
      read("ca.key", [](FILE* f) { return PEM_read_PrivateKey(f, nullptr, nullptr, nullptr); }));
  if (!ca || !ca_key) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read the dev CA in ", tls_dir));
  }
  KeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return OpenSslError("generating a key");
  auto cert = MakeCertificate(leaf.cn, key.get(), ca.get(), ca_key.get(),
                              leaf.san.empty() ? "client" : "server", leaf.san,
                              static_cast<long>(absl::ToInt64Seconds(leaf.valid_for)));
  if (!cert.ok()) return cert.status();
  if (absl::Status s = WritePem(crt_path, cert->get(), nullptr); !s.ok()) return s;
  return WritePem(key_path, nullptr, key.get());
}

}  // namespace portcullis::control
