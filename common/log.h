// Structured logs: one JSON object per line on stderr, e.g.
// {"ts":"2026-11-26T03:40:00.123Z","level":"info","msg":"policy applied","version":3}
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/string_view.h"

namespace portcullis {

using LogValue = std::variant<std::string, int64_t, uint64_t, double, bool>;
using LogFields = std::vector<std::pair<std::string, LogValue>>;

enum class LogLevel { kInfo, kWarning, kError };

void Log(LogLevel level, absl::string_view msg, const LogFields& fields = {});
inline void LogInfo(absl::string_view msg, const LogFields& f = {}) {
  Log(LogLevel::kInfo, msg, f);
}
inline void LogWarning(absl::string_view msg, const LogFields& f = {}) {
  Log(LogLevel::kWarning, msg, f);
}
inline void LogError(absl::string_view msg, const LogFields& f = {}) {
  Log(LogLevel::kError, msg, f);
}

// The JSON line for a record (exposed for tests and the drop-sample log).
std::string FormatLogLine(LogLevel level, absl::string_view msg, const LogFields& fields);
std::string JsonQuote(absl::string_view s);

}  // namespace portcullis
