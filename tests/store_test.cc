// The store suite: what every backend of control/store.h must do, run on
// SqliteStore (a temp dir) and on EtcdStore (a real etcd on loopback, a
// prefix of its own per test), and what only a store shared by several
// replicas must do: changes from two replicas at once never both win, a lost
// quorum refuses changes and says so, and they go on when it is back.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "control/agent_registry.h"
#include "control/etcd_agents.h"
#include "control/etcd_client.h"
#include "control/etcd_store.h"
#include "control/service.h"
#include "control/sqlite_store.h"
#include "gmock/gmock.h"
#include "policy/text.h"
#include "policy/validator.h"
#include "tests/support/etcd.h"
#include "tests/support/policy_versions.h"
#include "tests/support/temp_dir.h"
#include "tests/support/text_edit.h"

namespace portcullis::control {
namespace {

using ::portcullis::testing::EtcdCluster;
using ::testing::HasSubstr;

// kStreamedPolicy with tcp `ports` from any, as an editor pushes it.
v1::PolicyVersion Pushed(const std::string& ports, const std::string& reason) {
  v1::PolicyVersion v;
  const auto checked =
      policy::CheckPolicyText(testing::Edit(testing::kStreamedPolicy, "[80]", ports));
  EXPECT_TRUE(checked.ok()) << checked.Format("p.yaml");
  if (checked.ok()) *v.mutable_policy() = checked.loaded->policy;
  v.set_content_hash(policy::ContentHash(v.policy()));
  v.set_author("editor");
  v.set_reason(reason);
  return v;
}

AuditRecord By(const std::string& method, const std::string& detail = "") {
  return {"editor", "editor", method, "ok", detail};
}

// One etcd member for every test of this process; each test has its own
// prefix in it.
// One member for the tests that need no failures, stopped at exit.
EtcdCluster& SharedEtcd() {
  static EtcdCluster etcd(1);
  static const bool healthy = etcd.WaitHealthy();
  EXPECT_TRUE(healthy) << "etcd did not start: " << etcd.LogOf(0);
  return etcd;
}

EtcdOptions OptionsFor(const EtcdCluster& etcd) {
  EtcdOptions options;
  options.endpoints = absl::StrSplit(etcd.Endpoints(), ',');
  options.call_timeout = absl::Seconds(1);
  return options;
}

std::string UniquePrefix() {
  static std::atomic<int> n{0};
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat("/portcullis-test/", getpid(), "-", n++, "-", test->name());
}

// Where a backend keeps its state; each Open() is the control service
// starting again on it.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual absl::StatusOr<std::unique_ptr<Store>> Open() = 0;
};

class SqliteBackend final : public Backend {
 public:
  absl::StatusOr<std::unique_ptr<Store>> Open() override {
    auto store = SqliteStore::Open(dir_.path());
    if (!store.ok()) return store.status();
    return std::unique_ptr<Store>(*std::move(store));
  }

 private:
  testing::TempDir dir_;
};

class EtcdBackend final : public Backend {
 public:
  absl::StatusOr<std::unique_ptr<Store>> Open() override {
    auto store = EtcdStore::Open(OptionsFor(SharedEtcd()), prefix_);
    if (!store.ok()) return store.status();
    return std::unique_ptr<Store>(*std::move(store));
  }

 private:
  std::string prefix_ = UniquePrefix();
};

class StoreSuite : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "sqlite") {
      backend_ = std::make_unique<SqliteBackend>();
    } else {
      backend_ = std::make_unique<EtcdBackend>();
    }
  }
  std::unique_ptr<Store> Open() {
    auto store = backend_->Open();
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  std::unique_ptr<Backend> backend_;
};

