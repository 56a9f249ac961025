// portcullisctl's commands that talk to the control service: push, diff,
// rollback, history, get, audit, status, and validate --control.
#pragma once

#include <vector>

namespace portcullis::cli {

// Exit codes a CI pipeline can rely on (also those of validate and simulate).
inline constexpr int kExitOk = 0;
inline constexpr int kExitInvalid = 1;  // bad or refused policy, differences (diff --exit-code),
                                        // a broken audit chain
inline constexpr int kExitUsage = 2;    // the command line is bad
inline constexpr int kExitSystem = 3;   // unreachable service, TLS failure, BPF unavailable
inline constexpr int kExitDenied = 4;   // no valid certificate, or the role does not allow it

// push, diff, ...; and validate when --control is given.
bool IsRemoteCommand(const char* command);
// args[0] is the program, args[1] the command.
int RunRemote(const std::vector<char*>& args);

}  // namespace portcullis::cli
