// Who may do what. A client's role comes from its certificate's subject
// common name through the role map STATE_DIR/roles.yaml:
//
//   roles:
//     - {subject: alice, role: admin}
//     - {subject: "node-*", role: agent}   # glob; the first match wins
//
// viewer reads; editor also validates, pushes and diffs; admin also rolls
// back; agent only watches policy and reports status (PRODUCT.md).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace portcullis::control {

enum class Role { kViewer, kEditor, kAdmin, kAgent };

// What a call needs.
enum class Permission { kRead, kEdit, kRollback, kAgent };

absl::string_view RoleName(Role role);
bool Allows(Role role, Permission permission);
// "viewer, editor or admin": the roles that have `permission`.
std::string RolesWith(Permission permission);

class RoleMap {
 public:
  // Errors name the file, line and what is wrong.
  static absl::StatusOr<RoleMap> Load(const std::string& path);
  static absl::StatusOr<RoleMap> Parse(absl::string_view text, absl::string_view file);

  std::optional<Role> RoleOf(absl::string_view common_name) const;

 private:
  std::vector<std::pair<std::string, Role>> entries_;  // subject glob -> role
};

// The map `--dev` writes: each dev certificate's name is its role.
inline constexpr absl::string_view kDevRoleMap =
    "# Client certificate subject common name -> role (viewer, editor, admin, agent).\n"
    "# \"*\" globs; the first match wins. Written by portcullis-control --dev.\n"
    "roles:\n"
    "  - {subject: admin, role: admin}\n"
    "  - {subject: editor, role: editor}\n"
    "  - {subject: viewer, role: viewer}\n"
    "  - {subject: agent, role: agent}\n"
    "  - {subject: \"portcullis-agent:*\", role: agent}\n";

// An agent certificate named `portcullis-agent:NODE` speaks for NODE only.
inline constexpr absl::string_view kNodeCertPrefix = "portcullis-agent:";

}  // namespace portcullis::control
