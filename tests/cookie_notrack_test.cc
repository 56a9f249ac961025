// --cookie-mark: the mark bits that carry a cookie's completing ACK to the
// agent's nftables rule (agent/cookie_notrack.h). The rule itself is
// exercised end to end (node_e2e_tests, agent_e2e_tests).
#include "agent/cookie_notrack.h"

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace portcullis::agent {
namespace {

using ::testing::HasSubstr;

TEST(CookieMarkTest, TakesHexOrDecimalAndZeroForNone) {
  EXPECT_EQ(*ParseCookieMark("0x00100000"), 0x00100000u);
  EXPECT_EQ(*ParseCookieMark("0X10"), 0x10u);
  EXPECT_EQ(*ParseCookieMark("1048576"), 0x00100000u);
  EXPECT_EQ(*ParseCookieMark("0xffffffff"), 0xffffffffu);
  EXPECT_EQ(*ParseCookieMark("0"), 0u);
  EXPECT_EQ(absl::StrFormat("0x%08x", kDefaultCookieMark), "0x00100000");
}

TEST(CookieMarkTest, RefusesWhatIsNotA32BitMarkNamingTheFlag) {
  for (const char* bad : {"", "0x", "zz", "-1", "0x1ffffffff", "4294967296", "0x10 0x20"}) {
    const auto mark = ParseCookieMark(bad);
    ASSERT_FALSE(mark.ok()) << bad;
    EXPECT_THAT(mark.status().message(), HasSubstr("--cookie-mark: \"")) << bad;
    EXPECT_THAT(mark.status().message(), HasSubstr("is not a 32-bit mark")) << bad;
  }
}

}  // namespace
}  // namespace portcullis::agent
