#include "policy/compiler.h"

#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "policy/rules.h"

namespace portcullis::policy {
namespace {

// Address first, then length: every prefix sorts right before the prefixes
// it contains, which is the order the nesting sweep below needs.
bool AddressOrder(const PrefixEntry& a, const PrefixEntry& b) {
  if (a.prefix.family() != b.prefix.family()) return a.prefix.family() < b.prefix.family();
  if (a.prefix.bytes() != b.prefix.bytes()) return a.prefix.bytes() < b.prefix.bytes();
  return a.prefix.length() < b.prefix.length();
}

// Merges duplicates and folds each prefix's enclosing prefixes into its mask.
// Canonical prefixes are nested or disjoint, so a stack of the enclosing
// chain suffices: O(n log n) for the sort, O(n) for the sweep.
void FoldEnclosing(std::vector<PrefixEntry>& entries) {
  std::sort(entries.begin(), entries.end(), AddressOrder);
  std::vector<PrefixEntry> merged;
  merged.reserve(entries.size());
  for (const PrefixEntry& e : entries) {
    if (!merged.empty() && merged.back().prefix == e.prefix) {
      merged.back().mask |= e.mask;
    } else {
      merged.push_back(e);
    }
  }
  std::vector<const PrefixEntry*> chain;
  for (PrefixEntry& e : merged) {
    while (!chain.empty() && !chain.back()->prefix.Contains(e.prefix)) chain.pop_back();
    if (!chain.empty()) e.mask |= chain.back()->mask;
    chain.push_back(&e);
  }
  entries = std::move(merged);
}

absl::Status AddPrefixes(const google::protobuf::RepeatedPtrField<std::string>& cidrs,
                         pc_set_mask mask, absl::string_view what, std::vector<PrefixEntry>& out) {
  for (const std::string& text : cidrs) {
    auto prefix = IpPrefix::Parse(text);
    if (!prefix.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", prefix.status().message()));
    }
    out.push_back(PrefixEntry{prefix->Canonical(), mask});
  }
  return absl::OkStatus();
}

bool HasOverride(const v1::PortRule& rule) { return rule.has_syn_rate() || rule.has_conn_rate(); }

bool SameOverride(const v1::PortRule& a, const v1::PortRule& b) {
  auto same = [](bool ha, const v1::Rate& ra, bool hb, const v1::Rate& rb) {
    return ha == hb && (!ha || (ra.rate() == rb.rate() && ra.burst() == rb.burst()));
  };
  return same(a.has_syn_rate(), a.syn_rate(), b.has_syn_rate(), b.syn_rate()) &&
         same(a.has_conn_rate(), a.conn_rate(), b.has_conn_rate(), b.conn_rate());
}

// Bits of the source mask, given only to sets that some rule uses: unused
// sets cost nothing.
class SetBits {
 public:
  absl::Status Use(const std::string& name, std::vector<std::string>& names) {
    if (bit_.contains(name)) return absl::OkStatus();
    if (names.size() >= PC_MAX_SETS) {
      return absl::ResourceExhaustedError(absl::StrCat("the rules use more than ", PC_MAX_SETS,
                                                       " distinct sets, the datapath's limit"));
    }
    bit_[name] = static_cast<int>(names.size());
    names.push_back(name);
    return absl::OkStatus();
  }
  // The bit of a used set; nullopt for a set no rule uses.
  std::optional<pc_set_mask> MaskOf(const std::string& name) const {
    auto it = bit_.find(name);
    if (it == bit_.end()) return std::nullopt;
    return pc_set_mask{1} << it->second;
  }
  absl::StatusOr<pc_set_mask> MaskOf(const v1::Sources& from) const {
    pc_set_mask mask = 0;
    for (const std::string& name : from.sets()) {
      std::optional<pc_set_mask> bit = MaskOf(name);
      if (!bit) return absl::InvalidArgumentError(absl::StrCat("unknown set \"", name, "\""));
      mask |= *bit;
    }
    return mask;
  }