TEST_P(StoreSuite, NumbersVersionsAndKeepsThemAcrossReopen) {
  {
    std::unique_ptr<Store> store = Open();
    ASSERT_TRUE(store);
    EXPECT_FALSE(*store->Live());
    auto v1 = store->AddVersion(Pushed("[80, 443]", "first"), By("Push", "d1"));
    auto v2 = store->AddVersion(Pushed("[80]", "second"), By("Push", "d2"));
    ASSERT_TRUE(v1.ok() && v2.ok()) << v1.status() << v2.status();
    EXPECT_EQ(v1->version(), 1u);
    EXPECT_EQ(v2->version(), 2u);
    EXPECT_GT(v2->created_unix_nanos(), 0);
  }
  std::unique_ptr<Store> store = Open();
  ASSERT_TRUE(store);
  auto live = store->Live();
  ASSERT_TRUE(live.ok() && *live);
  EXPECT_EQ((*live)->version(), 2u);
  EXPECT_EQ((*live)->reason(), "second");
  EXPECT_EQ(policy::ContentHash((*live)->policy()), (*live)->content_hash());
  auto first = store->Get(1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->policy().SerializeAsString(),
            Pushed("[80, 443]", "").policy().SerializeAsString());
  EXPECT_TRUE(absl::IsNotFound(store->Get(3).status()));
  auto history = store->History(0);
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->size(), 2u);
  EXPECT_EQ((*history)[0].version(), 2u);  // newest first
  EXPECT_FALSE((*history)[0].has_policy());
  ASSERT_EQ(store->History(1)->size(), 1u);
  auto audit = store->Audit(0, 0);
  ASSERT_TRUE(audit.ok());
  ASSERT_EQ(audit->size(), 2u);
  EXPECT_EQ((*audit)[1].version(), 2u);  // the audit entry names the version it made
  EXPECT_EQ((*audit)[1].content_hash(), (*live)->content_hash());
  EXPECT_EQ((*audit)[1].prev_hash(), (*audit)[0].hash());
  EXPECT_EQ(store->Audit(1, 0)->size(), 1u);
  EXPECT_EQ(store->Audit(0, 1)->size(), 1u);
  EXPECT_TRUE(store->VerifyAudit().ok());
}

// A canary's rollout and a shadow candidate are durable until promoted or
// ended; the next version ends both.
TEST_P(StoreSuite, RolloutsAndShadowCandidatesSurviveAReopenUntilEnded) {
  {
    std::unique_ptr<Store> store = Open();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->AddVersion(Pushed("[80]", "one"), By("Push")).ok());
    v1::ShadowCandidate candidate;
    *candidate.mutable_policy() = Pushed("[443]", "s").policy();
    candidate.set_content_hash("sha256:s");
    auto shadow = store->AddShadow(candidate, By("Push", "shadow"));
    ASSERT_TRUE(shadow.ok()) << shadow.status();
    EXPECT_EQ(shadow->id(), 1u);
    EXPECT_EQ((*store->Shadow())->content_hash(), "sha256:s");
    v1::PolicyVersion canary = Pushed("[81]", "two");
    canary.mutable_rollout()->add_nodes("n1");
    canary.mutable_rollout()->set_stable_version(1);
    ASSERT_TRUE(store->AddVersion(canary, By("Push")).ok());
  }
  std::unique_ptr<Store> store = Open();
  ASSERT_TRUE(store);
  auto rollout = store->Rollout();
  ASSERT_TRUE(rollout.ok() && *rollout);
  EXPECT_EQ((*rollout)->version(), 2u);
  EXPECT_EQ((*rollout)->stable_version(), 1u);
  EXPECT_EQ((*rollout)->nodes(0), "n1");
  EXPECT_FALSE(store->Shadow()->has_value()) << "the canary version ended the candidate";
  EXPECT_TRUE(absl::IsNotFound(store->PromoteRollout(1, By("PromoteRollout"))));
  ASSERT_TRUE(store->PromoteRollout(2, By("PromoteRollout")).ok());
  EXPECT_FALSE(store->Rollout()->has_value());
  v1::ShadowCandidate again;
  again.set_content_hash("sha256:t");
  ASSERT_TRUE(store->AddShadow(again, By("Push", "shadow")).ok());
  auto current = store->Shadow();
  ASSERT_TRUE(current.ok() && *current);
  EXPECT_EQ((*current)->id(), 2u) << "numbered apart from versions, never reused";
  EXPECT_TRUE(absl::IsNotFound(store->DiscardShadow(1, By("DiscardShadow"))));
  ASSERT_TRUE(store->DiscardShadow(2, By("DiscardShadow")).ok());
  EXPECT_FALSE(store->Shadow()->has_value());
  EXPECT_TRUE(store->VerifyAudit().ok());
}

