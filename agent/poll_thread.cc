#include "agent/poll_thread.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace portcullis::agent {

absl::Status PollThread::Start(int fd, std::function<void()> on_readable) {
  const int stop = eventfd(0, EFD_CLOEXEC);
  if (stop < 0) return absl::UnavailableError(absl::StrCat("eventfd: ", std::strerror(errno)));
  stop_.Reset(stop);
  thread_ = std::thread([fd, stop, on_readable = std::move(on_readable)] {
    while (true) {
      struct pollfd fds[2] = {{fd, POLLIN, 0}, {stop, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0 && errno != EINTR) return;
      if (fds[1].revents) return;
      if (fds[0].revents & POLLIN) on_readable();
    }
  });
  return absl::OkStatus();
}

void PollThread::Stop() {
  if (!thread_.joinable()) return;
  const uint64_t one = 1;
  (void)!write(stop_.get(), &one, sizeof(one));
  thread_.join();
}

}  // namespace portcullis::agent
