// Who is calling, and may they: the caller's certificate common name, that
// the certificate still holds (not expired since the handshake, not
// revoked), its role from the role map (re-read when the file changes), and
// the role's permissions. Every refusal is audited through the
// RefusalAuditor.
#pragma once

#include <grpcpp/grpcpp.h>

#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "control/refusals.h"
#include "control/revocation.h"
#include "control/roles.h"

namespace portcullis::control {

class Authorizer {
 public:
  // With `insecure_plaintext`, every caller may do everything. `crl` may be
  // null (no --crl); it must outlive this.
  Authorizer(std::string role_map_path, bool insecure_plaintext, const RevocationList* crl,
             RefusalAuditor& refusals)
      : role_map_path_(std::move(role_map_path)),
        insecure_plaintext_(insecure_plaintext),
        crl_(crl),
        refusals_(refusals) {}

  // The caller, if it may do `permission`; else the refusal, audited.
  absl::StatusOr<Caller> Authorize(const grpc::CallbackServerContext& ctx, absl::string_view method,
                                   Permission permission);

 private:
  // The caller's role under the current role map (re-read if it changed).
  std::optional<Role> RoleOf(const std::string& principal);

  const std::string role_map_path_;
  const bool insecure_plaintext_;
  const RevocationList* const crl_;
  RefusalAuditor& refusals_;
  std::mutex mu_;
  std::optional<RoleMap> roles_;  // under mu_
  int64_t roles_mtime_ = -1;
};

}  // namespace portcullis::control
