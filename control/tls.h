// Certificates for mTLS: reading the configured PEM files, and `--dev`'s
// throwaway CA with one server and one client pair per role, created once
// under STATE_DIR/tls/ (PRODUCT.md).
#pragma once

#include <string>

#include "absl/status/statusor.h"

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
absl::StatusOr<TlsMaterial> ReadTlsFiles(const TlsPaths& paths, bool identity_optional = false);

// STATE_DIR/tls/{ca,server,admin,editor,viewer,agent}.{crt,key}, created on
// the first call (all at once: a crash leaves all or none) and reused after.
// The server certificate names localhost, 127.0.0.1, ::1, this host's name
// and "portcullis-control". Returns the server's paths.
absl::StatusOr<TlsPaths> EnsureDevCertificates(const std::string& state_dir);

// With the dev CA: STATE_DIR/tls/agent-NODE.crt/.key, named
// portcullis-agent:NODE, the certificate that speaks for NODE only (once).
absl::Status IssueDevNodeCertificate(const std::string& state_dir, const std::string& node);

}  // namespace portcullis::control
