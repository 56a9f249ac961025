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
static_assert(sizeof(pc_config) == 72);
static_assert(sizeof(pc_bucket_key_v4) == 8);
static_assert(sizeof(pc_bucket_key_v6) == 20);
static_assert(sizeof(pc_bucket) == 16);
static_assert(sizeof(pc_flow_key) == 40);
static_assert(sizeof(pc_verdict_key) == 8);
static_assert(sizeof(pc_counter) == 16);
static_assert(sizeof(pc_port_key) == 4);
static_assert(sizeof(pc_counted_port) == 8);
static_assert(sizeof(pc_sample) == 56);
static_assert(sizeof(pc_last_verdict) == 16);

// Indexed by enum pc_reason. These are the names of PRODUCT.md.
inline constexpr std::array<absl::string_view, PC_REASON_COUNT> kReasonNames = {
    "allowed",         "failsafe",        "established",      "not_policed",
    "non_ip",          "blocklist",       "not_allowlisted",  "port_closed",
    "syn_rate_source", "syn_rate_global", "conn_rate_source", "fragment",
    "icmp_denied",     "malformed",
};
static_assert(kReasonNames.size() == PC_REASON_COUNT, "one name per reason");

inline constexpr std::array<absl::string_view, PC_VERDICT_COUNT> kVerdictNames = {
    "pass", "drop", "audit"};
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
inline bool IsDropReason(unsigned reason) { return reason >= PC_FIRST_DROP_REASON; }

}  // namespace portcullis
