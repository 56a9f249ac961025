// Command-line parsing with Abseil flags, spelled as PRODUCT.md spells them:
// `--policy-file` for the flag defined as `policy_file`. --help lists the
// flags defined in the binary's main file, with dashes.
#pragma once

#include <vector>

#include "absl/strings/string_view.h"

namespace portcullis {

// Parses argv and returns the positional arguments, argv[0] first. Exits 2
// on an unknown flag (naming it), 0 after --help. --help lists the flags
// defined in files whose path contains `flags_from`, e.g. "agent/main.cc" or
// "cli/".
std::vector<char*> ParseFlags(int argc, char** argv, absl::string_view usage,
                              absl::string_view flags_from);

}  // namespace portcullis
