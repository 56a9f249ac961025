// Runs a command line through /bin/sh and captures its exit code and output.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/support/temp_dir.h"

namespace portcullis::testing {

struct CommandResult {
  int exit_code;
  std::string out, err;
};

inline CommandResult RunCommand(const std::string& command) {
  TempDir tmp;
  const std::string out = tmp.File("stdout"), err = tmp.File("stderr");
  const int status = std::system((command + " >" + out + " 2>" + err + " </dev/null").c_str());
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

}  // namespace portcullis::testing