// Each step of a staged rollout is stored once: the same step again (a
// second replica's timer taking it) is refused, and the audit log has one
// entry for it.
TEST_P(StoreSuite, ARolloutStepIsTakenOnce) {
  std::unique_ptr<Store> store = Open();
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->AddVersion(Pushed("[80]", "one"), By("Push")).ok());
  v1::PolicyVersion canary = Pushed("[81]", "two");
  canary.mutable_rollout()->set_stable_version(1);
  for (uint32_t p : {10, 50, 100}) canary.mutable_rollout()->add_steps(p);
  ASSERT_TRUE(store->AddVersion(canary, By("Push")).ok());
  v1::Rollout next = **store->Rollout();
  next.set_step(1);
  next.add_nodes("n1");
  ASSERT_TRUE(store->UpdateRollout(next, By("RolloutStep")).ok());
  const size_t entries = store->Audit(0, 0)->size();
  const absl::Status again = store->UpdateRollout(next, By("RolloutStep"));
  EXPECT_TRUE(absl::IsFailedPrecondition(again)) << again;
  EXPECT_THAT(again.message(), HasSubstr("another replica took this step"));
  EXPECT_EQ(store->Audit(0, 0)->size(), entries) << "the refused step was audited";
  EXPECT_EQ((**store->Rollout()).nodes_size(), 1);
  next.set_step(2);
  EXPECT_TRUE(store->UpdateRollout(next, By("RolloutStep")).ok());
  next.set_step(1);
  EXPECT_TRUE(absl::IsFailedPrecondition(store->UpdateRollout(next, By("RolloutStep"))));
  EXPECT_TRUE(store->VerifyAudit().ok());
}

TEST_P(StoreSuite, ConfirmationDeadlinesAndConfirmationsSurviveAReopen) {
  const int64_t due = absl::ToUnixNanos(absl::Now() + absl::Minutes(2));
  {
    std::unique_ptr<Store> store = Open();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->AddVersion(Pushed("[80]", "one"), By("Push")).ok());
    v1::PolicyVersion pending = Pushed("[81]", "two");
    pending.set_confirm_by_unix_nanos(due);
    ASSERT_TRUE(store->AddVersion(pending, By("Push")).ok());
    EXPECT_TRUE(AwaitsConfirmation(**store->Live()));
  }
  std::unique_ptr<Store> store = Open();
  ASSERT_TRUE(store);
  auto live = store->Live();
  ASSERT_TRUE(live.ok() && *live);
  EXPECT_EQ((*live)->confirm_by_unix_nanos(), due);
  EXPECT_TRUE(AwaitsConfirmation(**live));
  auto confirmed = store->Confirm(2, By("Confirm", "in time"));
  ASSERT_TRUE(confirmed.ok()) << confirmed.status();
  EXPECT_GT(confirmed->confirmed_unix_nanos(), 0);
  const absl::Status again = store->Confirm(2, By("Confirm", "again")).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(again)) << again;
  EXPECT_TRUE(absl::IsNotFound(store->Confirm(9, By("Confirm")).status()));
  store.reset();
  std::unique_ptr<Store> reopened = Open();
  ASSERT_TRUE(reopened);
  EXPECT_FALSE(AwaitsConfirmation(**reopened->Live()));
  EXPECT_EQ((*reopened->History(0))[0].confirmed_unix_nanos(), confirmed->confirmed_unix_nanos());
  // The live version's header: its number and confirmation, no policy.
  auto header = reopened->LiveHeader();
  ASSERT_TRUE(header.ok() && *header) << header.status();
  EXPECT_EQ((*header)->version(), 2u);
  EXPECT_EQ((*header)->confirmed_unix_nanos(), confirmed->confirmed_unix_nanos());
  EXPECT_FALSE((*header)->has_policy());
  EXPECT_TRUE(reopened->VerifyAudit().ok());
  // The refused second confirmation left no entry: 2 pushes, 1 confirmation.
  EXPECT_EQ(reopened->Audit(0, 0)->size(), 3u);
}

