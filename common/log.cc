#include "common/log.h"

#include <cstdio>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace portcullis {

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", c);
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string FormatLogLine(LogLevel level, absl::string_view msg, const LogFields& fields) {
  static constexpr const char* kLevels[] = {"info", "warning", "error"};
  std::string out = absl::StrCat(
      "{\"ts\":",
      JsonQuote(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone())),
      ",\"level\":\"", kLevels[static_cast<int>(level)], "\",\"msg\":", JsonQuote(msg));
  for (const auto& [key, value] : fields) {
    absl::StrAppend(&out, ",", JsonQuote(key), ":");
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::string>) {
            absl::StrAppend(&out, JsonQuote(v));
          } else if constexpr (std::is_same_v<T, bool>) {
            absl::StrAppend(&out, v ? "true" : "false");
          } else {
            absl::StrAppend(&out, v);
          }
        },
        value);
  }
  return out + "}";
}

void Log(LogLevel level, absl::string_view msg, const LogFields& fields) {
  static std::mutex mu;
  const std::string line = FormatLogLine(level, msg, fields) + "\n";
  std::lock_guard<std::mutex> lock(mu);
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
}

}  // namespace portcullis
