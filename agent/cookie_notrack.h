// The nftables rule that takes the ACK completing a SYN cookie out of
// conntrack. The cookie completer (bpf/cookie.bpf.c) marks that one packet;
// a chain of table `inet portcullis`, at prerouting before conntrack,
// clears the mark and untracks it. Without it, on a node with NAT loaded
// (kube-proxy), netfilter's NAT at local-in drops the request socket the
// completer assigned, and TCP resets the connection (docs/ARCHITECTURE.md,
// SYN cookies). Like the pins, the table outlives the agent (the programs
// that mark go on running); --uninstall removes it, and so does an agent
// that sets no mark.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace portcullis::agent {

inline constexpr char kNftTable[] = "portcullis";
// --cookie-mark's default: a bit kube-proxy's marks (0x4000, 0x8000) leave
// alone. It is set on one packet and cleared before conntrack, so only a
// TC program after ours on the same uplink could see it.
inline constexpr uint32_t kDefaultCookieMark = 0x00100000;

// Creates (or replaces, in one transaction) the table with its one chain,
// for packets whose mark has every bit of `mark`.
absl::Status InstallCookieNotrack(uint32_t mark);

// Removes the table; OK when there is none.
absl::Status RemoveCookieNotrack();

// --cookie-mark: "0x..." or decimal; 0 means no mark and no rule.
absl::StatusOr<uint32_t> ParseCookieMark(absl::string_view text);

}  // namespace portcullis::agent
