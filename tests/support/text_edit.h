// Editing a test policy's text: one replacement, which must find its target.
#pragma once

#include <string>

#include "gtest/gtest.h"

namespace portcullis::testing {

// `text` with the first `from` replaced by `to`; a `from` that is not there
// fails the test (an edit that silently did nothing would test nothing).
inline std::string Edit(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

}  // namespace portcullis::testing
