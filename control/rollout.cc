#include "control/rollout.h"

#include <algorithm>
#include <set>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/abi.h"
#include "policy/diff.h"

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
  if (!rollout.steps().empty()) {
    return absl::StrCat(rollout.steps(rollout.step()), "% of the nodes (step ", rollout.step() + 1,
                        " of ", rollout.steps_size(), ": ", rollout.nodes_size(), " node",
                        rollout.nodes_size() == 1 ? "" : "s", ")");
  }
  if (!rollout.nodes().empty()) return absl::StrCat("nodes ", absl::StrJoin(rollout.nodes(), ", "));
  std::vector<std::string> pairs;
  for (const auto& [key, value] : rollout.node_selector()) pairs.push_back(key + "=" + value);
  std::sort(pairs.begin(), pairs.end());
  return absl::StrCat("nodes labelled ", absl::StrJoin(pairs, ","));
}

std::vector<std::string> ChooseShare(std::vector<std::string> agents, uint32_t percent) {
  // FNV-1a: stable across builds and restarts, unlike std::hash.
  auto hash = [](const std::string& s) {
    uint64_t h = 14695981039346656037ull;
    for (const char c : s) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    return h;
  };
  std::sort(agents.begin(), agents.end(), [&](const std::string& a, const std::string& b) {
    return std::make_pair(hash(a), a) < std::make_pair(hash(b), b);
  });
  agents.erase(std::unique(agents.begin(), agents.end()), agents.end());
  const size_t n = (agents.size() * std::min<uint32_t>(percent, 100) + 99) / 100;
  agents.resize(n);
  return agents;
}

absl::Status CheckSteps(const std::vector<uint32_t>& steps) {
  if (steps.size() > 10) return absl::InvalidArgumentError("--steps: at most 10 steps");
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i] == 0 || steps[i] > 100 || (i > 0 && steps[i] <= steps[i - 1])) {
      return absl::InvalidArgumentError(
          "--steps: shares of the nodes from 1% to 100%, each larger than the one before "
          "(e.g. 10%,50%,100%)");
    }
  }
  if (!steps.empty() && steps.back() != 100) {
    return absl::InvalidArgumentError("--steps: the last step is 100%");
  }
  return absl::OkStatus();
}

std::vector<std::string> ReasonsTouched(const v1::Policy& from, const v1::Policy& to) {
  std::set<std::string> reasons;
  auto add = [&](std::initializer_list<pc_reason> rs) {
    for (pc_reason r : rs) reasons.insert(std::string(ReasonName(r)));
  };
  for (const policy::Change& c : policy::DiffPolicies(from, to)) {
    const std::string& s = c.section;
    if (s == "ports" || s == "failsafe" || absl::StartsWith(s, "sets")) {
      add({PC_REASON_NOT_ALLOWLISTED, PC_REASON_PORT_CLOSED, PC_REASON_SYN_RATE_SOURCE,
           PC_REASON_CONN_RATE_SOURCE});
    } else if (s == "defaultAction") {
      add({PC_REASON_PORT_CLOSED});
    } else if (s == "blocklist") {
      add({PC_REASON_BLOCKLIST});
    } else if (s == "icmp") {
      add({PC_REASON_ICMP_DENIED});
    } else if (s == "fragments") {
      add({PC_REASON_FRAGMENT});
    } else if (absl::StartsWith(s, "rateLimits.syn")) {
      add({PC_REASON_SYN_RATE_SOURCE, PC_REASON_SYN_RATE_GLOBAL});
    } else if (absl::StartsWith(s, "rateLimits.connections")) {
      add({PC_REASON_CONN_RATE_SOURCE});
    } else if (absl::StartsWith(s, "rateLimits.icmp")) {
      add({PC_REASON_ICMP_RATE_SOURCE});
    } else {  // mode, destinations, anything new: every drop can move
      for (unsigned r = PC_FIRST_DROP_REASON; r < PC_REASON_COUNT; ++r) {
        if (IsDropReason(r)) reasons.insert(std::string(ReasonName(r)));
      }
    }
  }
  return {reasons.begin(), reasons.end()};
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
