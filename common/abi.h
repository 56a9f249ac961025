// The C++ face of bpf/include/portcullis/abi.h: the structs that cross the
// kernel boundary, pinned by size, and the stable names of reasons, verdicts
// and hooks used in metrics, logs and JSON.
#pragma once

#include <array>

#include "absl/strings/string_view.h"
#include "portcullis/abi.h"

namespace portcullis {

static_assert(sizeof(pc_src_v4_key) == 8);
static_assert(sizeof(pc_src_v6_key) == 20);
static_assert(sizeof(pc_lpm_v4_key) == 9);
static_assert(sizeof(pc_lpm_v6_key) == 21);
static_assert(sizeof(pc_rate) == 16);
static_assert(sizeof(pc_port_policy) == 24);
static_assert(sizeof(pc_rate_override) == 32);
static_assert(sizeof(pc_config) == 104);
static_assert(sizeof(pc_flow) == 24);
static_assert(sizeof(pc_bucket_key_v4) == 8);
static_assert(sizeof(pc_bucket_key_v6) == 20);
static_assert(sizeof(pc_bucket) == 16);
static_assert(sizeof(pc_global_bucket) == 16);
static_assert(sizeof(pc_flow_key) == 40);
static_assert(sizeof(pc_verdict_key) == 8);
static_assert(sizeof(pc_counter) == 16);
static_assert(sizeof(pc_port_key) == 4);
static_assert(sizeof(pc_counted_port) == 8);
static_assert(sizeof(pc_sample) == 56);
static_assert(sizeof(pc_last_verdict) == 16);
static_assert(sizeof(pc_shadow_key) == 8);
static_assert(sizeof(pc_shadow_source_key) == 24);
static_assert(sizeof(pc_cookie_state) == 32);
static_assert(sizeof(pc_cookie_handover_key) == 8);
static_assert(sizeof(pc_cookie_handover) == 24);

// The names of PRODUCT.md, each written beside its enum value, so that a
// reason added to abi.h without a name here fails to compile (below) instead
// of being exported as reason="".
struct ReasonEntry {
  pc_reason reason;
  absl::string_view name;
};
inline constexpr ReasonEntry kReasonTable[] = {
    {PC_REASON_ALLOWED, "allowed"},
    {PC_REASON_FAILSAFE, "failsafe"},
    {PC_REASON_ESTABLISHED, "established"},
    {PC_REASON_NOT_POLICED, "not_policed"},
    {PC_REASON_NON_IP, "non_ip"},
    {PC_REASON_BLOCKLIST, "blocklist"},
    {PC_REASON_NOT_ALLOWLISTED, "not_allowlisted"},
    {PC_REASON_PORT_CLOSED, "port_closed"},
    {PC_REASON_SYN_RATE_SOURCE, "syn_rate_source"},
    {PC_REASON_SYN_RATE_GLOBAL, "syn_rate_global"},
    {PC_REASON_CONN_RATE_SOURCE, "conn_rate_source"},
    {PC_REASON_FRAGMENT, "fragment"},
    {PC_REASON_ICMP_DENIED, "icmp_denied"},
    {PC_REASON_MALFORMED, "malformed"},
    {PC_REASON_ICMP_RATE_SOURCE, "icmp_rate_source"},
    {PC_REASON_SYN_COOKIE, "syn_cookie"},
};

// Every value below PC_REASON_COUNT is named exactly once, and no name is
// empty or used twice.
constexpr bool EveryReasonNamedOnce() {
  for (unsigned r = 0; r < PC_REASON_COUNT; ++r) {
    int seen = 0;
    for (const ReasonEntry& e : kReasonTable) {
      if (static_cast<unsigned>(e.reason) == r) ++seen;
    }
    if (seen != 1) return false;
  }
  for (const ReasonEntry& a : kReasonTable) {
    if (a.name.empty() || static_cast<unsigned>(a.reason) >= PC_REASON_COUNT) return false;
    int same = 0;
    for (const ReasonEntry& b : kReasonTable) same += a.name == b.name;
    if (same != 1) return false;
  }
  return true;
}
static_assert(EveryReasonNamedOnce(), "every pc_reason needs exactly one name in kReasonTable");

// Indexed by enum pc_reason.
inline constexpr std::array<absl::string_view, PC_REASON_COUNT> kReasonNames = [] {
  std::array<absl::string_view, PC_REASON_COUNT> names{};
  for (const ReasonEntry& e : kReasonTable) names[e.reason] = e.name;
  return names;
}();

inline constexpr std::array<absl::string_view, PC_VERDICT_COUNT> kVerdictNames = {
    "pass", "drop", "audit", "cookie"};
inline constexpr std::array<absl::string_view, PC_HOOK_COUNT> kHookNames = {"xdp", "tc"};

inline absl::string_view ReasonName(unsigned reason) {
  return reason < kReasonNames.size() ? kReasonNames[reason] : "unknown";
}
inline absl::string_view VerdictName(unsigned verdict) {
  return verdict < kVerdictNames.size() ? kVerdictNames[verdict] : "unknown";
}
inline absl::string_view HookName(unsigned hook) {
  return hook < kHookNames.size() ? kHookNames[hook] : "unknown";
}
inline bool IsDropReason(unsigned reason) { return pc_reason_drops(reason); }
inline constexpr std::array<absl::string_view, PC_COOKIE_RESULTS> kCookieResultNames = {
    "sent", "valid", "invalid"};

}  // namespace portcullis
