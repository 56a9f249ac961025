#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "agent/policy_source.h"
#include "policy/validator.h"

namespace portcullis::agent {

absl::StatusOr<PolicyUpdate> LoadPolicyFile(const std::string& path) {
  auto text = policy::ReadTextFile(path);
  if (!text.ok()) return text.status();
  policy::CheckedPolicyFile checked = policy::CheckPolicyText(*text);
  if (!checked.ok()) {
    return absl::InvalidArgumentError(
        absl::StripSuffix(checked.Format(path), "\n"));
  }
  return PolicyUpdate{checked.loaded->policy, *std::move(text), path};
}

namespace {

class FilePolicySource : public PolicySource {
 public:
  explicit FilePolicySource(std::string path) : path_(std::move(path)) {}
  ~FilePolicySource() override { Stop(); }

  absl::Status Start(std::function<void(PolicyUpdate)> on_update,
                     std::function<void(std::string)> on_rejected) override {
    inotify_fd_ = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (inotify_fd_ < 0) {
      return absl::UnavailableError(absl::StrCat("inotify_init1: ", std::strerror(errno)));
    }
    const std::string dir = std::filesystem::path(path_).parent_path().string();
    if (inotify_add_watch(inotify_fd_, dir.empty() ? "." : dir.c_str(),
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0) {
      return absl::UnavailableError(
          absl::StrCat("inotify_add_watch(", dir, "): ", std::strerror(errno)));
    }
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this, on_update = std::move(on_update),
                           on_rejected = std::move(on_rejected)] {
      Run(on_update, on_rejected);
    });
    return absl::OkStatus();
  }

  void Stop() override {
    if (thread_.joinable()) {
      const uint64_t one = 1;
      (void)!write(stop_fd_, &one, sizeof(one));
      thread_.join();
    }
    if (inotify_fd_ >= 0) close(inotify_fd_);
    if (stop_fd_ >= 0) close(stop_fd_);
    inotify_fd_ = stop_fd_ = -1;
  }

 private:
  void Run(const std::function<void(PolicyUpdate)>& on_update,
           const std::function<void(std::string)>& on_rejected) {
    std::string last_text;
    if (auto text = policy::ReadTextFile(path_); text.ok()) last_text = *text;
    while (true) {
      struct pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0 && errno != EINTR) return;
      if (fds[1].revents) return;
      if (!(fds[0].revents & POLLIN)) continue;
      char buf[4096];
      while (read(inotify_fd_, buf, sizeof(buf)) > 0) {
      }
      // Writers often touch a file several times in a row; let them finish.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      while (read(inotify_fd_, buf, sizeof(buf)) > 0) {
      }
      auto text = policy::ReadTextFile(path_);
      if (!text.ok() || *text == last_text) continue;  // deleted for a moment, or unchanged
      last_text = *text;
      auto update = LoadPolicyFile(path_);
      if (update.ok()) {
        on_update(*std::move(update));
      } else {
        on_rejected(std::string(update.status().message()));
      }
    }
  }

  std::string path_;
  int inotify_fd_ = -1;
  int stop_fd_ = -1;
  std::thread thread_;
};

}  // namespace

std::unique_ptr<PolicySource> NewFilePolicySource(std::string path) {
  return std::make_unique<FilePolicySource>(std::move(path));
}

}  // namespace portcullis::agent
