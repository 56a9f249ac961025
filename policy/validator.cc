#include "policy/validator.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/ip_prefix.h"
#include "policy/compiler.h"
#include "policy/limits.h"
#include "policy/rules.h"

namespace portcullis::policy {
namespace {

constexpr uint64_t kMaxRate = 1'000'000'000;  // per second; keeps GCRA math in 64 bits

std::string At(absl::string_view path, size_t i) { return absl::StrCat(path, "[", i, "]"); }

void CheckCidrs(const google::protobuf::RepeatedPtrField<std::string>& cidrs,
                absl::string_view path, Diagnostics& diags) {
  // Repeats are found by sorting parsed prefixes (24 bytes each), not by a
  // map of their texts: a blocklist holds a million of them.
  std::vector<std::pair<IpPrefix, int>> parsed;
  parsed.reserve(cidrs.size());
  for (int i = 0; i < cidrs.size(); ++i) {
    const std::string p = At(path, i);
    auto prefix = IpPrefix::Parse(cidrs[i]);
    if (!prefix.ok()) {
      diags.Error(p, prefix.status().message());
      continue;
    }
    if (prefix->HasHostBits()) {
      diags.Error(p, absl::StrCat("\"", cidrs[i], "\" has host bits set; write ",
                                  prefix->Canonical().ToString(), " for the network, or /",
                                  prefix->max_length(), " for the host"));
      continue;
    }
    parsed.emplace_back(*prefix, i);
  }
  std::sort(parsed.begin(), parsed.end());
  std::vector<std::pair<int, int>> repeats;  // (index, first index), in file order
  for (size_t k = 1, run = 0; k < parsed.size(); ++k) {
    if (!(parsed[k].first == parsed[run].first)) {
      run = k;  // a new prefix; within a run, the first index sorts first
    } else {
      repeats.emplace_back(parsed[k].second, parsed[run].second);
    }
  }
  std::sort(repeats.begin(), repeats.end());
  for (const auto& [i, first] : repeats) {
    diags.Warning(At(path, i),
                  absl::StrCat("\"", cidrs[i], "\" is listed twice (also at index ", first, ")"));
  }
}

void CheckRate(const v1::Rate& rate, absl::string_view path, Diagnostics& diags) {
  if (rate.rate() < 1 || rate.rate() > kMaxRate) {
    diags.Error(absl::StrCat(path, ".rate"),
                absl::StrCat("rate must be 1 to ", kMaxRate, " per second"));
  }
  if (rate.burst() < 1 || rate.burst() > kMaxRate) {
    diags.Error(absl::StrCat(path, ".burst"), absl::StrCat("burst must be 1 to ", kMaxRate));
  }
}

// A rule's ports as sorted, disjoint intervals of (l4 << 16) | port.
using Intervals = std::vector<std::pair<uint32_t, uint32_t>>;
Intervals RuleIntervals(const v1::PortRule& rule) {
  Intervals out;
  const int l4 = L4Index(rule.proto());
  if (l4 < 0) return out;  // a rule without proto is an error of its own
  const uint32_t base = static_cast<uint32_t>(l4) << 16;
  for (const v1::PortRange& r : rule.ports()) {
    if (IsPortRange(r)) out.emplace_back(base | r.first(), base | r.last());
  }
  std::sort(out.begin(), out.end());
  Intervals merged;
  for (const auto& iv : out) {
    if (!merged.empty() && iv.first <= merged.back().second + 1) {
      merged.back().second = std::max(merged.back().second, iv.second);
    } else {
      merged.push_back(iv);
    }
  }
  return merged;
}

// Which sources the rules so far admit on each port, as disjoint segments
// of ports with the same answer: the work grows with the number of ranges
// the policy writes, never with the number of ports they span.
class Coverage {
 public:
  // Whether every port in `ivs` already admits every source of `from`; if
  // so, *by is the last rule that made it so.
  bool Covers(const Intervals& ivs, const v1::Sources& from, int* by) const {
    for (const auto& [first, last] : ivs) {
      uint64_t pos = first;
      auto it = segments_.upper_bound(first);
      if (it != segments_.begin() && std::prev(it)->second.last >= first) --it;
      while (pos <= last) {
        if (it == segments_.end() || it->first > pos) return false;  // a port nobody opened
        const Cover& c = it->second.cover;
        const bool admits =
            c.any ||
            (!from.any() && std::all_of(from.sets().begin(), from.sets().end(),
                                        [&](const std::string& s) { return c.sets.contains(s); }));
        if (!admits) return false;
        *by = std::max(*by, c.last_rule);
        pos = uint64_t{it->second.last} + 1;
        ++it;
      }
    }
    return true;
  }