 private:
  absl::flat_hash_map<std::string, int> bit_;
};

absl::StatusOr<SetBits> AssignSetBits(const v1::PolicySpec& spec, CompiledPolicy& out) {
  SetBits bits;
  for (const auto* rules : {&spec.failsafe(), &spec.ports()}) {
    for (const v1::PortRule& rule : *rules) {
      for (const std::string& name : rule.from().sets()) {
        RETURN_IF_ERROR(bits.Use(name, out.set_bits));
      }
    }
  }
  return bits;
}

// Sources: the used sets and the blocklist, split by family and by exact
// host vs shorter prefix.
absl::Status CompileSources(const v1::PolicySpec& spec, const SetBits& bits, CompiledPolicy& out) {
  std::vector<PrefixEntry> sources;
  absl::flat_hash_set<std::string> defined;
  for (const v1::CidrSet& set : spec.sets()) {
    defined.insert(set.name());
    std::optional<pc_set_mask> bit = bits.MaskOf(set.name());
    if (!bit) continue;
    RETURN_IF_ERROR(
        AddPrefixes(set.cidrs(), *bit, absl::StrCat("set \"", set.name(), "\""), sources));
  }
  for (const std::string& name : out.set_bits) {
    if (!defined.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown set \"", name, "\""));
    }
  }
  RETURN_IF_ERROR(AddPrefixes(spec.blocklist(), kBlocklistMask, "blocklist", sources));
  FoldEnclosing(sources);
  for (PrefixEntry& e : sources) {
    const bool v4 = e.prefix.family() == Family::kV4;
    auto& table = e.prefix.is_host() ? (v4 ? out.src_v4_exact : out.src_v6_exact)
                                     : (v4 ? out.src_v4_prefix : out.src_v6_prefix);
    table.push_back(e);
  }
  return absl::OkStatus();
}

absl::Status CompileDestinations(const v1::PolicySpec& spec, CompiledPolicy& out) {
  std::vector<PrefixEntry> destinations;
  RETURN_IF_ERROR(AddPrefixes(spec.destinations(), 1, "destinations", destinations));
  FoldEnclosing(destinations);
  for (PrefixEntry& e : destinations) {
    (e.prefix.family() == Family::kV4 ? out.dst_v4 : out.dst_v6).push_back(e);
  }
  return absl::OkStatus();
}

absl::Status CheckCapacities(const CompiledPolicy& out) {
  struct Limit {
    const char* what;
    size_t have;
    size_t max;
  };
  for (const Limit& l : {
           Limit{"exact IPv4 sources", out.src_v4_exact.size(), PC_MAX_SRC_EXACT_V4},
           Limit{"exact IPv6 sources", out.src_v6_exact.size(), PC_MAX_SRC_EXACT_V6},
           Limit{"IPv4 source prefixes", out.src_v4_prefix.size(), PC_MAX_SRC_PREFIX_V4},
           Limit{"IPv6 source prefixes", out.src_v6_prefix.size(), PC_MAX_SRC_PREFIX_V6},
           Limit{"IPv4 destinations", out.dst_v4.size(), PC_MAX_DESTINATIONS},
           Limit{"IPv6 destinations", out.dst_v6.size(), PC_MAX_DESTINATIONS},
       }) {
    if (l.have > l.max) {
      return absl::ResourceExhaustedError(absl::StrCat("the policy has ", l.have, " ", l.what,
                                                       "; the datapath holds at most ", l.max));
    }
  }
  return absl::OkStatus();
}

// Which rule's rates apply to each port entry: the index into spec.ports of
// the rule with synRate/connRate that names it, -1 for none.
using OverrideRules = std::vector<int>;

