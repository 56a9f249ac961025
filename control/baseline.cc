#include "control/baseline.h"

#include <algorithm>
#include <array>
#include <set>
#include <vector>

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

using u128 = unsigned __int128;

// Whether `rule`'s from: names `set`.
bool Names(const v1::PortRule& rule, const v1::CidrSet& set) {
  return std::find(rule.from().sets().begin(), rule.from().sets().end(), set.name()) !=
         rule.from().sets().end();
}

// The addresses a rule admits, per family, as merged [first, last] runs of
// 128-bit integers (IPv4 in the low 32 bits): what a rule opens, whatever
// prefixes spell it (0.0.0.0/1 and 128.0.0.0/1 are 0.0.0.0/0).
class AddressSpace {
 public:
  static AddressSpace Everything() {
    AddressSpace a;
    a.Add(*IpPrefix::Parse("0.0.0.0/0"));
    a.Add(*IpPrefix::Parse("::/0"));
    a.Merge();
    return a;
  }
  // The union of the rule's sets (by name, in `policy`), or everything.
  static AddressSpace Of(const v1::PortRule& rule, const v1::Policy& policy) {
    if (rule.from().any()) return Everything();
    AddressSpace a;
    for (const v1::CidrSet& set : policy.spec().sets()) {
      if (!Names(rule, set)) continue;
      for (const std::string& cidr : set.cidrs()) {
        if (auto prefix = IpPrefix::Parse(cidr); prefix.ok()) a.Add(prefix->Canonical());
      }
    }
    a.Merge();
    return a;
  }

  void Add(const IpPrefix& p) {
    u128 first = 0;
    const int bytes = p.family() == Family::kV4 ? 4 : 16;
    for (int i = 0; i < bytes; ++i) first = (first << 8) | p.bytes()[i];
    const int host_bits = p.max_length() - p.length();
    const u128 span = host_bits == 128 ? ~u128{0} : (u128{1} << host_bits) - 1;
    runs(p.family()).emplace_back(first, first + span);
  }
  void Add(const AddressSpace& other) {
    for (Family f : {Family::kV4, Family::kV6}) {
      runs(f).insert(runs(f).end(), other.runs(f).begin(), other.runs(f).end());
    }
    Merge();
  }

  // Whether the family's whole space is admitted.
  bool All(Family f) const {
    const auto& r = runs(f);
    return r.size() == 1 && r[0].first == 0 && r[0].second == Max(f);
  }
  // Addresses admitted, capped at 2^127 (enough to compare).
  u128 Size(Family f) const {
    u128 n = 0;
    for (const auto& [first, last] : runs(f)) {
      const u128 len = last - first;  // one less than the run's size
      n = len >= (u128{1} << 127) || n >= (u128{1} << 127) ? u128{1} << 127 : n + len + 1;
    }
    return n;
  }
  // What `this` admits and `other` does not, as text: prefixes where the
  // pieces are prefixes, "first - last" where not.
  std::vector<std::string> Missing(const AddressSpace& other) const {
    std::vector<std::string> out;
    for (Family f : {Family::kV4, Family::kV6}) {
      for (auto [first, last] : runs(f)) {
        // other's runs are sorted and disjoint: walk them, cutting the run.
        bool done = false;
        for (const auto& [a, b] : other.runs(f)) {
          if (b < first || done) continue;
          if (a > last) break;
          if (a > first) out.push_back(Text(f, first, a - 1));
          if (b >= last) {
            done = true;
          } else {
            first = b + 1;
          }
        }
        if (!done) out.push_back(Text(f, first, last));
      }
    }
    return out;
  }

 private:
  static u128 Max(Family f) { return f == Family::kV4 ? u128{0xffffffffu} : ~u128{0}; }
  std::vector<std::pair<u128, u128>>& runs(Family f) { return f == Family::kV4 ? v4_ : v6_; }
  const std::vector<std::pair<u128, u128>>& runs(Family f) const {
    return f == Family::kV4 ? v4_ : v6_;
  }
  void Merge() {
    for (auto* r : {&v4_, &v6_}) {
      std::sort(r->begin(), r->end());
      std::vector<std::pair<u128, u128>> merged;
      for (const auto& run : *r) {
        if (!merged.empty() &&
            (merged.back().second == ~u128{0} || run.first <= merged.back().second + 1)) {
          merged.back().second = std::max(merged.back().second, run.second);
        } else {
          merged.push_back(run);
        }
      }
      *r = std::move(merged);
    }
  }
  // A run as a prefix when it is one, else as "first - last".
  static std::string Text(Family f, u128 first, u128 last) {
    auto address = [f](u128 v) {
      std::array<uint8_t, 16> b{};
      const int n = f == Family::kV4 ? 4 : 16;
      for (int i = n - 1; i >= 0; --i, v >>= 8) b[i] = static_cast<uint8_t>(v);
      return IpPrefix::FromBytes(f, b.data(), f == Family::kV4 ? 32 : 128);
    };
    const u128 len = last - first;
    const int bits = f == Family::kV4 ? 32 : 128;
    for (int host = 0; host <= bits; ++host) {
      const u128 span = host == 128 ? ~u128{0} : (u128{1} << host) - 1;
      if (span == len && (first & span) == 0) {
        IpPrefix p = address(first);
        return IpPrefix::FromBytes(f, p.bytes().data(), bits - host).ToString();
      }
      if (span > len) break;
    }
    std::string a = address(first).ToString(), b = address(last).ToString();
    return absl::StrCat(a.substr(0, a.find('/')), " - ", b.substr(0, b.find('/')));
  }

