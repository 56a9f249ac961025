// Who is calling, and may they: the caller's certificate common name, its
// role from the role map (re-read when the file changes), and the role's
// permissions. Every refusal is audited through the RefusalAuditor.
#pragma once

#include <grpcpp/grpcpp.h>

#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "control/refusals.h"
#include "control/roles.h"

namespace portcullis::control {

class Authorizer {
 public:
  // With `insecure_plaintext`, every caller may do everything.
  Authorizer(std::string role_map_path, bool insecure_plaintext, RefusalAuditor& refusals)
      : role_map_path_(std::move(role_map_path)),
        insecure_plaintext_(insecure_plaintext),
        refusals_(refusals) {}

  // The caller, if it may do `permission`; else the refusal, audited.
  absl::StatusOr<Caller> Authorize(const grpc::CallbackServerContext& ctx, absl::string_view method,
                                   Permission permission);

 private:
  // The caller's role under the current role map (re-read if it changed).
  std::optional<Role> RoleOf(const std::string& principal);

  const std::string role_map_path_;
  const bool insecure_plaintext_;
  RefusalAuditor& refusals_;
  std::mutex mu_;
  std::optional<RoleMap> roles_;  // under mu_
  int64_t roles_mtime_ = -1;
};

}  // namespace portcullis::control
