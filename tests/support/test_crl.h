// A CRL for tests, signed by the dev CA that `portcullis-control --dev`
// makes, as an operator's CA would sign one with `openssl ca -gencrl`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace portcullis::testing {

// Writes to `path` (through a temporary file and a rename, as a Secret is
// updated) a CRL by the CA in `tls_dir` (ca.crt, ca.key) that revokes the
// certificates in the files `revoked`.
absl::Status WriteTestCrl(const std::string& tls_dir, const std::vector<std::string>& revoked,
                          const std::string& path);

// The serial of the certificate in `pem_path`, upper-case hex.
absl::StatusOr<std::string> CertificateSerial(const std::string& pem_path);

}  // namespace portcullis::testing
