#include "policy/validator.h"

#include <algorithm>
#include <set>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/ip_prefix.h"
#include "policy/compiler.h"
#include "policy/rules.h"

namespace portcullis::policy {
namespace {

constexpr uint64_t kMaxRate = 1'000'000'000;  // per second; keeps GCRA math in 64 bits

std::string At(absl::string_view path, size_t i) { return absl::StrCat(path, "[", i, "]"); }

void CheckCidrs(const google::protobuf::RepeatedPtrField<std::string>& cidrs,
                absl::string_view path, Diagnostics& diags) {
  absl::flat_hash_map<std::string, size_t> seen;
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
    auto [it, fresh] = seen.try_emplace(prefix->ToString(), i);
    if (!fresh) {
      diags.Warning(
          p, absl::StrCat("\"", cidrs[i], "\" is listed twice (also at index ", it->second, ")"));
    }
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

// The ports of a rule, expanded, for overlap checks: (l4 << 16) | port.
std::vector<uint32_t> RulePorts(const v1::PortRule& rule) {
  std::vector<uint32_t> out;
  const int l4 = L4Index(rule.proto());
  if (l4 < 0) return out;  // a rule without proto is an error of its own
  for (const v1::PortRange& r : rule.ports()) {
    if (!IsPortRange(r)) continue;
    for (uint32_t p = r.first(); p <= r.last(); ++p) out.push_back((uint32_t(l4) << 16) | p);
  }
  return out;
}

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
  struct Cover {
    bool any = false;
    std::set<std::string> sets;
    int last_rule = -1;
  };
  absl::flat_hash_map<uint32_t, Cover> covered;
  std::vector<std::vector<uint32_t>> ports_of;  // each rule's ports, expanded once
  ports_of.reserve(rules.size());
  for (const v1::PortRule& rule : rules) ports_of.push_back(RulePorts(rule));
  for (int r = 0; r < rules.size(); ++r) {
    const v1::PortRule& rule = rules[r];
    const std::vector<uint32_t>& ports = ports_of[r];
    if (ports.empty()) continue;
    for (int q = 0; q < r; ++q) {
      const v1::PortRule& earlier = rules[q];
      if (earlier.proto() == rule.proto() && ports_of[q] == ports &&
          earlier.from().any() == rule.from().any() &&
          std::set<std::string>(earlier.from().sets().begin(), earlier.from().sets().end()) ==
              std::set<std::string>(rule.from().sets().begin(), rule.from().sets().end())) {
        diags.Warning(DescribeRule(path, r), absl::StrCat("duplicates ", DescribeRule(path, q)));
        goto next_rule;
      }
    }
    {
      bool adds = false;
      int by = -1;
      for (uint32_t port : ports) {
        auto it = covered.find(port);
        const bool shadowed =
            it != covered.end() &&
            (it->second.any ||
             (!rule.from().any() &&
              std::all_of(rule.from().sets().begin(), rule.from().sets().end(),
                          [&](const std::string& s) { return it->second.sets.contains(s); })));
        if (!shadowed) {
          adds = true;
          break;
        }
        by = std::max(by, it->second.last_rule);
      }
      if (!adds && !rule.has_syn_rate() && !rule.has_conn_rate()) {
        diags.Warning(DescribeRule(path, r),
                      absl::StrCat("is shadowed: earlier rules (up to ", DescribeRule(path, by),
                                   ") already admit these sources on all of its ports"));
      }
    }
  next_rule:
    for (uint32_t port : ports) {
      Cover& c = covered[port];
      c.any = c.any || rule.from().any();
      c.sets.insert(rule.from().sets().begin(), rule.from().sets().end());
      c.last_rule = r;
    }
  }
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
