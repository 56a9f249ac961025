#include "common/flags.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"

namespace portcullis {
namespace {

void PrintHelp(absl::string_view usage, absl::string_view flags_from) {
  std::printf("%s\n\nFlags:\n", std::string(usage).c_str());
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::StrContains(flag->Filename(), flags_from)) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(), [](auto* a, auto* b) { return a->Name() < b->Name(); });
  for (const absl::CommandLineFlag* f : flags) {
    const std::string name = absl::StrReplaceAll(f->Name(), {{"_", "-"}});
    std::printf("  --%s", name.c_str());
    if (!f->DefaultValue().empty() && f->DefaultValue() != "false") {
      std::printf(" (default: %s)", f->DefaultValue().c_str());
    }
    std::printf("\n      %s\n", f->Help().c_str());
  }
}

}  // namespace

std::vector<char*> ParseFlags(int argc, char** argv, absl::string_view usage,
                              absl::string_view flags_from) {
  absl::SetProgramUsageMessage(usage);
  // Dashes in flag names become underscores; values are left alone.
  static std::vector<std::string> storage;
  storage.assign(argv, argv + argc);
  std::vector<char*> rewritten;
  bool positional_only = false;
  for (std::string& arg : storage) {
    if (arg == "--") positional_only = true;
    if (!positional_only && absl::StartsWith(arg, "--") && arg.size() > 2) {
      const size_t end = std::min(arg.find('='), arg.size());
      std::replace(arg.begin() + 2, arg.begin() + end, '-', '_');
      if (arg == "--help" || arg == "--helpshort") {
        PrintHelp(usage, flags_from);
        std::exit(0);
      }
      // Abseil exits 1 on an unknown flag; a usage error is 2 here, and the
      // message names the flag as the user spelled it.
      const std::string name = arg.substr(2, end - 2);
      const bool negated_bool =
          absl::StartsWith(name, "no") && absl::FindCommandLineFlag(name.substr(2)) != nullptr;
      if (absl::FindCommandLineFlag(name) == nullptr && !negated_bool) {
        std::fprintf(stderr, "%s: unknown flag --%s (see --help)\n",
                     std::string(absl::string_view(argv[0]).substr(
                                     absl::string_view(argv[0]).rfind('/') + 1))
                         .c_str(),
                     absl::StrReplaceAll(name, {{"_", "-"}}).c_str());
        std::exit(2);
      }
    }
    rewritten.push_back(arg.data());
  }
  return absl::ParseCommandLine(static_cast<int>(rewritten.size()), rewritten.data());
}

}  // namespace portcullis