  void Add(const Intervals& ivs, const v1::Sources& from, int rule) {
    for (const auto& [first, last] : ivs) {
      SplitAt(first);
      SplitAt(last + 1);
      uint64_t pos = first;
      auto it = segments_.lower_bound(first);
      while (pos <= last) {
        if (it == segments_.end() || it->first > pos) {
          // A gap up to the next segment (or to `last`): a fresh segment.
          const uint32_t end = it == segments_.end() ? last : std::min(last, it->first - 1);
          it = segments_.emplace_hint(it, static_cast<uint32_t>(pos), Segment{end, {}});
        }
        Cover& c = it->second.cover;
        c.any = c.any || from.any();
        c.sets.insert(from.sets().begin(), from.sets().end());
        c.last_rule = rule;
        pos = uint64_t{it->second.last} + 1;
        ++it;
      }
    }
  }

 private:
  struct Cover {
    bool any = false;
    std::set<std::string> sets;
    int last_rule = -1;
  };
  struct Segment {
    uint32_t last;
    Cover cover;
  };

  // Makes `port` the first port of a segment, if a segment holds it.
  void SplitAt(uint32_t port) {
    auto it = segments_.upper_bound(port);
    if (it == segments_.begin()) return;
    --it;
    if (it->first == port || it->second.last < port) return;
    Segment tail{it->second.last, it->second.cover};
    it->second.last = port - 1;
    segments_.emplace(port, std::move(tail));
  }

