#include "control/authorizer.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace portcullis::control {

std::optional<Role> Authorizer::RoleOf(const std::string& principal) {
  std::lock_guard<std::mutex> lock(mu_);
  struct stat st;
  const int64_t mtime =
      stat(role_map_path_.c_str(), &st) == 0
          ? static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec
          : -1;
  if (mtime != roles_mtime_ || !roles_) {
    auto loaded = RoleMap::Load(role_map_path_);
    if (loaded.ok()) {
      roles_ = *std::move(loaded);
      roles_mtime_ = mtime;
    } else {
      LogError("cannot read the role map; keeping the previous one",
               {{"error", std::string(loaded.status().message())}});
    }
  }
  if (!roles_) return std::nullopt;
  return roles_->RoleOf(principal);
}

absl::StatusOr<Caller> Authorizer::Authorize(const grpc::CallbackServerContext& ctx,
                                             absl::string_view method, Permission permission) {
  if (insecure_plaintext_) return Caller{"(plaintext)", "any"};
  Caller caller;
  if (const std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context()) {
    for (const grpc::string_ref& cn : auth->FindPropertyValues("x509_common_name")) {
      caller.principal.assign(cn.data(), cn.size());
    }
    for (const grpc::string_ref& pem : auth->FindPropertyValues("x509_pem_cert")) {
      auto parsed = ParsePeerCertificate(absl::string_view(pem.data(), pem.size()));
      absl::Status holds = parsed.ok() ? CheckPeer(*parsed, crl_, absl::Now()) : parsed.status();
      if (!holds.ok()) {
        refusals_.Refuse(caller, method, "unauthenticated", holds);
        return holds;
      }
      caller.certificate = *std::move(parsed);
    }
  }
  if (caller.principal.empty()) {
    absl::Status why = absl::UnauthenticatedError(
        "no client certificate: every call needs a certificate issued by the control service's "
        "CA (--cert and --key)");
    refusals_.Refuse(caller, method, "unauthenticated", why);
    return why;
  }
  const std::optional<Role> role = RoleOf(caller.principal);
  if (!role) {
    absl::Status why = absl::PermissionDeniedError(
        absl::StrCat("certificate \"", caller.principal, "\" has no role in ", role_map_path_));
    refusals_.Refuse(caller, method, "permission_denied", why);
    return why;
  }
  caller.role = std::string(RoleName(*role));
  if (!Allows(*role, permission)) {
    absl::Status why =
        absl::PermissionDeniedError(absl::StrCat(method, " needs the role ", RolesWith(permission),
                                                 "; \"", caller.principal, "\" is ", caller.role));
    refusals_.Refuse(caller, method, "permission_denied", why);
    return why;
  }
  return caller;
}

}  // namespace portcullis::control