// A change checked against a generation the store has moved past (another
// replica's change, or any audited call) stores nothing and says so, for the
// caller to read the store and check again.
TEST_P(StoreSuite, AVersionCheckedAgainstAStaleGenerationIsRefusedAsMoved) {
  std::unique_ptr<Store> store = Open();
  ASSERT_TRUE(store);
  EXPECT_EQ(*store->Generation(), 0u);
  ASSERT_TRUE(store->AddVersion(Pushed("[80]", "one"), By("Push"), 0).ok());
  const uint64_t seen = *store->Generation();
  EXPECT_EQ(seen, 1u);
  ASSERT_TRUE(store->AppendAudit(By("Push", "unchanged")).ok());
  const absl::Status moved = store->AddVersion(Pushed("[81]", "two"), By("Push"), seen).status();
  EXPECT_TRUE(StoreMoved(moved)) << moved;
  EXPECT_FALSE(StoreMoved(absl::AbortedError("another refusal")));
  EXPECT_EQ(store->History(0)->size(), 1u) << "a refused change stored its version";
  EXPECT_EQ(store->Audit(0, 0)->size(), 2u) << "a refused change left an audit entry";
  auto two = store->AddVersion(Pushed("[81]", "two"), By("Push"), *store->Generation());
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->version(), 2u);
  EXPECT_TRUE(store->VerifyAudit().ok());
}

