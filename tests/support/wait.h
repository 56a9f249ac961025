// Polling helpers for end-to-end tests: wait for a condition with a bound,
// never sleep for a fixed time.
#pragma once

#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace portcullis::testing {

// True as soon as `pred` is; false if it still is not after `limit`.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::steady_clock::duration limit,
             std::chrono::milliseconds poll = std::chrono::milliseconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(poll);
  }
  return pred();
}

// A process's resident memory, in MB; -1 when it cannot be read.
inline long RssMb(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  for (std::string line; std::getline(in, line);) {
    long kb = 0;
    if (absl::StartsWith(line, "VmRSS:") &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::StripSuffix(line.substr(6), "kB")),
                         &kb)) {
      return kb / 1024;
    }
  }
  return -1;
}

// `count` distinct /28s of 10.0.0.0/8 as YAML list items (one per line,
// indented for a set inside `sets:`); `variant` 0 and 1 give disjoint lists.
inline std::string PrefixItems(int count, int variant) {
  std::string out;
  for (int i = 0; i < count; ++i) {
    const uint32_t n = static_cast<uint32_t>(i) * 2 + static_cast<uint32_t>(variant % 2);
    absl::StrAppend(&out, "      - 10.", (n >> 12) & 255, ".", (n >> 4) & 255, ".", (n & 15) << 4,
                    "/28\n");
  }
  return out;
}

}  // namespace portcullis::testing
