// What a caller's certificate is checked against after its handshake: a
// connection outlives the checks the handshake made, so each call (and each
// open policy stream, periodically) checks again that the certificate has
// not expired since and is not revoked by the CRL file, which is re-read
// when it changes (cert-manager and kubelet replace files in place).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace portcullis::control {

// The parts of a peer's leaf certificate that the checks need.
struct PeerCertificate {
  std::string issuer;  // one-line distinguished name, for messages
  uint64_t issuer_hash = 0;
  std::string serial;  // upper-case hex, as `openssl x509 -serial` prints it
  int64_t not_after_unix = 0;
};

absl::StatusOr<PeerCertificate> ParsePeerCertificate(absl::string_view pem);

class RevocationList {
 public:
  // Reads `crl_path`: one or more PEM CRLs, each signed by a certificate of
  // the CA bundle `ca_path`. Errors name --crl and the file.
  static absl::StatusOr<std::unique_ptr<RevocationList>> Open(std::string crl_path,
                                                              std::string ca_path);

  // Re-reads the file if it changed. A new file that does not read, parse
  // or verify is logged and the previous list kept: a bad CRL push must not
  // let revoked certificates back in, nor lock every caller out. True when
  // the list was replaced.
  bool Refresh();

  bool Revoked(const PeerCertificate& cert) const;
  const std::string& path() const { return crl_path_; }

 private:
  using Entries = std::set<std::pair<uint64_t, std::string>>;  // issuer hash, serial
  RevocationList(std::string crl_path, std::string ca_path)
      : crl_path_(std::move(crl_path)), ca_path_(std::move(ca_path)) {}
  // The revoked serials the file lists, verified.
  absl::StatusOr<Entries> Load() const;
  std::string FileStamp() const;

  const std::string crl_path_, ca_path_;
  mutable std::mutex mu_;
  Entries revoked_;    // under mu_
  std::string stamp_;  // under mu_: inode, size and mtime when read
};

// OK while `cert` holds at `now`: not expired, and not revoked by `crl`
// (none when null). Unauthenticated otherwise, saying which and why.
absl::Status CheckPeer(const PeerCertificate& cert, const RevocationList* crl, absl::Time now);

}  // namespace portcullis::control
