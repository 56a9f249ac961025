#include "control/rollout.h"

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace portcullis::control {
namespace {

bool NamePart(absl::string_view s) {
  return !s.empty() && s.size() <= 63 && absl::ascii_isalnum(s.front()) &&
         absl::ascii_isalnum(s.back()) && std::all_of(s.begin(), s.end(), [](char c) {
           return absl::ascii_isalnum(c) || c == '.' || c == '-' || c == '_';
         });
}

bool LabelKey(absl::string_view key) {
  const size_t slash = key.find('/');
  if (slash == absl::string_view::npos) return NamePart(key);
  const absl::string_view prefix = key.substr(0, slash);
  return !prefix.empty() && prefix.size() <= 253 &&
         std::all_of(prefix.begin(), prefix.end(),
                     [](char c) { return absl::ascii_isalnum(c) || c == '.' || c == '-'; }) &&
         NamePart(key.substr(slash + 1));
}

}  // namespace

bool Selects(const v1::Rollout& rollout, absl::string_view node, const Labels& labels) {
  for (const std::string& n : rollout.nodes()) {
    if (n == node) return true;
  }
  if (rollout.node_selector().empty()) return false;
  for (const auto& [key, value] : rollout.node_selector()) {
    auto it = labels.find(key);
    if (it == labels.end() || it->second != value) return false;
  }
  return true;
}

std::string DescribeTargets(const v1::Rollout& rollout) {
  if (!rollout.nodes().empty()) return absl::StrCat("nodes ", absl::StrJoin(rollout.nodes(), ", "));
  std::vector<std::string> pairs;
  for (const auto& [key, value] : rollout.node_selector()) pairs.push_back(key + "=" + value);
  std::sort(pairs.begin(), pairs.end());
  return absl::StrCat("nodes labelled ", absl::StrJoin(pairs, ","));
}

absl::StatusOr<std::map<std::string, std::string>> ParseLabels(absl::string_view text,
                                                               absl::string_view what) {
  std::map<std::string, std::string> out;
  if (text.empty()) return out;
  for (absl::string_view pair : absl::StrSplit(text, ',')) {
    const size_t eq = pair.find('=');
    const absl::string_view key = pair.substr(0, eq);
    const absl::string_view value = eq == absl::string_view::npos ? "" : pair.substr(eq + 1);
    if (eq == absl::string_view::npos || !LabelKey(key) || (!value.empty() && !NamePart(value))) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": \"", pair,
          "\" is not KEY=VALUE with a Kubernetes label key and value (at most 63 letters, "
          "digits, '.', '-', '_', starting and ending alphanumeric)"));
    }
    if (!out.emplace(key, value).second) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": \"", key, "\" is given twice"));
    }
    if (out.size() > 64) return absl::InvalidArgumentError(absl::StrCat(what, ": over 64 labels"));
  }
  return out;
}

}  // namespace portcullis::control