  std::map<uint32_t, Segment> segments_;  // keyed by first port
};

void CheckRule(const v1::PortRule& rule, const std::string& path, bool failsafe,
               const absl::flat_hash_set<std::string>& sets, Diagnostics& diags) {
  if (rule.proto() == v1::PROTOCOL_UNSPECIFIED) {
    diags.Error(absl::StrCat(path, ".proto"), "missing (tcp or udp)");
  }
  if (rule.ports_size() == 0)
    diags.Error(absl::StrCat(path, ".ports"), "missing (a non-empty list)");
  for (int i = 0; i < rule.ports_size(); ++i) {
    const v1::PortRange& r = rule.ports(i);
    const std::string p = At(absl::StrCat(path, ".ports"), i);
    if (!IsPortRange(r.first(), r.first()) || !IsPortRange(r.last(), r.last())) {
      diags.Error(p, absl::StrCat("ports are ", kMinPort, " to ", kMaxPort));
    } else if (r.first() > r.last()) {
      diags.Error(p, absl::StrCat("range ", r.first(), "-", r.last(), " runs backwards"));
    }
  }
  const v1::Sources& from = rule.from();
  if (!from.any() && from.sets_size() == 0) {
    diags.Error(absl::StrCat(path, ".from"), "missing (any, or a list of set names)");
  }
  for (int i = 0; i < from.sets_size(); ++i) {
    const std::string& name = from.sets(i);
    if (name == "any") {
      diags.Error(At(absl::StrCat(path, ".from"), i), "\"any\" stands alone: write from: any");
    } else if (!sets.contains(name)) {
      diags.Error(At(absl::StrCat(path, ".from"), i),
                  absl::StrCat("unknown set \"", name, "\" (define it under spec.sets)"));
    }
  }
  if (rule.has_syn_rate()) {
    if (failsafe) {
      diags.Error(absl::StrCat(path, ".synRate"), "failsafe rules are never rate-limited");
    } else {
      CheckRate(rule.syn_rate(), absl::StrCat(path, ".synRate"), diags);
    }
  }
  if (rule.has_conn_rate()) {
    if (failsafe) {
      diags.Error(absl::StrCat(path, ".connRate"), "failsafe rules are never rate-limited");
    } else {
      CheckRate(rule.conn_rate(), absl::StrCat(path, ".connRate"), diags);
    }
  }
}

std::string DescribeRule(const std::string& path, int index) {
  return absl::StrCat(path, "[", index, "]");
}

// Rules combine by union: a source passes a port if any rule for it admits
// the source. So a rule that admits nothing new on any of its ports is
// shadowed by the rules before it, and an identical rule is a duplicate.
void CheckOverlaps(const google::protobuf::RepeatedPtrField<v1::PortRule>& rules,
                   const std::string& path, Diagnostics& diags) {
  Coverage covered;
  std::map<std::string, int> first_with;  // a rule's ports and sources -> its first index
  for (int r = 0; r < rules.size(); ++r) {
    const v1::PortRule& rule = rules[r];
    const Intervals ports = RuleIntervals(rule);
    if (ports.empty()) continue;
    std::vector<std::string> sets(rule.from().sets().begin(), rule.from().sets().end());
    std::sort(sets.begin(), sets.end());
    sets.erase(std::unique(sets.begin(), sets.end()), sets.end());
    std::string key = rule.from().any() ? "any" : absl::StrJoin(sets, ",");
    for (const auto& [first, last] : ports) absl::StrAppend(&key, ";", first, "-", last);
    const auto [earlier, fresh] = first_with.try_emplace(key, r);
    int by = -1;
    if (!fresh) {
      diags.Warning(DescribeRule(path, r),
                    absl::StrCat("duplicates ", DescribeRule(path, earlier->second)));
    } else if (!rule.has_syn_rate() && !rule.has_conn_rate() &&
               covered.Covers(ports, rule.from(), &by)) {
      diags.Warning(DescribeRule(path, r),
                    absl::StrCat("is shadowed: earlier rules (up to ", DescribeRule(path, by),
                                 ") already admit these sources on all of its ports"));
    }
    covered.Add(ports, rule.from(), r);
  }
}

// The admission limits of policy/limits.h; false when one is exceeded.
bool CheckLimits(const v1::Policy& policy, Diagnostics& diags) {
  const v1::PolicySpec& spec = policy.spec();
  bool ok = true;
  auto over = [&](absl::string_view path, absl::string_view what, uint64_t n, uint64_t limit) {
    if (n <= limit) return;
    diags.Error(path, absl::StrCat(n, " ", what, "; the limit is ", limit));
    ok = false;
  };
  over("spec.failsafe", "rules", spec.failsafe_size(), kMaxRules);
  over("spec.ports", "rules", spec.ports_size(), kMaxRules);
  uint64_t ranges = 0;
  for (const v1::PortRule& r : spec.failsafe()) ranges += r.ports_size();
  for (const v1::PortRule& r : spec.ports()) ranges += r.ports_size();
  over("spec", "port ranges in the rules", ranges, kMaxPortRanges);
  over("spec.sets", "sets", spec.sets_size(), kMaxSetsDefined);
  uint64_t cidrs = spec.blocklist_size() + spec.destinations_size();
  for (const v1::CidrSet& set : spec.sets()) {
    cidrs += set.cidrs_size();
    if (set.name().size() > kMaxNameBytes) {
      over(absl::StrCat("spec.sets.", set.name().substr(0, 32), "..."), "bytes in the set's name",
           set.name().size(), kMaxNameBytes);
    }
  }
  over("spec", "CIDRs in the sets, the blocklist and the destinations", cidrs, kMaxCidrs);
  over("metadata.name", "bytes", policy.metadata().name().size(), kMaxNameBytes);
  return ok;
}

}  // namespace

void Validate(const v1::Policy& policy, Diagnostics& diags) {
  if (policy.api_version() != kApiVersion) {
    diags.Error("apiVersion",
                policy.api_version().empty()
                    ? absl::StrCat("missing (must be ", kApiVersion, ")")
                    : absl::StrCat("\"", policy.api_version(), "\" is not supported (must be ",
                                   kApiVersion, ")"));
  }
  if (policy.kind() != kKind) {
    diags.Error("kind", policy.kind().empty()
                            ? absl::StrCat("missing (must be ", kKind, ")")
                            : absl::StrCat("\"", policy.kind(), "\" is not ", kKind));
  }
  if (policy.metadata().name().empty()) diags.Error("metadata.name", "missing policy name");
  if (!policy.has_spec()) {
    diags.Error("spec", "missing");
    return;
  }
  const v1::PolicySpec& spec = policy.spec();
  // Over a limit, nothing else is checked: the checks' cost is what the
  // limits bound.
  if (!CheckLimits(policy, diags)) return;

  CheckCidrs(spec.destinations(), "spec.destinations", diags);
  CheckCidrs(spec.blocklist(), "spec.blocklist", diags);
  absl::flat_hash_set<std::string> set_names;
  for (const v1::CidrSet& set : spec.sets()) {
    const std::string p = absl::StrCat("spec.sets.", set.name());
    if (!set_names.insert(set.name()).second) {
      diags.Error(p, absl::StrCat("set \"", set.name(), "\" is defined twice"));
    }
    if (set.name() == "any") diags.Error(p, "\"any\" is reserved and cannot name a set");
    if (set.cidrs_size() == 0) diags.Warning(p, "the set is empty");
    CheckCidrs(set.cidrs(), p, diags);
  }

  absl::flat_hash_set<std::string> used;
  for (int i = 0; i < spec.failsafe_size(); ++i) {
    CheckRule(spec.failsafe(i), At("spec.failsafe", i), true, set_names, diags);
    used.insert(spec.failsafe(i).from().sets().begin(), spec.failsafe(i).from().sets().end());
  }
  for (int i = 0; i < spec.ports_size(); ++i) {
    CheckRule(spec.ports(i), At("spec.ports", i), false, set_names, diags);
    used.insert(spec.ports(i).from().sets().begin(), spec.ports(i).from().sets().end());
  }
  for (const v1::CidrSet& set : spec.sets()) {
    if (!used.contains(set.name())) {
      diags.Warning(absl::StrCat("spec.sets.", set.name()),
                    absl::StrCat("set \"", set.name(), "\" is not used by any rule"));
    }
  }
  CheckOverlaps(spec.failsafe(), "spec.failsafe", diags);
  CheckOverlaps(spec.ports(), "spec.ports", diags);

  const v1::RateLimits& limits = spec.rate_limits();
  if (limits.syn().has_per_source()) {
    CheckRate(limits.syn().per_source(), "spec.rateLimits.syn.perSource", diags);
  }
  if (limits.syn().has_global()) {
    CheckRate(limits.syn().global(), "spec.rateLimits.syn.global", diags);
  }
  if (limits.connections().has_per_source()) {
    CheckRate(limits.connections().per_source(), "spec.rateLimits.connections.perSource", diags);
  }
  if (limits.icmp().has_per_source()) {
    CheckRate(limits.icmp().per_source(), "spec.rateLimits.icmp.perSource", diags);
  }
  if (limits.syn().cookies() == v1::COOKIES_AUTO && !limits.syn().has_global()) {
    diags.Warning("spec.rateLimits.syn.cookies",
                  "cookies: auto answers the SYNs over rateLimits.syn.global, which is not set: "
                  "no SYN will be answered with a cookie");
  }
  if (limits.syn().has_source_prefix()) {
    const v1::SourcePrefix& sp = limits.syn().source_prefix();
    // 0 is what an omitted field reads as; it means the default (32, 64).
    if (sp.ipv4() > 32) {
      diags.Error("spec.rateLimits.syn.sourcePrefix.ipv4", "must be 1 to 32");
    }
    if (sp.ipv6() > 128) {
      diags.Error("spec.rateLimits.syn.sourcePrefix.ipv6", "must be 1 to 128");
    }
  }

  if (spec.default_action() != v1::ACTION_ALLOW && spec.failsafe_size() == 0) {
    diags.Warning("spec.failsafe",
                  "defaultAction is deny and there is no failsafe rule: a mistake in this "
                  "policy can lock administrators out of the node");
  }

  if (diags.has_errors()) return;
  // Sizes are known only after expansion; the compiler is the one judge.
  auto compiled = Compile(policy);
  if (!compiled.ok()) diags.Error("spec", compiled.status().message());
}

bool CheckedPolicyFile::ok() const { return loaded.has_value() && errors() == 0; }

int CheckedPolicyFile::errors() const { return CountErrors(diagnostics); }

int CheckedPolicyFile::warnings() const { return static_cast<int>(diagnostics.size()) - errors(); }

std::string CheckedPolicyFile::Format(absl::string_view file) const {
  return FormatDiagnostics(file, diagnostics);
}

CheckedPolicyFile CheckPolicyText(absl::string_view text) {
  CheckedPolicyFile result;
  Diagnostics diags;
  result.loaded = ParsePolicyYaml(text, diags);
  if (result.loaded) {
    diags.set_locations(&result.loaded->locations);
    Validate(result.loaded->policy, diags);
  }
  result.diagnostics = diags.all();
  // File order reads best; findings without a place come first.
  std::stable_sort(result.diagnostics.begin(), result.diagnostics.end(),
                   [](const Diagnostic& a, const Diagnostic& b) {
                     return std::tie(a.location.line, a.location.column) <
                            std::tie(b.location.line, b.location.column);
                   });
  return result;
}

CheckedPolicyFile CheckPolicyFile(const std::string& path) {
  auto text = ReadTextFile(path);
  if (!text.ok()) {
    CheckedPolicyFile result;
    // Format() names the file; keep only why it could not be read.
    absl::string_view why = text.status().message();
    if (absl::StartsWith(why, path + ": ")) why.remove_prefix(path.size() + 2);
    result.diagnostics.push_back(
        Diagnostic{Severity::kError, "", {}, absl::StrCat("cannot read: ", why)});
    return result;
  }
  return CheckPolicyText(*text);
}

}  // namespace portcullis::policy