  std::vector<std::pair<u128, u128>> v4_, v6_;
};

// More than this of a family is, for a protected port, every source: more
// than a /8 of IPv4, or than a /32 (one organisation's allocation) of IPv6.
constexpr int kWidestV4 = 8, kWidestV6 = 32;

// Why `rule` admits (about) every source, or "" when it does not.
std::string OpenToAll(const v1::PortRule& rule, const v1::Policy& policy) {
  if (rule.from().any()) return "from: any";
  for (const v1::CidrSet& set : policy.spec().sets()) {
    if (!Names(rule, set)) continue;
    for (const std::string& cidr : set.cidrs()) {
      auto prefix = IpPrefix::Parse(cidr);
      if (prefix.ok() && prefix->length() == 0) {
        return absl::StrCat("set \"", set.name(), "\" holds 0.0.0.0/0 or ::/0");
      }
    }
  }
  const AddressSpace space = AddressSpace::Of(rule, policy);
  if (space.All(Family::kV4)) return "its sets together hold every IPv4 address";
  if (space.All(Family::kV6)) return "its sets together hold every IPv6 address";
  if (space.Size(Family::kV4) > (u128{1} << (32 - kWidestV4))) {
    return absl::StrCat("its sets together hold more IPv4 addresses than a /", kWidestV4);
  }
  if (space.Size(Family::kV6) > (u128{1} << (128 - kWidestV6))) {
    return absl::StrCat("its sets together hold more IPv6 addresses than a /", kWidestV6);
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
                absl::string_view section, const v1::Policy& policy, const Baseline& baseline,
                policy::Diagnostics& diags) {
  for (int i = 0; i < rules.size(); ++i) {
    const std::string why = OpenToAll(rules[i], policy);
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

// What the failsafe rules of `policy` admit on (proto, port).
AddressSpace FailsafeAdmits(const v1::Policy& policy, v1::Protocol proto, uint32_t port) {
  AddressSpace space;
  for (const v1::PortRule& rule : policy.spec().failsafe()) {
    if (rule.proto() != proto) continue;
    for (const v1::PortRange& r : rule.ports()) {
      if (r.first() <= port && port <= r.last()) {
        space.Add(AddressSpace::Of(rule, policy));
        break;
      }
    }
  }
  return space;
}

// Every source and port the live failsafe rules admit, the candidate's must
// admit too: the comparison is on what the rules admit, not on their text
// (a rule kept word for word with its set emptied admits nothing). Ports
// are judged per segment between the rules' range boundaries.
void CheckFailsafeKept(const v1::Policy& candidate, const v1::Policy& live,
                       policy::Diagnostics& diags) {
  for (int i = 0; i < live.spec().failsafe_size(); ++i) {
    const v1::PortRule& rule = live.spec().failsafe(i);
    std::set<uint32_t> starts;  // segment starts within this rule's ranges
    for (const v1::PortRange& r : rule.ports()) {
      starts.insert(r.first());
      if (r.last() < 65535) starts.insert(r.last() + 1);
    }
    for (const auto* rules : {&live.spec().failsafe(), &candidate.spec().failsafe()}) {
      for (const v1::PortRule& other : *rules) {
        for (const v1::PortRange& r : other.ports()) {
          starts.insert(r.first());
          if (r.last() < 65535) starts.insert(r.last() + 1);
        }
      }
    }
    const AddressSpace admitted = AddressSpace::Of(rule, live);
    std::vector<std::string> lost;
    for (const uint32_t port : starts) {
      bool in_rule = false;
      for (const v1::PortRange& r : rule.ports())
        in_rule = in_rule || (r.first() <= port && port <= r.last());
      if (!in_rule) continue;
      const std::vector<std::string> missing =
          admitted.Missing(FailsafeAdmits(candidate, rule.proto(), port));
      if (missing.empty()) continue;
      lost.push_back(absl::StrCat(policy::ProtocolName(rule.proto()), "/", port, " from ",
                                  absl::StrJoin(missing, ", ")));
    }
    if (lost.empty()) continue;
    diags.Error(absl::StrCat("live version's spec.failsafe[", i, "]"),
                absl::StrCat("the live failsafe rule \"", policy::RuleText(rule),
                             "\" would no longer admit ", absl::StrJoin(lost, "; "),
                             "; push with --allow-failsafe-change if that is intended"));
  }
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
  CheckRules(spec.failsafe(), "failsafe", candidate, baseline, diags);
  CheckRules(spec.ports(), "ports", candidate, baseline, diags);

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

  if (live != nullptr && !allow_failsafe_change) CheckFailsafeKept(candidate, *live, diags);
}

}  // namespace portcullis::control
