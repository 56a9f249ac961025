// A thread that waits for a file descriptor to become readable and calls
// back each time, until stopped. Used by the policy-file and link watchers.
#pragma once

#include <functional>
#include <thread>

#include "absl/status/status.h"
#include "datapath/bpf_util.h"

namespace portcullis::agent {

class PollThread {
 public:
  PollThread() = default;
  ~PollThread() { Stop(); }
  PollThread(const PollThread&) = delete;
  PollThread& operator=(const PollThread&) = delete;

  // Calls `on_readable` on the thread whenever `fd` (not owned) is readable.
  absl::Status Start(int fd, std::function<void()> on_readable);
  // Wakes the thread and waits for it to finish; idempotent.
  void Stop();

 private:
  datapath::UniqueFd stop_;
  std::thread thread_;
};

}  // namespace portcullis::agent