// Only the live version can be confirmed: a replica whose view is stale
// cannot confirm a version that another replica has replaced.
TEST_P(StoreSuite, AConfirmationOfAVersionNoLongerLiveIsRefused) {
  std::unique_ptr<Store> store = Open();
  ASSERT_TRUE(store);
  v1::PolicyVersion pending = Pushed("[80]", "one");
  pending.set_confirm_by_unix_nanos(absl::ToUnixNanos(absl::Now() + absl::Minutes(2)));
  ASSERT_TRUE(store->AddVersion(pending, By("Push")).ok());
  ASSERT_TRUE(store->AddVersion(Pushed("[81]", "two"), By("Rollback")).ok());
  const absl::Status refused = store->Confirm(1, By("Confirm")).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_THAT(refused.message(), ::testing::HasSubstr("no longer live"));
  EXPECT_EQ((*store->History(0))[1].confirmed_unix_nanos(), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreSuite, ::testing::Values("sqlite", "etcd"),
                         [](const auto& info) { return info.param; });

// --- etcd only: a store that several replicas share ------------------------

std::unique_ptr<EtcdStore> OpenEtcd(const EtcdOptions& options, const std::string& prefix) {
  auto store = EtcdStore::Open(options, prefix);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

// Two replicas push at once, each through its own store: every push is
// acknowledged with a number of its own, the numbers have no gap, and the
// audit chain is one line through all of them.
TEST(EtcdStoreTest, ConcurrentPushesFromTwoReplicasAreGaplessAndLinear) {
  const std::string prefix = UniquePrefix();
  std::unique_ptr<EtcdStore> replicas[2] = {OpenEtcd(OptionsFor(SharedEtcd()), prefix),
                                            OpenEtcd(OptionsFor(SharedEtcd()), prefix)};
  ASSERT_TRUE(replicas[0] && replicas[1]);
  constexpr int kEach = 15;
  std::vector<uint64_t> acknowledged[2];
  std::vector<std::thread> pushers;
  for (int r = 0; r < 2; ++r) {
    pushers.emplace_back([&, r] {
      for (int i = 0; i < kEach; ++i) {
        auto v = replicas[r]->AddVersion(Pushed(absl::StrCat("[", 1000 * (r + 1) + i, "]"),
                                                absl::StrCat("replica ", r, " push ", i)),
                                         By("Push"));
        if (v.ok()) acknowledged[r].push_back(v->version());
        EXPECT_TRUE(v.ok()) << v.status();
      }
    });
  }
  for (std::thread& t : pushers) t.join();
  std::set<uint64_t> numbers;
  for (const auto& acks : acknowledged) numbers.insert(acks.begin(), acks.end());
  ASSERT_EQ(numbers.size(), 2u * kEach) << "two pushes were given one number";
  EXPECT_EQ(*numbers.begin(), 1u);
  EXPECT_EQ(*numbers.rbegin(), 2u * kEach) << "a gap in the numbers";
  for (int r = 0; r < 2; ++r) {
    for (uint64_t n : acknowledged[r]) {
      auto v = replicas[1 - r]->Get(n);
      ASSERT_TRUE(v.ok()) << v.status();
      EXPECT_THAT(v->reason(), ::testing::StartsWith(absl::StrCat("replica ", r, " ")))
          << "version " << n << " is not the push it acknowledged";
    }
  }
  auto audit = replicas[0]->Audit(0, 0);
  ASSERT_TRUE(audit.ok());
  EXPECT_EQ(audit->size(), 2u * kEach);
  EXPECT_TRUE(replicas[1]->VerifyAudit().ok()) << replicas[1]->VerifyAudit();
}

// A replica follows the others: it learns of another replica's change from
// its watch within a fraction of a second, and, with nothing changing, wakes
// after its timeout with the generation read anew.
TEST(EtcdStoreTest, AwaitChangeSeesAnotherReplicasChangeAtOnce) {
  const std::string prefix = UniquePrefix();
  std::unique_ptr<EtcdStore> a = OpenEtcd(OptionsFor(SharedEtcd()), prefix);
  std::unique_ptr<EtcdStore> b = OpenEtcd(OptionsFor(SharedEtcd()), prefix);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->Shared());
  ASSERT_TRUE(b->AddVersion(Pushed("[80]", "one"), By("Push")).ok());
  const uint64_t seen = *a->Generation();
  absl::Time started = absl::Now();
  auto same = a->AwaitChange(seen, absl::Milliseconds(300));
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(*same, seen);
  EXPECT_GE(absl::Now() - started, absl::Milliseconds(250)) << "it did not wait";

  std::atomic<bool> pushed{false};
  std::thread other([&] {
    absl::SleepFor(absl::Milliseconds(200));
    pushed = true;
    EXPECT_TRUE(b->AddVersion(Pushed("[81]", "two"), By("Push")).ok());
  });
  started = absl::Now();
  auto moved = a->AwaitChange(seen, absl::Seconds(20));
  other.join();
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_TRUE(pushed);
  EXPECT_EQ(*moved, seen + 1);
  EXPECT_LT(absl::Now() - started, absl::Seconds(10)) << "the watch did not fire";
}

// Agent reports shared through etcd, as two replicas see them.
v1::AgentStatus Report(const std::string& node, uint64_t version, uint64_t dropped = 0) {
  v1::AgentStatus s;
  s.set_node(node);
  s.set_applied_version(version);
  s.set_applied_hash(absl::StrCat("hash-", version));
  s.set_ready(true);
  v1::CounterSummary* c = s.add_counters();
  c->set_verdict("drop");
  c->set_reason("blocklist");
  c->set_packets(dropped);
  return s;
}

std::unique_ptr<EtcdClient> ClientOf(const EtcdCluster& etcd) {
  auto client = EtcdClient::Create(OptionsFor(etcd));
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

// The version replica `registry` shows `node` on, 0 when it shows none.
uint64_t Shows(const AgentRegistry& registry, const std::string& node) {
  for (const v1::AgentState& s : registry.States()) {
    if (s.status().node() == node && !s.stale()) return s.status().applied_version();
  }
  return 0;
}

// Kept, for bounded waits in these tests.
bool Within(absl::Duration d, const std::function<bool()>& done) {
  for (const absl::Time end = absl::Now() + d; absl::Now() < end;
       absl::SleepFor(absl::Milliseconds(20))) {
    if (done()) return true;
  }
  return done();
}

constexpr EtcdAgentShareOptions kFastShare{.flush_interval = absl::Milliseconds(100),
                                           .refresh = absl::Seconds(30),
                                           .lease_period = absl::Seconds(1),
                                           .retry = absl::Milliseconds(200)};

// A report one replica receives is in every replica's registry within a
// flush: one that starts later reads it, one that runs sees it through its
// watch, and a node that moves to the other replica shows its newer report
// on both.
TEST(EtcdAgentShareTest, AReportOnOneReplicaIsInEveryReplicasRegistry) {
  const std::string prefix = UniquePrefix();
  auto client_a = ClientOf(SharedEtcd()), client_b = ClientOf(SharedEtcd());
  ASSERT_TRUE(client_a && client_b);
  AgentRegistry a(absl::Seconds(45)), b(absl::Seconds(45));
  auto share_a = std::make_unique<EtcdAgentShare>(*client_a, prefix, "a", a, kFastShare);
  ASSERT_TRUE(a.Report(Report("node-1", 1)).ok());
  share_a->Publish(Report("node-1", 1));
  absl::SleepFor(absl::Milliseconds(300));  // written before b starts: b reads it
  EtcdAgentShare share_b(*client_b, prefix, "b", b, kFastShare);
  EXPECT_TRUE(Within(absl::Seconds(5), [&] { return Shows(b, "node-1") == 1; }));

  ASSERT_TRUE(b.Report(Report("node-2", 1)).ok());
  share_b.Publish(Report("node-2", 1));
  EXPECT_TRUE(Within(absl::Seconds(5), [&] { return Shows(a, "node-2") == 1; }));

  // node-1 fails over to b and runs version 2 there.
  ASSERT_TRUE(b.Report(Report("node-1", 2)).ok());
  share_b.Publish(Report("node-1", 2));
  EXPECT_TRUE(Within(absl::Seconds(5), [&] { return Shows(a, "node-1") == 2; }));
  EXPECT_EQ(Shows(b, "node-1"), 2u);
  // An older report that arrives late does not undo a newer one.
  ASSERT_TRUE(a.Ingest(Report("node-1", 1), absl::Now() - absl::Minutes(1)).ok());
  EXPECT_EQ(Shows(a, "node-1"), 2u);
  EXPECT_EQ(a.States().size(), 2u);
  EXPECT_EQ(b.States().size(), 2u);
}

// A report that only moves counters is written at most every `refresh`; one
// that changes what the node runs is written at the next flush.
TEST(EtcdAgentShareTest, ReportsThatOnlyMoveCountersAreWrittenAtMostEveryRefresh) {
  const std::string prefix = UniquePrefix();
  auto client = ClientOf(SharedEtcd());
  ASSERT_TRUE(client);
  AgentRegistry registry(absl::Seconds(45));
  EtcdAgentShare share(*client, prefix, "a", registry, kFastShare);
  const auto writes = [&]() -> int64_t {  // the key's version: how often it was written
    etcdserverpb::RangeRequest req;
    req.set_key(prefix + "/agents/node-1");
    auto got = client->Range(req);
    return got.ok() && got->kvs_size() == 1 ? got->kvs(0).version() : -1;
  };
  for (int i = 0; i < 10; ++i) {
    share.Publish(Report("node-1", 1, 100 * i));
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(Within(absl::Seconds(5), [&] { return writes() >= 1; }));
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(writes(), 1) << "counters alone were written more often than every refresh";
  share.Publish(Report("node-1", 2, 1000));
  EXPECT_TRUE(Within(absl::Seconds(5), [&] { return writes() == 2; }));
}

// A node no replica hears from any more expires from etcd with its lease,
// whichever replica wrote it: a replica that starts afterwards never sees
// it.
TEST(EtcdAgentShareTest, ASilentNodeExpiresFromEtcdWithItsLease) {
  const std::string prefix = UniquePrefix();
  auto client = ClientOf(SharedEtcd());
  ASSERT_TRUE(client);
  // forget-after 2 s, lease period 1 s: a TTL of 4 s.
  AgentRegistry registry(absl::Seconds(1), AgentRegistry::SteadyNow, absl::Seconds(2));
  {
    EtcdAgentShare share(*client, prefix, "a", registry, kFastShare);
    share.Publish(Report("node-1", 1));
    absl::SleepFor(absl::Milliseconds(500));
  }  // the replica is gone; its lease is not kept alive by anyone
  const auto keys = [&]() -> int64_t {
    etcdserverpb::RangeRequest req;
    req.set_key(prefix + "/agents/");
    req.set_range_end(EtcdPrefixEnd(prefix + "/agents/"));
    req.set_count_only(true);
    auto got = client->Range(req);
    return got.ok() ? got->count() : -1;
  };
  EXPECT_EQ(keys(), 1);
  EXPECT_TRUE(Within(absl::Seconds(15), [&] { return keys() == 0; })) << "the record never expired";
  AgentRegistry later(absl::Seconds(45));
  EtcdAgentShare share(*client, prefix, "b", later, kFastShare);
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_TRUE(later.States().empty());
}

// Whoever can write etcd can rewrite an entry; the chain says which.
TEST(EtcdStoreTest, VerifyDetectsAnAlteredAuditEntryAndAMissingOne) {
  for (const bool remove : {false, true}) {
    SCOPED_TRACE(remove ? "deleted" : "altered");
    const std::string prefix = UniquePrefix();
    std::unique_ptr<EtcdStore> store = OpenEtcd(OptionsFor(SharedEtcd()), prefix);
    ASSERT_TRUE(store);
    for (int i = 1; i <= 3; ++i) ASSERT_TRUE(store->AppendAudit(By("Push", absl::StrCat(i))).ok());
    ASSERT_TRUE(store->VerifyAudit().ok());
    auto entry = store->Audit(1, 1);
    ASSERT_TRUE(entry.ok() && entry->size() == 1);
    v1::AuditEntry forged = (*entry)[0];
    forged.set_detail("nothing");
    auto client = EtcdClient::Create(OptionsFor(SharedEtcd()));
    ASSERT_TRUE(client.ok());
    etcdserverpb::TxnRequest txn;
    if (remove) {
      txn.add_success()->mutable_request_delete_range()->set_key(store->Key("audit", 2));
    } else {
      auto* put = txn.add_success()->mutable_request_put();
      put->set_key(store->Key("audit", 2));
      put->set_value(forged.SerializeAsString());
    }
    ASSERT_TRUE((*client)->Txn(txn).ok());
    const absl::Status verified = store->VerifyAudit();
    EXPECT_TRUE(absl::IsDataLoss(verified)) << verified;
    EXPECT_THAT(std::string(verified.message()), HasSubstr("audit entry 2"));
  }
}

TEST(EtcdStoreTest, OpenNamesTheFlagThatIsWrong) {
  EtcdOptions options = OptionsFor(SharedEtcd());
  auto bad_prefix = EtcdStore::Open(options, "portcullis/");
  EXPECT_TRUE(absl::IsInvalidArgument(bad_prefix.status()));
  EXPECT_THAT(std::string(bad_prefix.status().message()), HasSubstr("--etcd-prefix"));

  options.endpoints = {"127.0.0.1:2379"};
  auto no_scheme = EtcdStore::Open(options, "/p");
  EXPECT_TRUE(absl::IsInvalidArgument(no_scheme.status()));
  EXPECT_THAT(std::string(no_scheme.status().message()), HasSubstr("--etcd-endpoints"));

  options.endpoints = {"https://127.0.0.1:2379"};
  options.ca_file = "/nonexistent/ca.pem";
  auto no_ca = EtcdStore::Open(options, "/p");
  EXPECT_FALSE(no_ca.ok());
  EXPECT_THAT(std::string(no_ca.status().message()), HasSubstr("--etcd-ca"));

  options = OptionsFor(SharedEtcd());
  options.endpoints = {absl::StrCat("http://127.0.0.1:", testing::UnusedLoopbackPort())};
  auto nobody = EtcdStore::Open(options, "/p");
  EXPECT_TRUE(absl::IsUnavailable(nobody.status())) << nobody.status();
  EXPECT_THAT(std::string(nobody.status().message()), HasSubstr("cannot be reached"));
}

// etcd bounds one request (--max-request-bytes, 1.5 MiB by default): a
// version over it is refused with the limit to raise, and nothing of it is
// stored.
TEST(EtcdStoreTest, AVersionOverEtcdsRequestLimitIsRefusedNamingTheLimit) {
  EtcdCluster etcd(1, {"--max-request-bytes", "8192"});
  ASSERT_TRUE(etcd.WaitHealthy()) << etcd.LogOf(0);
  std::unique_ptr<EtcdStore> store = OpenEtcd(OptionsFor(etcd), "/portcullis");
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->AddVersion(Pushed("[80]", "small"), By("Push")).ok());
  v1::PolicyVersion big = Pushed("[80]", "big");
  big.set_reason(std::string(16384, 'x'));
  const absl::Status refused = store->AddVersion(big, By("Push")).status();
  EXPECT_TRUE(absl::IsResourceExhausted(refused)) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("--max-request-bytes"));
  EXPECT_EQ((*store->Live())->version(), 1u);
  EXPECT_EQ(store->Audit(0, 0)->size(), 1u);
}

// A member that is up and answers as etcd does while its cluster elects a
// leader: "etcdserver: leader changed" for its first `failures` reads.
class ElectingMember final : public etcdserverpb::KV::Service {
 public:
  explicit ElectingMember(int failures) : failures_(failures) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~ElectingMember() override { server_->Shutdown(); }

  grpc::Status Range(grpc::ServerContext*, const etcdserverpb::RangeRequest*,
                     etcdserverpb::RangeResponse*) override {
    if (calls_++ < failures_) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "etcdserver: leader changed");
    }
    return grpc::Status::OK;
  }

  std::string Url() const { return absl::StrCat("http://127.0.0.1:", port_); }
  int calls() const { return calls_; }

 private:
  const int failures_;
  std::atomic<int> calls_{0};
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// Losing the leader makes every member refuse for an election's time; a
// call asks them again meanwhile, so that one lost member of three never
// fails a push.
TEST(EtcdClientTest, MembersElectingALeaderAreAskedAgainUntilOneIsElected) {
  ElectingMember member(3);
  auto client = EtcdClient::Create({.endpoints = {member.Url()}});
  ASSERT_TRUE(client.ok()) << client.status();
  auto read = (*client)->Range(etcdserverpb::RangeRequest());
  EXPECT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(member.calls(), 4);
}

