// A loaded datapath with a settable clock, for BPF_PROG_TEST_RUN tests.
#pragma once

#include <bpf/bpf.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "common/abi.h"
#include "datapath/counters.h"
#include "datapath/datapath.h"
#include "datapath/policy_installer.h"
#include "datapath/test_run.h"
#include "gtest/gtest.h"
#include "policy/compiler.h"
#include "policy/validator.h"
#include "tests/support/frame.h"

namespace portcullis::testing {

// Compiles YAML that must be valid; fails the test otherwise.
inline policy::CompiledPolicy CompileYaml(absl::string_view yaml) {
  policy::CheckedPolicyFile checked = policy::CheckPolicyText(yaml);
  EXPECT_TRUE(checked.ok()) << checked.Format("<test policy>");
  if (!checked.ok()) return {};
  auto compiled = policy::Compile(checked.loaded->policy);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return compiled.ok() ? *std::move(compiled) : policy::CompiledPolicy{};
}

// Empties a hash or LRU map (flow tables, buckets) between tests.
inline void ClearMap(int fd, size_t key_size) {
  std::vector<uint8_t> key(key_size);
  while (bpf_map_get_next_key(fd, nullptr, key.data()) == 0) {
    ASSERT_EQ(bpf_map_delete_elem(fd, key.data()), 0);
  }
}

// Zeroes every slot of an array of u64 values (first_sight), in one call.
inline void ZeroArray(int fd, uint32_t entries) {
  std::vector<uint32_t> keys(entries);
  for (uint32_t i = 0; i < entries; ++i) keys[i] = i;
  const std::vector<uint64_t> zeros(entries);
  uint32_t count = entries;
  ASSERT_EQ(bpf_map_update_batch(fd, keys.data(), zeros.data(), &count, nullptr), 0);
  ASSERT_EQ(count, entries);
}

// One datapath per test suite (loading takes a few hundred ms); each test
// starts with empty flow tables, full buckets and no source seen, and reads counters as
// deltas.
class DatapathTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { LoadSuite({.use_user_clock = true, .record_last_verdict = true}); }
  static void LoadSuite(const datapath::DatapathOptions& options) {
    if (geteuid() != 0) return;
    auto dp = datapath::Datapath::Load(options);
    ASSERT_TRUE(dp.ok()) << dp.status();
    dp_ = *std::move(dp);
    installer_ = std::make_unique<datapath::PolicyInstaller>(*dp_);
    runner_ = std::make_unique<datapath::TestRunner>(*dp_);
  }

  static void TearDownTestSuite() {
    runner_.reset();
    installer_.reset();
    dp_.reset();
  }

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "loading BPF programs needs root";
    ASSERT_NE(dp_, nullptr);
    ClearMap(dp_->map_fd(datapath::Map::kSourceBucketsV4), sizeof(pc_bucket_key_v4));
    ClearMap(dp_->map_fd(datapath::Map::kSourceBucketsV6), sizeof(pc_bucket_key_v6));
    ClearMap(dp_->map_fd(datapath::Map::kDryBucketsV4), sizeof(pc_bucket_key_v4));
    ClearMap(dp_->map_fd(datapath::Map::kDryBucketsV6), sizeof(pc_bucket_key_v6));
    ZeroArray(dp_->map_fd(datapath::Map::kFirstSight), PC_FIRST_SIGHT_SLOTS);
    ClearMap(dp_->map_fd(datapath::Map::kEgressFlows), sizeof(pc_flow_key));
    ClearMap(dp_->map_fd(datapath::Map::kIngressFlows), sizeof(pc_flow_key));
    const pc_global_bucket full = {PC_BUCKET_FULL, 0};
    for (__u32 k = 0; k < PC_GLOBAL_BUCKETS; ++k) {
      ASSERT_EQ(bpf_map_update_elem(dp_->map_fd(datapath::Map::kGlobalBuckets), &k, &full, BPF_ANY),
                0);
    }
    ASSERT_TRUE(runner_->SetClock(1'000'000'000).ok());
  }

  void Install(absl::string_view yaml, uint64_t version = 1) {
    policy::CompiledPolicy compiled = CompileYaml(yaml);
    ASSERT_TRUE(installer_->Install(compiled, version).ok());
  }

  datapath::Judgement Run(const std::vector<uint8_t>& frame, pc_hook hook = PC_HOOK_XDP) {
    auto j = runner_->Run(frame, hook);
    EXPECT_TRUE(j.ok()) << j.status();
    return j.ok() ? *j : datapath::Judgement{~0u, PC_VERDICT_COUNT, PC_REASON_COUNT, 0, {}};
  }
  datapath::Judgement Run(const Frame& frame) { return Run(frame.Build()); }

  void SetClock(uint64_t ns) { ASSERT_TRUE(runner_->SetClock(ns).ok()); }

  // Packets counted under (verdict, reason), over every interface and hook.
  uint64_t Counted(pc_verdict verdict, pc_reason reason) {
    auto counts = datapath::ReadVerdictCounters(*dp_);
    EXPECT_TRUE(counts.ok()) << counts.status();
    uint64_t n = 0;
    for (const auto& c : counts.value_or(std::vector<datapath::VerdictCount>{})) {
      if (c.key.verdict == verdict && c.key.reason == reason) n += c.total.packets;
    }
    return n;
  }

  uint64_t CountedTotal() {
    auto counts = datapath::ReadVerdictCounters(*dp_);
    EXPECT_TRUE(counts.ok()) << counts.status();
    uint64_t n = 0;
    for (const auto& c : counts.value_or(std::vector<datapath::VerdictCount>{})) {
      n += c.total.packets;
    }
    return n;
  }

  static inline std::unique_ptr<datapath::Datapath> dp_;
  static inline std::unique_ptr<datapath::PolicyInstaller> installer_;
  static inline std::unique_ptr<datapath::TestRunner> runner_;
};

}  // namespace portcullis::testing
