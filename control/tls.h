// Certificates for mTLS: reading the configured PEM files, and `--dev`'s
// throwaway CA with one server and one client pair per role, created once
// under STATE_DIR/tls/ (PRODUCT.md).
#pragma once

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace portcullis::control {

struct TlsPaths {
  std::string ca, cert, key;
};

struct TlsMaterial {
  std::string ca, cert, key;  // PEM
};

// Reads the three files; errors name the flag and the file. With
// `identity_optional`, cert and key may both be absent (a client that
// presents no certificate, and is told by the service why it is refused).
// The flags named are `flag_prefix` followed by ca, cert and key.
absl::StatusOr<TlsMaterial> ReadTlsFiles(const TlsPaths& paths, bool identity_optional = false,
                                         absl::string_view flag_prefix = "--");

// How often certificate, key and CA files are re-read for a change: new
// handshakes then use what is on disk (cert-manager renews Secrets in
// place), and connections already up are not dropped.
inline constexpr absl::Duration kDefaultTlsRefresh = absl::Seconds(10);

// The service's credentials: its certificate and key, and client
// certificates required and verified against the CA, all re-read every
// `refresh`. Read `paths` with ReadTlsFiles first: this reports no errors.
std::shared_ptr<grpc::ServerCredentials> ReloadingServerCredentials(const TlsPaths& paths,
                                                                    absl::Duration refresh);

// A client's: the server verified against the CA and by name, and the
// client's certificate (if `paths` has one), re-read every `refresh`.
std::shared_ptr<grpc::ChannelCredentials> ReloadingChannelCredentials(const TlsPaths& paths,
                                                                      absl::Duration refresh);

// STATE_DIR/tls/{ca,server,admin,editor,viewer,agent}.{crt,key}, created on
// the first call (all at once: a crash leaves all or none) and reused after.
// The server certificate names localhost, 127.0.0.1, ::1, this host's name
// and "portcullis-control". Returns the server's paths.
absl::StatusOr<TlsPaths> EnsureDevCertificates(const std::string& state_dir);

// With the dev CA: STATE_DIR/tls/agent-NODE.crt/.key, named
// portcullis-agent:NODE, the certificate that speaks for NODE only (once).
absl::Status IssueDevNodeCertificate(const std::string& state_dir, const std::string& node);

// With --dev: STATE_DIR/tls/audit-signing.key (Ed25519) and its public half
// audit-signing.pub, made once. Returns the private key's path.
absl::StatusOr<std::string> EnsureDevAuditKey(const std::string& state_dir);

// A certificate issued by the dev CA in `tls_dir` (ca.crt, ca.key): a
// server one when it has a subjectAltName, else a client one. Written to
// new files (the key 0600). Tests use it to rotate and revoke.
struct DevLeaf {
  std::string cn;
  std::string san;  // "DNS:name,IP:addr", or "" for a client certificate
  absl::Duration valid_for = absl::Hours(24 * 825);
};
absl::Status IssueDevCertificate(const std::string& tls_dir, const DevLeaf& leaf,
                                 const std::string& crt_path, const std::string& key_path);

}  // namespace portcullis::control
