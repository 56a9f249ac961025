#include "control/baseline.h"

#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/ip_prefix.h"
#include "policy/rules.h"
#include "policy/text.h"

namespace portcullis::control {
namespace {

// Sets that hold a prefix of length 0 (every address of a family).
std::set<std::string> EverySourceSets(const v1::Policy& policy) {
  std::set<std::string> out;
  for (const v1::CidrSet& set : policy.spec().sets()) {
    for (const std::string& cidr : set.cidrs()) {
      auto prefix = IpPrefix::Parse(cidr);
      if (prefix.ok() && prefix->length() == 0) out.insert(set.name());
    }
  }
  return out;
}

// Why `rule` admits every source, or "" when it does not.
std::string OpenToAll(const v1::PortRule& rule, const std::set<std::string>& every_source) {
  if (rule.from().any()) return "from: any";
  for (const std::string& set : rule.from().sets()) {
    if (every_source.contains(set)) {
      return absl::StrCat("set \"", set, "\" holds 0.0.0.0/0 or ::/0");
    }
  }
  return "";
}

std::vector<std::string> ProtectedIn(const v1::PortRule& rule, const PortList& protected_ports) {
  std::vector<std::string> out;
  for (const auto& [first, last] : protected_ports.ranges()) {
    for (const v1::PortRange& r : rule.ports()) {
      if (r.first() <= last && first <= r.last()) {
        out.push_back(first == last ? absl::StrCat(first) : absl::StrCat(first, "-", last));
        break;
      }
    }
  }
  return out;
}

void CheckRules(const google::protobuf::RepeatedPtrField<v1::PortRule>& rules,
                absl::string_view section, const std::set<std::string>& every_source,
                const Baseline& baseline, policy::Diagnostics& diags) {
  for (int i = 0; i < rules.size(); ++i) {
    const std::string why = OpenToAll(rules[i], every_source);
    if (why.empty()) continue;
    const std::vector<std::string> ports = ProtectedIn(rules[i], baseline.protected_ports);
    if (ports.empty()) continue;
    diags.Error(
        absl::StrCat("spec.", section, "[", i, "]"),
        absl::StrCat("rule \"", policy::RuleText(rules[i]), "\" opens protected port",
                     ports.size() == 1 ? " " : "s ", absl::StrJoin(ports, ", "),
                     " to every source (", why, "); admit only the networks that manage it"));
  }
}

bool Covers(const v1::PortRule& rule, uint32_t port) {
  if (rule.proto() != v1::PROTOCOL_TCP || (!rule.from().any() && rule.from().sets().empty())) {
    return false;
  }
  for (const v1::PortRange& r : rule.ports()) {
    if (r.first() <= port && port <= r.last()) return true;
  }
  return false;
}

bool HasRuleFor(const v1::PolicySpec& spec, uint32_t first, uint32_t last) {
  for (const auto* rules : {&spec.failsafe(), &spec.ports()}) {
    for (const v1::PortRule& rule : *rules) {
      for (const v1::PortRange& r : rule.ports()) {
        if (r.first() <= first && last <= r.last()) return true;
      }
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<PortList> PortList::Parse(absl::string_view text) {
  PortList list;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    const std::vector<absl::string_view> bounds = absl::StrSplit(item, '-');
    uint32_t first = 0, last = 0;
    if (bounds.size() > 2 || !absl::SimpleAtoi(bounds.front(), &first) ||
        !absl::SimpleAtoi(bounds.back(), &last) || !policy::IsPortRange(first, last)) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", item, "\" is not a port (1-65535) or a FIRST-LAST range"));
    }
    list.ranges_.emplace_back(first, last);
  }
  return list;
}

bool PortList::Overlaps(uint32_t first, uint32_t last) const {
  for (const auto& [a, b] : ranges_) {
    if (first <= b && a <= last) return true;
  }
  return false;
}

std::string PortList::ToString() const {
  return absl::StrJoin(ranges_, ",", [](std::string* out, const std::pair<uint32_t, uint32_t>& r) {
    absl::StrAppend(out, r.first);
    if (r.second != r.first) absl::StrAppend(out, "-", r.second);
  });
}

void CheckBaseline(const v1::Policy& candidate, const v1::Policy* live, bool allow_failsafe_change,
                   const Baseline& baseline, policy::Diagnostics& diags) {
  const v1::PolicySpec& spec = candidate.spec();
  const std::set<std::string> every_source = EverySourceSets(candidate);
  CheckRules(spec.failsafe(), "failsafe", every_source, baseline, diags);
  CheckRules(spec.ports(), "ports", every_source, baseline, diags);

  if (spec.default_action() == v1::ACTION_ALLOW) {
    std::vector<std::string> open;
    for (const auto& [first, last] : baseline.protected_ports.ranges()) {
      if (!HasRuleFor(spec, first, last)) {
        open.push_back(first == last ? absl::StrCat(first) : absl::StrCat(first, "-", last));
      }
    }
    if (!open.empty()) {
      diags.Error("spec.defaultAction",
                  absl::StrCat("defaultAction: allow leaves protected port",
                               open.size() == 1 ? " " : "s ", absl::StrJoin(open, ", "),
                               " open to every source; add rules that admit only the networks "
                               "that manage them"));
    }
  }

  if (spec.default_action() == v1::ACTION_DENY) {
    std::vector<std::string> uncovered;
    for (const auto& [first, last] : baseline.management_ports.ranges()) {
      for (uint32_t port = first; port <= last; ++port) {
        bool covered = false;
        for (const v1::PortRule& rule : spec.failsafe()) covered = covered || Covers(rule, port);
        if (!covered) uncovered.push_back(absl::StrCat(port));
      }
    }
    if (!uncovered.empty()) {
      diags.Error("spec.failsafe",
                  absl::StrCat("defaultAction: deny needs a failsafe rule for the "
                               "node-management port",
                               uncovered.size() == 1 ? " " : "s ", absl::StrJoin(uncovered, ", "),
                               "/tcp, so that a mistake in the port rules cannot lock the "
                               "operators out of the nodes"));
    }
  }

  if (live != nullptr && !allow_failsafe_change) {
    std::multiset<std::string> kept;
    for (const v1::PortRule& rule : spec.failsafe()) kept.insert(policy::RuleText(rule));
    for (int i = 0; i < live->spec().failsafe_size(); ++i) {
      const std::string text = policy::RuleText(live->spec().failsafe(i));
      if (auto it = kept.find(text); it != kept.end()) {
        kept.erase(it);
        continue;
      }
      diags.Error(absl::StrCat("live version's spec.failsafe[", i, "]"),
                  absl::StrCat("removes the live failsafe rule \"", text,
                               "\"; push with --allow-failsafe-change if that is intended"));
    }
  }
}

}  // namespace portcullis::control