// Ports: what every rule says about every (proto, port), written straight
// into the port entries. Each (proto, range) a rule names is one entry of
// counted_ports; a port counts its drops under the first range that names
// it (failsafe rules first, then port rules).
absl::StatusOr<OverrideRules> CompilePorts(const v1::PolicySpec& spec, const SetBits& bits,
                                           CompiledPolicy& out) {
  out.ports.resize(PC_PORT_ENTRIES);
  out.counted_range.assign(PC_PORT_ENTRIES, 0);
  OverrideRules override_rule(PC_PORT_ENTRIES, -1);
  absl::flat_hash_map<std::tuple<uint8_t, uint16_t, uint16_t>, uint16_t> counted_index;
  auto for_each_port = [&](const v1::PortRule& rule, auto&& fn) -> absl::Status {
    const int l4 = L4Index(rule.proto());
    if (l4 < 0) return absl::InvalidArgumentError("a rule has no proto");
    for (const v1::PortRange& r : rule.ports()) {
      if (!IsPortRange(r)) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad port range ", r.first(), "-", r.last()));
      }
      const pc_counted_port counted = {.first = static_cast<__u16>(r.first()),
                                       .last = static_cast<__u16>(r.last()),
                                       .proto = IpProtocol(rule.proto()),
                                       .in_use = 1};
      auto [it, added] =
          counted_index.try_emplace(std::make_tuple(counted.proto, counted.first, counted.last), 0);
      if (added && out.counted_ports.size() < 0xffff) {
        out.counted_ports.push_back(counted);
        it->second = static_cast<uint16_t>(out.counted_ports.size());
      }
      for (uint32_t port = r.first(); port <= r.last(); ++port) {
        const size_t i = static_cast<size_t>(l4) * PC_PORTS_PER_PROTO + port;
        if (out.counted_range[i] == 0) out.counted_range[i] = it->second;
        fn(i);
      }
    }
    return absl::OkStatus();
  };
  for (const v1::PortRule& rule : spec.failsafe()) {
    ASSIGN_OR_RETURN(const pc_set_mask mask, bits.MaskOf(rule.from()));
    RETURN_IF_ERROR(for_each_port(rule, [&](size_t i) {
      out.ports[i].flags |= PC_PORT_HAS_FAILSAFE | PC_PORT_NAMED;
      if (rule.from().any()) out.ports[i].flags |= PC_PORT_FAILSAFE_ANY;
      out.ports[i].failsafe_from |= mask;
    }));
  }
  for (int r = 0; r < spec.ports_size(); ++r) {
    const v1::PortRule& rule = spec.ports(r);
    ASSIGN_OR_RETURN(const pc_set_mask mask, bits.MaskOf(rule.from()));
    absl::Status conflict;
    RETURN_IF_ERROR(for_each_port(rule, [&](size_t i) {
      pc_port_policy& port = out.ports[i];
      port.flags |= PC_PORT_HAS_RULE | PC_PORT_NAMED;
      if (rule.from().any()) port.flags |= PC_PORT_ALLOW_ANY;
      port.allow_from |= mask;
      if (!HasOverride(rule)) return;
      if (override_rule[i] < 0) {
        override_rule[i] = r;
      } else if (!SameOverride(spec.ports(override_rule[i]), rule) && conflict.ok()) {
        conflict = absl::InvalidArgumentError(absl::StrCat(
            "rules ", override_rule[i], " and ", r, " set different rate overrides for ",
            i / PC_PORTS_PER_PROTO == PC_L4_TCP ? "tcp/" : "udp/", i % PC_PORTS_PER_PROTO));
      }
    }));
    RETURN_IF_ERROR(conflict);
  }
  return override_rule;
}

// Rules with their own rates get override ids in rule order; each port entry
// names the id of the rule whose rates apply to it.
absl::Status CompileOverrides(const v1::PolicySpec& spec, const OverrideRules& override_rule,
                              CompiledPolicy& out) {
  const v1::RateLimits& limits = spec.rate_limits();
  const pc_rate syn_default = ToBucket(limits.syn().per_source());
  const pc_rate conn_default = ToBucket(limits.connections().per_source());
  out.rate_overrides.push_back(pc_rate_override{});
  absl::flat_hash_map<int, uint32_t> override_of_rule;
  for (int r = 0; r < spec.ports_size(); ++r) {
    const v1::PortRule& rule = spec.ports(r);
    if (!HasOverride(rule)) continue;
    if (out.rate_overrides.size() >= PC_MAX_RATE_OVERRIDES) {
      return absl::ResourceExhaustedError(
          absl::StrCat("more than ", PC_MAX_RATE_OVERRIDES - 1, " rules set their own rates"));
    }
    override_of_rule[r] = static_cast<uint32_t>(out.rate_overrides.size());
    out.rate_overrides.push_back(
        pc_rate_override{rule.has_syn_rate() ? ToBucket(rule.syn_rate()) : syn_default,
                         rule.has_conn_rate() ? ToBucket(rule.conn_rate()) : conn_default});
  }
  for (size_t i = 0; i < out.ports.size(); ++i) {
    if (override_rule[i] >= 0) out.ports[i].rate_override_id = override_of_rule[override_rule[i]];
  }
  return absl::OkStatus();
}

