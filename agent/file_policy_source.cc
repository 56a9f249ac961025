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
#include "agent/poll_thread.h"
#include "policy/validator.h"

namespace portcullis::agent {

absl::StatusOr<PolicyUpdate> LoadPolicyFile(const std::string& path) {
  auto text = policy::ReadTextFile(path);
  if (!text.ok()) return text.status();
  policy::CheckedPolicyFile checked = policy::CheckPolicyText(*text);
  if (!checked.ok()) {
    return absl::InvalidArgumentError(absl::StripSuffix(checked.Format(path), "\n"));
  }
  return PolicyUpdate{checked.loaded->policy, *std::move(text), path};
}

namespace {

class FilePolicySource : public PolicySource {
 public:
  explicit FilePolicySource(std::string path) : path_(std::move(path)) {}
  ~FilePolicySource() override { Stop(); }

  absl::Status Start(std::function<absl::Status(PolicyUpdate)> on_update,
                     std::function<void(std::string)> on_rejected) override {
    const int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (fd < 0) {
      return absl::UnavailableError(absl::StrCat("inotify_init1: ", std::strerror(errno)));
    }
    inotify_.Reset(fd);
    const std::string dir = std::filesystem::path(path_).parent_path().string();
    if (inotify_add_watch(fd, dir.empty() ? "." : dir.c_str(),
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0) {
      return absl::UnavailableError(
          absl::StrCat("inotify_add_watch(", dir, "): ", std::strerror(errno)));
    }
    if (auto text = policy::ReadTextFile(path_); text.ok()) last_text_ = *text;
    return thread_.Start(
        fd, [this, on_update = std::move(on_update), on_rejected = std::move(on_rejected)] {
          OnChange(on_update, on_rejected);
        });
  }

  void Stop() override { thread_.Stop(); }

 private:
  void Drain() {
    char buf[4096];
    while (read(inotify_.get(), buf, sizeof(buf)) > 0) {
    }
  }

  void OnChange(const std::function<absl::Status(PolicyUpdate)>& on_update,
                const std::function<void(std::string)>& on_rejected) {
    Drain();
    // Writers often touch a file several times in a row; let them finish.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    Drain();
    auto text = policy::ReadTextFile(path_);
    if (!text.ok() || *text == last_text_) return;  // deleted for a moment, or unchanged
    last_text_ = *text;
    auto update = LoadPolicyFile(path_);
    if (update.ok()) {
      on_update(*std::move(update)).IgnoreError();  // the agent logs and counts it
    } else {
      on_rejected(std::string(update.status().message()));
    }
  }

  std::string path_;
  std::string last_text_;
  datapath::UniqueFd inotify_;
  PollThread thread_;  // last: stopped before the members it uses go
};

}  // namespace

std::unique_ptr<PolicySource> NewFilePolicySource(std::string path) {
  return std::make_unique<FilePolicySource>(std::move(path));
}

}  // namespace portcullis::agent
