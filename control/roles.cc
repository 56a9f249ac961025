#include "control/roles.h"

#include <fnmatch.h>
#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "policy/yaml_loader.h"

namespace portcullis::control {

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kViewer:
      return "viewer";
    case Role::kEditor:
      return "editor";
    case Role::kAdmin:
      return "admin";
    case Role::kAgent:
      return "agent";
  }
  return "?";
}

bool Allows(Role role, Permission permission) {
  switch (permission) {
    case Permission::kRead:
      return role != Role::kAgent;
    case Permission::kEdit:
      return role == Role::kEditor || role == Role::kAdmin;
    case Permission::kRollback:
      return role == Role::kAdmin;
    case Permission::kAgent:
      return role == Role::kAgent;
  }
  return false;
}

std::string RolesWith(Permission permission) {
  switch (permission) {
    case Permission::kRead:
      return "viewer, editor or admin";
    case Permission::kEdit:
      return "editor or admin";
    case Permission::kRollback:
      return "admin";
    case Permission::kAgent:
      return "agent";
  }
  return "";
}

absl::StatusOr<RoleMap> RoleMap::Load(const std::string& path) {
  auto text = policy::ReadTextFile(path);
  if (absl::IsNotFound(text.status())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no role map at ", path,
        ": write one that maps client certificate names to roles (see docs/CONTROL.md), or "
        "start with --dev"));
  }
  if (!text.ok()) return text.status();
  return Parse(*text, path);
}

absl::StatusOr<RoleMap> RoleMap::Parse(absl::string_view text, absl::string_view file) {
  auto error = [&](const YAML::Mark& mark, absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ":", mark.line + 1, ":", mark.column + 1, ": ", what));
  };
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return error(e.mark, e.msg);
  }
  if (!root.IsMap() || !root["roles"] || !root["roles"].IsSequence()) {
    return error(root.Mark(), "expected a map with a \"roles\" list");
  }
  RoleMap map;
  for (const YAML::Node& entry : root["roles"]) {
    if (!entry.IsMap() || !entry["subject"] || !entry["role"] || entry.size() != 2 ||
        !entry["subject"].IsScalar() || !entry["role"].IsScalar()) {
      return error(entry.Mark(), "each entry is {subject: NAME-OR-GLOB, role: ROLE}");
    }
    const std::string role = entry["role"].Scalar();
    std::optional<Role> parsed;
    for (Role r : {Role::kViewer, Role::kEditor, Role::kAdmin, Role::kAgent}) {
      if (role == RoleName(r)) parsed = r;
    }
    if (!parsed) {
      return error(entry["role"].Mark(), absl::StrCat("\"", role,
                                                      "\" is not one of: viewer, editor, admin, "
                                                      "agent"));
    }
    map.entries_.emplace_back(entry["subject"].Scalar(), *parsed);
  }
  return map;
}

std::optional<Role> RoleMap::RoleOf(absl::string_view common_name) const {
  const std::string name(common_name);
  for (const auto& [glob, role] : entries_) {
    if (fnmatch(glob.c_str(), name.c_str(), 0) == 0) return role;
  }
  return std::nullopt;
}

}  // namespace portcullis::control
