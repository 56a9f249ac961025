#include "policy/diff.h"

#include <map>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "policy/rules.h"
#include "policy/text.h"

namespace portcullis::policy {
namespace {

using Op = Change::Op;

template <typename Items>
std::vector<std::string> Texts(const Items& items) {
  return std::vector<std::string>(items.begin(), items.end());
}

std::vector<std::string> RuleTexts(const google::protobuf::RepeatedPtrField<v1::PortRule>& rules) {
  std::vector<std::string> out;
  for (const v1::PortRule& r : rules) out.push_back(RuleText(r));
  return out;
}

// Removed (in `from` order), then added (in `to` order); duplicates count.
void DiffLists(const std::string& section, const std::vector<std::string>& from,
               const std::vector<std::string>& to, std::vector<Change>& out) {
  // Counts in hash maps: a 100k-entry set is diffed on every push.
  absl::flat_hash_map<absl::string_view, int> in_to, in_from;
  for (const std::string& s : to) ++in_to[s];
  for (const std::string& s : from) ++in_from[s];
  for (const std::string& s : from) {
    if (auto it = in_to.find(s); it != in_to.end() && it->second > 0) {
      --it->second;
    } else {
      out.push_back({Op::kRemoved, section, s});
    }
  }
  for (const std::string& s : to) {
    if (auto it = in_from.find(s); it != in_from.end() && it->second > 0) {
      --it->second;
    } else {
      out.push_back({Op::kAdded, section, s});
    }
  }
}

void DiffValue(const std::string& section, const std::string& from, const std::string& to,
               std::vector<Change>& out) {
  if (from != to) out.push_back({Op::kChanged, section, absl::StrCat(from, " -> ", to)});
}

std::string Word(v1::Action a) {
  return a == v1::ACTION_ALLOW ? "allow" : a == v1::ACTION_DENY ? "deny" : "(unset)";
}
std::string Word(v1::Mode m) {
  return m == v1::MODE_AUDIT ? "audit" : m == v1::MODE_ENFORCE ? "enforce" : "(unset)";
}
std::string RateText(bool has, const v1::Rate& r) {
  return has ? absl::StrCat(r.rate(), "/s burst ", r.burst()) : "(unset)";
}

}  // namespace

std::vector<Change> DiffPolicies(const v1::Policy& from, const v1::Policy& to) {
  std::vector<Change> out;
  const v1::PolicySpec &a = from.spec(), &b = to.spec();
  DiffValue("metadata.name", from.metadata().name(), to.metadata().name(), out);
  DiffValue("mode", Word(a.mode()), Word(b.mode()), out);
  DiffValue("defaultAction", Word(a.default_action()), Word(b.default_action()), out);
  DiffLists("destinations", Texts(a.destinations()), Texts(b.destinations()), out);

  std::map<std::string, std::vector<std::string>> sets_a, sets_b;
  for (const v1::CidrSet& s : a.sets()) sets_a[s.name()] = Texts(s.cidrs());
  for (const v1::CidrSet& s : b.sets()) sets_b[s.name()] = Texts(s.cidrs());
  for (const v1::CidrSet& s : a.sets()) {
    if (!sets_b.contains(s.name())) out.push_back({Op::kRemoved, "sets", s.name()});
  }
  for (const v1::CidrSet& s : b.sets()) {
    if (!sets_a.contains(s.name())) out.push_back({Op::kAdded, "sets", s.name()});
  }
  for (const v1::CidrSet& s : b.sets()) {
    static const std::vector<std::string> kNone;
    auto it = sets_a.find(s.name());
    DiffLists(absl::StrCat("sets.", s.name()), it == sets_a.end() ? kNone : it->second,
              sets_b[s.name()], out);
  }
  for (const v1::CidrSet& s : a.sets()) {
    if (!sets_b.contains(s.name())) {
      DiffLists(absl::StrCat("sets.", s.name()), sets_a[s.name()], {}, out);
    }
  }
  DiffLists("blocklist", Texts(a.blocklist()), Texts(b.blocklist()), out);
  DiffLists("failsafe", RuleTexts(a.failsafe()), RuleTexts(b.failsafe()), out);
  DiffLists("ports", RuleTexts(a.ports()), RuleTexts(b.ports()), out);
  DiffValue("icmp", Word(a.icmp()), Word(b.icmp()), out);
  DiffValue("fragments", Word(a.fragments()), Word(b.fragments()), out);

  const v1::RateLimits &ra = a.rate_limits(), &rb = b.rate_limits();
  DiffValue("rateLimits.syn.perSource", RateText(ra.syn().has_per_source(), ra.syn().per_source()),
            RateText(rb.syn().has_per_source(), rb.syn().per_source()), out);
  DiffValue("rateLimits.syn.global", RateText(ra.syn().has_global(), ra.syn().global()),
            RateText(rb.syn().has_global(), rb.syn().global()), out);
  auto prefix = [](const v1::SynLimits& s) {
    return s.has_source_prefix() ? absl::StrCat("ipv4 /", s.source_prefix().ipv4(), ", ipv6 /",
                                                s.source_prefix().ipv6())
                                 : std::string("(unset)");
  };
  DiffValue("rateLimits.syn.sourcePrefix", prefix(ra.syn()), prefix(rb.syn()), out);
  DiffValue("rateLimits.syn.cookies", std::string(CookiesWord(ra.syn().cookies())),
            std::string(CookiesWord(rb.syn().cookies())), out);
  DiffValue("rateLimits.connections.perSource",
            RateText(ra.connections().has_per_source(), ra.connections().per_source()),
            RateText(rb.connections().has_per_source(), rb.connections().per_source()), out);
  DiffValue("rateLimits.icmp.perSource",
            RateText(ra.icmp().has_per_source(), ra.icmp().per_source()),
            RateText(rb.icmp().has_per_source(), rb.icmp().per_source()), out);
  return out;
}

std::string FormatChanges(const std::vector<Change>& changes, bool color) {
  std::string out;
  for (const Change& c : changes) {
    const char* mark = c.op == Op::kAdded ? "+" : c.op == Op::kRemoved ? "-" : "~";
    const char* on = !color                 ? ""
                     : c.op == Op::kAdded   ? "\033[32m"
                     : c.op == Op::kRemoved ? "\033[31m"
                                            : "\033[33m";
    absl::StrAppend(&out, on, mark, " ", c.section, ": ", c.text, color ? "\033[0m" : "", "\n");
  }
  return out;
}

}  // namespace portcullis::policy