// ...for a bounded time: a cluster that elects no one (no quorum) is
// refused within a few seconds, naming the lost quorum.
TEST(EtcdClientTest, MembersThatElectNoOneAreGivenUpWithinSeconds) {
  ElectingMember member(1'000'000);
  auto client = EtcdClient::Create({.endpoints = {member.Url()}});
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Time start = absl::Now();
  auto read = (*client)->Range(etcdserverpb::RangeRequest());
  const absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(absl::IsUnavailable(read.status())) << read.status();
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("no quorum"));
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("leader changed"));
  EXPECT_GE(took, absl::Seconds(2)) << "not asked again";
  EXPECT_LE(took, absl::Seconds(5));
  EXPECT_GT(member.calls(), 5);
}

// Three members: one lost, pushes go on; two lost, they are refused with an
// error that names the lost quorum, and nothing is half-stored; both back,
// pushes go on where they stopped.
TEST(EtcdStoreTest, ALostQuorumRefusesChangesUntilItIsBack) {
  EtcdCluster etcd(3);
  ASSERT_TRUE(etcd.WaitHealthy()) << etcd.LogOf(0);
  std::unique_ptr<EtcdStore> store = OpenEtcd(OptionsFor(etcd), "/portcullis");
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->AddVersion(Pushed("[80]", "three members"), By("Push")).ok());

  etcd.Kill(0);
  auto two = store->AddVersion(Pushed("[81]", "two members"), By("Push"));
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->version(), 2u);

  etcd.Kill(1);
  const absl::Status refused = store->AddVersion(Pushed("[82]", "one member"), By("Push")).status();
  EXPECT_TRUE(absl::IsUnavailable(refused)) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("no quorum"));

  etcd.Start(0);
  etcd.Start(1);
  ASSERT_TRUE(etcd.WaitHealthy());
  absl::StatusOr<v1::PolicyVersion> back = absl::UnavailableError("not tried");
  for (int i = 0; i < 40 && !back.ok(); ++i) {
    back = store->AddVersion(Pushed("[83]", "quorum back"), By("Push"));
    if (!back.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->version(), 3u) << "the refused push left a number behind";
  EXPECT_TRUE(store->VerifyAudit().ok());
}

}  // namespace
}  // namespace portcullis::control
