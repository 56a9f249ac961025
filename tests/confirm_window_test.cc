// The agent's side of a commit-confirmed push: a version awaiting
// confirmation is gone back from at its deadline, and only then; a
// confirmation in time, or a version needing none, closes the window.
#include "agent/confirm_window.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "tests/support/wait.h"

namespace portcullis::agent {
namespace {

using std::chrono::milliseconds;

class ConfirmWindowTest : public ::testing::Test {
 protected:
  std::atomic<int> reverts_{0};
  std::atomic<uint64_t> reverted_to_{0};
  std::atomic<int64_t> reverted_at_{0};
  ConfirmWindow window_{[this](const AppliedPolicy& previous) {
    reverted_to_ = previous.version;
    reverted_at_ = absl::ToUnixNanos(absl::Now());
    ++reverts_;
    return absl::OkStatus();
  }};
};

TEST_F(ConfirmWindowTest, GoesBackAtTheDeadlineAndNotBefore) {
  const absl::Time armed = absl::Now();
  window_.Arm(7, armed + absl::Milliseconds(300), {"previous: yaml", 6});
  EXPECT_TRUE(window_.awaiting());
  ASSERT_TRUE(testing::WaitFor([&] { return reverts_ == 1; }, std::chrono::seconds(5)));
  EXPECT_GE(absl::FromUnixNanos(reverted_at_) - armed, absl::Milliseconds(300));
  EXPECT_EQ(reverted_to_, 6u);
  EXPECT_FALSE(window_.awaiting());
  const ConfirmWindow::Reverted r = window_.last_revert();
  EXPECT_EQ(r.from, 7u);
  EXPECT_EQ(r.to, 6u);
  EXPECT_GT(r.at_unix_nanos, 0);
  EXPECT_FALSE(window_.Confirm(7)) << "too late: it was gone back from";
}

TEST_F(ConfirmWindowTest, AConfirmationInTimeOrAVersionNeedingNoneClosesTheWindow) {
  window_.Arm(7, absl::Now() + absl::Milliseconds(200), {"p", 6});
  EXPECT_FALSE(window_.Confirm(8)) << "another version's confirmation";
  EXPECT_TRUE(window_.Confirm(7));
  window_.Arm(9, absl::Now() + absl::Milliseconds(200), {"p", 7});
  window_.Disarm();
  std::this_thread::sleep_for(milliseconds(500));
  EXPECT_EQ(reverts_, 0);
  EXPECT_FALSE(window_.awaiting());
  EXPECT_EQ(window_.last_revert().from, 0u);
}

// Over an unconfirmed version, the way back is to the last confirmed one.
TEST_F(ConfirmWindowTest, OverAnUnconfirmedVersionItGoesBackToWhatThatOneReplaced) {
  window_.Arm(7, absl::Now() + absl::Seconds(30), {"p6", 6});
  window_.Arm(8, absl::Now() + absl::Milliseconds(100), {"p7", 7});
  ASSERT_TRUE(testing::WaitFor([&] { return reverts_ == 1; }, std::chrono::seconds(5)));
  EXPECT_EQ(reverted_to_, 6u);
  EXPECT_EQ(window_.last_revert().from, 8u);
}

}  // namespace
}  // namespace portcullis::agent