// What the blocklist admits as a number that changes when it does: FNV-1a
// over its distinct prefixes in order, so that reordering or repeating an
// entry is no change.
uint64_t BlocklistHash(const v1::PolicySpec& spec) {
  std::vector<IpPrefix> prefixes;
  for (const std::string& text : spec.blocklist()) {
    if (auto prefix = IpPrefix::Parse(text); prefix.ok()) prefixes.push_back(*prefix);
  }
  std::sort(prefixes.begin(), prefixes.end());
  prefixes.erase(std::unique(prefixes.begin(), prefixes.end()), prefixes.end());
  uint64_t h = 14695981039346656037ULL;
  auto mix = [&h](uint8_t byte) { h = (h ^ byte) * 1099511628211ULL; };
  for (const IpPrefix& p : prefixes) {
    mix(static_cast<uint8_t>(p.family()));
    mix(static_cast<uint8_t>(p.length()));
    for (uint8_t b : p.bytes()) mix(b);
  }
  return h;
}

// Policy-wide settings; the slot's version and blocklist_since are set by
// whoever installs it.
void CompileConfig(const v1::PolicySpec& spec, CompiledPolicy& out) {
  const v1::RateLimits& limits = spec.rate_limits();
  pc_config& cfg = out.config;
  cfg.flags = PC_CFG_VALID;
  if (!out.src_v4_exact.empty()) cfg.flags |= PC_CFG_SRC_V4_EXACT;
  if (!out.src_v4_prefix.empty()) cfg.flags |= PC_CFG_SRC_V4_PREFIX;
  if (!out.src_v6_exact.empty()) cfg.flags |= PC_CFG_SRC_V6_EXACT;
  if (!out.src_v6_prefix.empty()) cfg.flags |= PC_CFG_SRC_V6_PREFIX;
  if (spec.mode() == v1::MODE_AUDIT) cfg.flags |= PC_CFG_AUDIT;
  if (spec.default_action() == v1::ACTION_ALLOW) cfg.flags |= PC_CFG_DEFAULT_ALLOW;
  if (spec.icmp() == v1::ACTION_DENY) cfg.flags |= PC_CFG_ICMP_DENY;
  if (spec.fragments() != v1::ACTION_ALLOW) cfg.flags |= PC_CFG_FRAGMENTS_DENY;
  if (spec.destinations_size() > 0) cfg.flags |= PC_CFG_HAS_DESTINATIONS;
  if (limits.syn().cookies() == v1::COOKIES_AUTO) cfg.flags |= PC_CFG_COOKIES_AUTO;
  if (limits.syn().cookies() == v1::COOKIES_ALWAYS) cfg.flags |= PC_CFG_COOKIES_ALWAYS;
  cfg.syn_per_source = ToBucket(limits.syn().per_source());
  cfg.syn_global = ToBucket(limits.syn().global());
  cfg.conn_per_source = ToBucket(limits.connections().per_source());
  cfg.icmp_per_source = ToBucket(limits.icmp().has_per_source() ? limits.icmp().per_source()
                                                                : DefaultIcmpPerSource());
  const v1::SourcePrefix& sp = limits.syn().source_prefix();
  cfg.source_prefix_v4 = static_cast<uint8_t>(sp.ipv4() ? sp.ipv4() : 32);
  cfg.source_prefix_v6 = static_cast<uint8_t>(sp.ipv6() ? sp.ipv6() : 64);
  cfg.blocklist_hash = BlocklistHash(spec);
}

}  // namespace

pc_rate ToBucket(const v1::Rate& rate) {
  pc_rate out{};
  if (rate.rate() == 0) return out;
  out.interval_ns = std::max<uint64_t>(1, (1'000'000'000ULL + rate.rate() / 2) / rate.rate());
  out.burst = std::max<uint64_t>(1, rate.burst());
  return out;
}

absl::StatusOr<CompiledPolicy> Compile(const v1::Policy& policy) {
  const v1::PolicySpec& spec = policy.spec();
  CompiledPolicy out;
  ASSIGN_OR_RETURN(const SetBits bits, AssignSetBits(spec, out));
  RETURN_IF_ERROR(CompileSources(spec, bits, out));
  RETURN_IF_ERROR(CompileDestinations(spec, out));
  RETURN_IF_ERROR(CheckCapacities(out));
  ASSIGN_OR_RETURN(const OverrideRules override_rule, CompilePorts(spec, bits, out));
  RETURN_IF_ERROR(CompileOverrides(spec, override_rule, out));
  CompileConfig(spec, out);
  return out;
}

}  // namespace portcullis::policy
