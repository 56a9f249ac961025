// The flood benchmark's second part (`flood_bench clients`): what a spoofed
// SYN flood does to real clients. nginx listens on the receiver's :443; a
// client in the sender's namespace makes 200 requests, one every 20 ms,
// while the spoofing sender floods at 100 kpps, 600 kpps and the highest
// rate the receiver's ring takes from it without overrun. For each of: no
// filter (the kernel's own SYN cookies), nftables synproxy, Portcullis with
// `cookies: off` and with `cookies: auto`, interleaved in every round. It
// prints each one's success, connect p50 and p99, and the overrun.
#pragma once

#include <functional>
#include <string>

#include "bench/flood_lab.h"
#include "datapath/datapath.h"

namespace portcullis::bench {

// Installs a policy; exits on failure.
using InstallPolicy = std::function<void(const std::string& yaml)>;

// Runs the part in `lab`, whose receiver runs `dp`; `only` keeps the
// configurations whose name contains it. Returns the exit code.
int RunClients(FloodLab& lab, datapath::Datapath& dp, SpoofSender& spoof,
               const InstallPolicy& install, const std::string& only);

}  // namespace portcullis::bench
