// The control service's parts without the network: the SQLite store's own
// defences (an append-only, hash-chained and signed audit log that detects
// tampering with the file; what every backend does is tests/store_test.cc),
// the safety baseline, the role map and port lists.
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "control/agent_registry.h"
#include "control/audit_chain.h"
#include "control/baseline.h"
#include "control/client.h"
#include "control/refusals.h"
#include "control/roles.h"
#include "control/rollout.h"
#include "control/service.h"
#include "control/sqlite_store.h"
#include "control/tls.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/text.h"
#include "policy/validator.h"
#include "tests/support/temp_dir.h"
#include "tests/support/text_edit.h"

namespace portcullis::control {
namespace {

using ::portcullis::testing::Edit;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kPolicy[] = R"(apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: edge}
spec:
  defaultAction: deny
  sets:
    admins: [198.18.1.0/28]
    world: [0.0.0.0/0]
  failsafe:
    - {ports: [22, 10250], proto: tcp, from: [admins]}
  ports:
    - {ports: [80, 443], proto: tcp, from: any}
    - {ports: [10254], proto: tcp, from: [admins]}
)";

v1::Policy Load(const std::string& text) {
  policy::CheckedPolicyFile checked = policy::CheckPolicyText(text);
  EXPECT_TRUE(checked.ok()) << checked.Format("p.yaml");
  return checked.ok() ? checked.loaded->policy : v1::Policy();
}

v1::PolicyVersion Version(const std::string& text, const std::string& reason) {
  v1::PolicyVersion v;
  *v.mutable_policy() = Load(text);
  v.set_content_hash(policy::ContentHash(v.policy()));
  v.set_author("editor");
  v.set_reason(reason);
  return v;
}

// --- Store ----------------------------------------------------------------

// Unauthenticated noise costs a bounded number of audit rows a minute: 20
// itemised, then one summary for the rest of the window (it was 20 rows and
// a summary every second, 1,260 a minute, without end).
TEST(RefusalAuditorTest, AFloodOfRefusalsCostsBoundedRowsAMinute) {
  testing::TempDir dir;
  auto store = SqliteStore::Open(dir.path());
  ASSERT_TRUE(store.ok()) << store.status();
  prometheus::Registry registry;
  {
    RefusalAuditor auditor(**store, 20, absl::Minutes(1), registry);
    for (int i = 0; i < 2000; ++i) {
      auditor.Refuse({"", ""}, "Push", "unauthenticated",
                     absl::UnauthenticatedError("no client certificate"));
    }
  }  // the last summary is written as it stops
  auto audit = (*store)->Audit(0, 0);
  ASSERT_TRUE(audit.ok());
  ASSERT_LE(audit->size(), 42u) << "at most two windows' worth";
  int64_t itemised = 0, summarised = 0;
  for (const v1::AuditEntry& e : *audit) {
    if (e.method() == "(many)") {
      int64_t n = 0;
      ASSERT_TRUE(absl::SimpleAtoi(e.detail().substr(0, e.detail().find(' ')), &n));
      summarised += n;
    } else {
      ++itemised;
    }
  }
  EXPECT_EQ(itemised + summarised, 2000);
  EXPECT_LE(itemised, 40);
}

// The store holds the policy and the audit log: its files are 0600 whatever
// the umask (they were 0644).
TEST(StoreTest, TheDatabaseAndItsWalArePrivate) {
  testing::TempDir dir;
  const mode_t old_umask = umask(0);
  {
    auto store = SqliteStore::Open(dir.path());
    umask(old_umask);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->AppendAudit({"admin", "admin", "Push", "ok", "x"}).ok());
    for (const char* file : {"/control.db", "/control.db-wal"}) {
      struct stat st;
      ASSERT_EQ(stat((dir.path() + file).c_str(), &st), 0) << file;
      EXPECT_EQ(st.st_mode & 0777, 0600u) << file;
    }
  }
  umask(old_umask);
}

// Runs SQL on the store's file behind its back, as an attacker with the file would.
void Tamper(const std::string& dir, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir + "/control.db").c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

TEST(StoreTest, AuditLogRefusesUpdateAndDelete) {
  testing::TempDir dir;
  auto store = SqliteStore::Open(dir.path());
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->AppendAudit({"viewer", "viewer", "Push", "refused", "no"}).ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir.path() + "/control.db").c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_NE(sqlite3_exec(db, "UPDATE audit SET detail = 'x'", nullptr, nullptr, &err), SQLITE_OK);
  EXPECT_THAT(std::string(err ? err : ""), HasSubstr("append-only"));
  sqlite3_free(err);
  EXPECT_NE(sqlite3_exec(db, "DELETE FROM audit", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
}

TEST(StoreTest, VerifyDetectsAnAlteredEntryAndAMissingOne) {
  for (const char* attack :
       {"DROP TRIGGER audit_no_update; UPDATE audit SET detail = 'nothing' WHERE seq = 2",
        "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 2"}) {
    SCOPED_TRACE(attack);
    testing::TempDir dir;
    {
      auto store = SqliteStore::Open(dir.path());
      ASSERT_TRUE(store.ok());
      for (int i = 1; i <= 3; ++i) {
        ASSERT_TRUE((*store)->AppendAudit({"admin", "admin", "Push", "ok", absl::StrCat(i)}).ok());
      }
      ASSERT_TRUE((*store)->VerifyAudit().ok());
    }
    Tamper(dir.path(), attack);
    auto store = SqliteStore::Open(dir.path());
    ASSERT_TRUE(store.ok());
    absl::Status verified = (*store)->VerifyAudit();
    EXPECT_TRUE(absl::IsDataLoss(verified)) << verified;
    EXPECT_THAT(std::string(verified.message()), HasSubstr("audit entry 2"));
  }
}

// The red team replaced a version's policy (and its content hash) with
// another version's, which verified: the versions table was outside the
// chain. Each entry now covers the content hash of the version it made.
TEST(StoreTest, VerifyDetectsAVersionWhosePolicyWasReplaced) {
  testing::TempDir dir;
  {
    auto store = SqliteStore::Open(dir.path());
    ASSERT_TRUE(store.ok());
    for (const char* ports : {"[80, 443]", "[80]"}) {
      v1::PolicyVersion v = Version(Edit(kPolicy, "[80, 443]", ports), "r");
      v.set_content_hash(policy::ContentHash(v.policy()));
      ASSERT_TRUE((*store)->AddVersion(v, {"editor", "editor", "Push", "ok", ""}).ok());
    }
    ASSERT_TRUE((*store)->VerifyAudit().ok());
    auto audit = (*store)->Audit(0, 0);
    ASSERT_TRUE(audit.ok());
    EXPECT_EQ((*audit)[0].content_hash(), (*store)->Get(1)->content_hash());
  }
  Tamper(dir.path(),
         "DROP TRIGGER versions_no_update; UPDATE versions SET policy = (SELECT policy FROM "
         "versions WHERE version = 2), "
         "content_hash = (SELECT content_hash FROM versions WHERE version = 2) WHERE version = 1");
  auto store = SqliteStore::Open(dir.path());
  ASSERT_TRUE(store.ok());
  const absl::Status verified = (*store)->VerifyAudit();
  EXPECT_TRUE(absl::IsDataLoss(verified)) << verified;
  EXPECT_THAT(std::string(verified.message()),
              HasSubstr("version 1 does not hold the policy audit entry 1 recorded"));
}

// The red team recomputed the chain after changing an author, and it
// verified: anyone who can write the database can rewrite a hash chain.
// Entries signed with a key kept apart from the database cannot be.
TEST(StoreTest, SignedEntriesDetectARecomputedChainAndStrippedSignatures) {
  testing::TempDir dir;
  auto key_path = EnsureDevAuditKey(dir.path());
  ASSERT_TRUE(key_path.ok()) << key_path.status();
  auto signer = AuditSigner::Load(*key_path);
  ASSERT_TRUE(signer.ok()) << signer.status();
  auto keys = AuditKeys::Parse((*signer)->PublicKeyPem(), "test");
  ASSERT_TRUE(keys.ok()) << keys.status();
  const std::string key_id = (*signer)->key_id();
  std::vector<v1::AuditEntry> signed_log;
  auto open = [&] {
    auto store = SqliteStore::Open(dir.path());
    EXPECT_TRUE(store.ok());
    auto again = AuditSigner::Load(*key_path);
    EXPECT_TRUE(again.ok());
    (*store)->SetAuditSigner(*std::move(again));
    return *std::move(store);
  };
  {
    std::unique_ptr<Store> store = open();
    for (int i = 1; i <= 3; ++i) {
      ASSERT_TRUE(store->AppendAudit({"admin", "admin", "Push", "ok", absl::StrCat(i)}).ok());
    }
    ASSERT_TRUE(store->VerifyAudit().ok());
    auto audit = store->Audit(0, 0);
    ASSERT_TRUE(audit.ok());
    for (const v1::AuditEntry& e : *audit) {
      EXPECT_THAT(e.signature(), ::testing::StartsWith("ed25519:" + key_id + ":"));
    }
    uint64_t first = 0;
    EXPECT_TRUE(keys->Verify(*audit, true, first).ok());
    EXPECT_EQ(first, 1u);
    signed_log = *audit;
  }

  // Entry 2's author changed, and the chain recomputed from it on.
  {
    std::unique_ptr<Store> store = open();
    auto audit = store->Audit(0, 0);
    ASSERT_TRUE(audit.ok());
    std::vector<v1::AuditEntry> forged = *audit;
    forged[1].set_principal("mallory");
    std::string sql = "DROP TRIGGER audit_no_update;";
    for (size_t i = 1; i < forged.size(); ++i) {
      forged[i].set_prev_hash(forged[i - 1].hash());
      forged[i].set_hash(AuditEntryHash(forged[i]));
      absl::StrAppend(&sql, "UPDATE audit SET principal = '", forged[i].principal(),
                      "', prev_hash = '", forged[i].prev_hash(), "', hash = '", forged[i].hash(),
                      "' WHERE seq = ", forged[i].seq(), ";");
    }
    ASSERT_TRUE(VerifyAuditChain(forged, "").ok()) << "the unsigned chain is fooled";
    store.reset();
    Tamper(dir.path(), sql);
  }
  std::unique_ptr<Store> store = open();
  const absl::Status verified = store->VerifyAudit();
  EXPECT_TRUE(absl::IsDataLoss(verified)) << verified;
  EXPECT_THAT(verified.message(), HasSubstr("audit entry 2's signature does not verify"));

  // Signatures stripped from the newest entry, or from all of them.
  std::vector<v1::AuditEntry> stripped = signed_log;
  stripped[2].clear_signature();
  uint64_t first = 0;
  EXPECT_THAT(keys->Verify(stripped, true, first).message(),
              HasSubstr("audit entry 3 is not signed, but entry 1"));
  for (v1::AuditEntry& e : stripped) e.clear_signature();
  first = 0;
  EXPECT_THAT(keys->Verify(stripped, true, first).message(), HasSubstr("no audit entry is signed"));

  // Another key (a forger's) is not the service's.
  testing::TempDir other;
  auto other_key = EnsureDevAuditKey(other.path());
  ASSERT_TRUE(other_key.ok());
  auto other_signer = AuditSigner::Load(*other_key);
  ASSERT_TRUE(other_signer.ok());
  v1::AuditEntry e = signed_log[0];
  e.set_signature((*other_signer)->Sign(e.hash()));
  first = 0;
  EXPECT_THAT(keys->Verify({e}, true, first).message(), HasSubstr("is signed by a key not given"));
}

// --control with replicas: one target gRPC fails over within, in an order
// of its own per client, and a clear error for what it cannot dial.
TEST(ChannelTargetTest, SeveralEndpointsBecomeOneShuffledTargetOfOneFamily) {
  EXPECT_EQ(*ChannelTarget("control.portcullis.svc:9443"), "control.portcullis.svc:9443");
  std::set<std::string> orders;
  for (int i = 0; i < 64; ++i) {
    auto t = ChannelTarget("198.18.0.1:9443,198.18.0.2:9443,198.18.0.3:9443");
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_TRUE(absl::StartsWith(*t, "ipv4:")) << *t;
    std::vector<std::string> parts = absl::StrSplit(t->substr(5), ',');
    std::sort(parts.begin(), parts.end());
    EXPECT_EQ(absl::StrJoin(parts, ","), "198.18.0.1:9443,198.18.0.2:9443,198.18.0.3:9443");
    orders.insert(*t);
  }
  EXPECT_GT(orders.size(), 1u) << "every client would pick the same replica first";
  auto v6 = ChannelTarget("[2001:db8::1]:9443,[2001:db8::2]:9443");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_TRUE(absl::StartsWith(*v6, "ipv6:[2001:db8::")) << *v6;
  const absl::Status name = ChannelTarget("a.example:9443,198.18.0.2:9443").status();
  EXPECT_THAT(name.message(), HasSubstr("a.example:9443 is not IP:PORT"));
  EXPECT_THAT(name.message(), HasSubstr("one name that resolves to several addresses"));
  EXPECT_THAT(ChannelTarget("198.18.0.1:9443,198.18.0.2").status().message(),
              HasSubstr("198.18.0.2 is not IP:PORT"));
  EXPECT_THAT(ChannelTarget("198.18.0.1:9443,[2001:db8::2]:9443").status().message(),
              HasSubstr("mixes IPv4 and IPv6"));
}

// An agent leaving a stale replica tries it last; peers as gRPC names
// them match endpoints as the user spelled them.
TEST(ChannelTargetTest, TheReplicaLeftIsTriedLast) {
  for (int i = 0; i < 32; ++i) {
    auto t = ChannelTarget("198.18.0.1:9443,198.18.0.2:9443,198.18.0.3:9443", "198.18.0.2:9443");
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE(absl::EndsWith(*t, ",198.18.0.2:9443")) << *t;
  }
  auto v6 = ChannelTarget("[2001:db8:0::1]:9443,[2001:db8::2]:9443",
                          PeerEndpoint("ipv6:%5B2001:db8::1%5D:9443"));
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_TRUE(absl::EndsWith(*v6, ",[2001:db8::1]:9443")) << *v6;
  EXPECT_EQ(PeerEndpoint("ipv4:198.18.0.2:9443"), "198.18.0.2:9443");
  EXPECT_EQ(PeerEndpoint("ipv6:[2001:db8:0::2]:9443"), "[2001:db8::2]:9443");
  EXPECT_TRUE(MayFailOver("198.18.0.1:9443,198.18.0.2:9443"));
  EXPECT_TRUE(MayFailOver("control.portcullis.svc:9443"));
  EXPECT_FALSE(MayFailOver("198.18.0.1:9443"));
  EXPECT_FALSE(MayFailOver("[2001:db8::1]:9443"));
}

TEST(RolloutTest, SelectsNamedNodesOrEveryLabelOfTheSelector) {
  v1::Rollout named;
  named.add_nodes("n1");
  Labels labels;
  labels["zone"] = "b";
  labels["tier"] = "edge";
  EXPECT_TRUE(Selects(named, "n1", {}));
  EXPECT_FALSE(Selects(named, "n2", labels));
  v1::Rollout selector;
  (*selector.mutable_node_selector())["zone"] = "b";
  EXPECT_TRUE(Selects(selector, "n2", labels));
  (*selector.mutable_node_selector())["tier"] = "core";
  EXPECT_FALSE(Selects(selector, "n2", labels)) << "every pair must match";
  EXPECT_FALSE(Selects(v1::Rollout(), "n2", labels)) << "an empty rollout selects nobody";
  EXPECT_EQ(DescribeTargets(selector), "nodes labelled tier=core,zone=b");
}

TEST(RolloutTest, AStagedShareRoundsUpAndKeepsEveryNodeItChoseBefore) {
  std::vector<std::string> agents;
  for (int i = 0; i < 20; ++i) agents.push_back(absl::StrCat("node-", i));
  const std::vector<std::string> tenth = ChooseShare(agents, 10);
  EXPECT_EQ(tenth.size(), 2u);
  EXPECT_EQ(ChooseShare(agents, 11).size(), 3u) << "rounded up";
  EXPECT_EQ(ChooseShare({"a"}, 1).size(), 1u);
  EXPECT_TRUE(ChooseShare({}, 50).empty());
  const std::vector<std::string> half = ChooseShare(agents, 50);
  for (const std::string& n : tenth) {
    EXPECT_NE(std::find(half.begin(), half.end(), n), half.end()) << n << " left at 50%";
  }
  std::reverse(agents.begin(), agents.end());
  EXPECT_EQ(ChooseShare(agents, 10), tenth) << "by name, not by order";
  EXPECT_EQ(ChooseShare(agents, 100).size(), 20u);
}

TEST(RolloutTest, AChangeWatchesTheDropReasonsItsSectionsCanMove) {
  const v1::PolicyVersion a = Version(kPolicy, "a");
  const v1::PolicyVersion ports = Version(Edit(kPolicy, "[80, 443]", "[80]"), "b");
  EXPECT_EQ(ReasonsTouched(a.policy(), ports.policy()),
            (std::vector<std::string>{"conn_rate_source", "not_allowlisted", "port_closed",
                                      "syn_rate_source"}));
  EXPECT_TRUE(ReasonsTouched(a.policy(), a.policy()).empty());
  v1::Policy blocked = a.policy();
  blocked.mutable_spec()->add_blocklist("198.18.9.0/24");
  EXPECT_EQ(ReasonsTouched(a.policy(), blocked), (std::vector<std::string>{"blocklist"}));
}

TEST(RolloutTest, StepsIncreaseToAHundred) {
  EXPECT_TRUE(CheckSteps({10, 50, 100}).ok());
  for (const std::vector<uint32_t>& bad : std::vector<std::vector<uint32_t>>{
           {10, 50}, {50, 10, 100}, {0, 100}, {10, 10, 100}, {10, 150}}) {
    EXPECT_TRUE(absl::IsInvalidArgument(CheckSteps(bad))) << absl::StrJoin(bad, ",");
  }
}

TEST(RolloutTest, ParsesKubernetesLabelsAndNamesWhatIsWrong) {
  auto ok = ParseLabels("topology.kubernetes.io/zone=eu-1a,canary=", "--node-labels");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->at("topology.kubernetes.io/zone"), "eu-1a");
  EXPECT_EQ(ok->at("canary"), "");
  EXPECT_TRUE(ParseLabels("", "--node-labels")->empty());
  for (const char* bad : {"zone", "=b", "zone=b c", "-zone=b", "a=1,a=2", "zone=b/"}) {
    auto r = ParseLabels(bad, "--node-labels");
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("--node-labels")) << bad;
  }
}

// A version's confirmation deadline and its confirmation are durable: a
// service restarted within the window still reverts it, or keeps it.
TEST(StoreTest, ACorruptFileIsRefusedWithHowToRestore) {
  testing::TempDir dir;
  dir.Write("control.db", std::string(8192, 'x'));
  auto store = SqliteStore::Open(dir.path());
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(absl::IsDataLoss(store.status())) << store.status();
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("restore"));
}

TEST(AuditChainTest, HashCoversEveryField) {
  v1::AuditEntry e;
  e.set_seq(1);
  e.set_principal("admin");
  e.set_method("Push");
  const std::string h = AuditEntryHash(e);
  for (auto mutate : std::vector<std::function<void(v1::AuditEntry&)>>{
           [](v1::AuditEntry& x) { x.set_seq(2); },
           [](v1::AuditEntry& x) { x.set_time_unix_nanos(1); },
           [](v1::AuditEntry& x) { x.set_principal("admin2"); },
           [](v1::AuditEntry& x) { x.set_role("r"); },
           [](v1::AuditEntry& x) { x.set_method("Rollback"); },
           [](v1::AuditEntry& x) { x.set_outcome("ok"); },
           [](v1::AuditEntry& x) { x.set_detail("d"); },
           [](v1::AuditEntry& x) { x.set_version(3); },
           [](v1::AuditEntry& x) { x.set_prev_hash("p"); }}) {
    v1::AuditEntry changed = e;
    mutate(changed);
    EXPECT_NE(AuditEntryHash(changed), h) << changed.ShortDebugString();
  }
  // Field boundaries count: "ab"+"c" is not "a"+"bc".
  v1::AuditEntry a = e, b = e;
  a.set_principal("ab");
  a.set_role("c");
  b.set_principal("a");
  b.set_role("bc");
  EXPECT_NE(AuditEntryHash(a), AuditEntryHash(b));
}

// --- Baseline ---------------------------------------------------------------

std::vector<std::string> Refusals(const std::string& text, const std::string* live_text = nullptr,
                                  bool allow_failsafe_change = false) {
  const Baseline baseline{*PortList::Parse(kDefaultProtectedPorts),
                          *PortList::Parse(kDefaultManagementPorts)};
  const v1::Policy candidate = Load(text);
  v1::Policy live;
  if (live_text) live = Load(*live_text);
  policy::Diagnostics diags;
  CheckBaseline(candidate, live_text ? &live : nullptr, allow_failsafe_change, baseline, diags);
  std::vector<std::string> out;
  for (const policy::Diagnostic& d : diags.all()) out.push_back(d.path + ": " + d.message);
  return out;
}

TEST(BaselineTest, AcceptsASafePolicy) { EXPECT_THAT(Refusals(kPolicy), IsEmpty()); }

TEST(BaselineTest, AcceptsTheDocumentedExamples) {
  int examples = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(PORTCULLIS_SOURCE_DIR) + "/docs/examples")) {
    if (entry.path().extension() != ".yaml") continue;
    ++examples;
    auto text = policy::ReadTextFile(entry.path().string());
    ASSERT_TRUE(text.ok());
    EXPECT_THAT(Refusals(*text), IsEmpty()) << entry.path();
  }
  EXPECT_GE(examples, 3);
}

TEST(BaselineTest, RefusesAProtectedPortOpenToAny) {
  EXPECT_THAT(Refusals(Edit(kPolicy, "{ports: [10254], proto: tcp, from: [admins]}",
                            "{ports: [10000-10300], proto: tcp, from: any}")),
              ElementsAre("spec.ports[1]: rule \"tcp 10000-10300 from any\" opens protected "
                          "ports 10254, 10250 to every source (from: any); admit only the "
                          "networks that manage it"));
}

TEST(BaselineTest, RefusesAProtectedPortOpenToASetHoldingEveryAddress) {
  EXPECT_THAT(Refusals(Edit(kPolicy, "{ports: [10254], proto: tcp, from: [admins]}",
                            "{ports: [6443], proto: tcp, from: [admins, world]}")),
              ElementsAre("spec.ports[1]: rule \"tcp 6443 from [admins, world]\" opens protected "
                          "port 6443 to every source (set \"world\" holds 0.0.0.0/0 or ::/0); "
                          "admit only the networks that manage it"));
}

TEST(BaselineTest, RefusesAFailsafeRuleOpenToAny) {
  EXPECT_THAT(Refusals(Edit(kPolicy, "{ports: [22, 10250], proto: tcp, from: [admins]}",
                            "{ports: [22, 10250], proto: tcp, from: any}")),
              ElementsAre(HasSubstr("spec.failsafe[0]: rule \"tcp 22,10250 from any\" opens "
                                    "protected port 10250")));
}

TEST(BaselineTest, RefusesDenyWithoutFailsafeForManagementPorts) {
  EXPECT_THAT(Refusals(Edit(kPolicy, "ports: [22, 10250]", "ports: [10250]")),
              ElementsAre("spec.failsafe: defaultAction: deny needs a failsafe rule for the "
                          "node-management port 22/tcp, so that a mistake in the port rules "
                          "cannot lock the operators out of the nodes"));
}

TEST(BaselineTest, RefusesAllowThatLeavesProtectedPortsOpen) {
  EXPECT_THAT(Refusals(Edit(kPolicy, "defaultAction: deny", "defaultAction: allow")),
              ElementsAre("spec.defaultAction: defaultAction: allow leaves protected ports "
                          "2379-2380, 6443 open to every source; add rules that admit only the "
                          "networks that manage them"));
}

TEST(BaselineTest, RefusesRemovingALiveFailsafeRuleUnlessAllowed) {
  const std::string live = Edit(kPolicy, "    - {ports: [22, 10250], proto: tcp, from: [admins]}\n",
                                "    - {ports: [22, 10250], proto: tcp, from: [admins]}\n"
                                "    - {ports: [2222], proto: tcp, from: [admins]}\n");
  EXPECT_THAT(Refusals(kPolicy, &live),
              ElementsAre("live version's spec.failsafe[1]: the live failsafe rule \"tcp 2222 "
                          "from [admins]\" would no longer admit tcp/2222 from 198.18.1.0/28; push "
                          "with --allow-failsafe-change if that is intended"));
  EXPECT_THAT(Refusals(kPolicy, &live, /*allow_failsafe_change=*/true), IsEmpty());
  EXPECT_THAT(Refusals(live, &live), IsEmpty());
}

// The red team opened protected ports to everyone in halves, which the
// text check (a /0 somewhere) did not see. The baseline judges the union of
// the rule's sets: all of a family, or more than a /8 of IPv4 or a /32 of
// IPv6, is every source.
TEST(BaselineTest, JudgesTheAddressSpaceARuleAdmitsNotHowItIsSpelled) {
  const std::string halves = Edit(
      kPolicy, "    world: [0.0.0.0/0]",
      "    world: [0.0.0.0/0]\n    h4: [0.0.0.0/1, 128.0.0.0/1]\n    h6: [\"::/1\", \"8000::/1\"]\n"
      "    wide: [10.0.0.0/8, 11.0.0.0/32]\n    org: [10.0.0.0/8, \"2001:db8::/32\"]");
  auto with_rule = [&](const std::string& from) {
    return Refusals(
        Edit(halves, "{ports: [10254], proto: tcp, from: [admins]}",
             absl::StrCat("{ports: [10254, 2379, 6443], proto: tcp, from: [", from, "]}")));
  };
  EXPECT_THAT(with_rule("h4"),
              ElementsAre("spec.ports[1]: rule \"tcp 10254,2379,6443 from [h4]\" opens protected "
                          "ports 10254, 2379-2380, 6443 to every source (its sets together hold "
                          "every IPv4 address); admit only the networks that manage it"));
  EXPECT_THAT(with_rule("admins, h6"),
              ElementsAre(HasSubstr("(its sets together hold every IPv6 address)")));
  EXPECT_THAT(with_rule("wide"),
              ElementsAre(HasSubstr("(its sets together hold more IPv4 addresses than a /8)")));
  EXPECT_THAT(with_rule("org"), IsEmpty()) << "a /8 and a /32 are one organisation's";
}

// A failsafe rule kept word for word with its set emptied admitted nothing
// and was accepted: the comparison is on what the rules admit.
TEST(BaselineTest, AFailsafeIsComparedOnTheSourcesAndPortsItAdmits) {
  const std::string live = kPolicy;
  const std::string emptied = Edit(kPolicy, "    admins: [198.18.1.0/28]", "    admins: []");
  EXPECT_THAT(Refusals(emptied, &live),
              ElementsAre("live version's spec.failsafe[0]: the live failsafe rule \"tcp "
                          "22,10250 from [admins]\" would no longer admit tcp/22 from "
                          "198.18.1.0/28; tcp/10250 from 198.18.1.0/28; push with "
                          "--allow-failsafe-change if that is intended"));
  const std::string narrowed =
      Edit(kPolicy, "    admins: [198.18.1.0/28]", "    admins: [198.18.1.0/29]");
  EXPECT_THAT(Refusals(narrowed, &live),
              ElementsAre(HasSubstr("would no longer admit tcp/22 from 198.18.1.8/29")));
  // The same admission, written otherwise, is no change.
  const std::string rewritten =
      Edit(kPolicy, "    - {ports: [22, 10250], proto: tcp, from: [admins]}",
           "    - {ports: [10250], proto: tcp, from: [ops]}\n"
           "    - {ports: [22], proto: tcp, from: [ops, admins]}");
  EXPECT_THAT(Refusals(Edit(rewritten, "    world: [0.0.0.0/0]",
                            "    world: [0.0.0.0/0]\n    ops: [198.18.1.0/29, 198.18.1.8/29]"),
                       &live),
              IsEmpty());
}

TEST(PortListTest, ParsesPortsAndRangesAndRejectsNonsense) {
  auto list = PortList::Parse("10254, 2379-2380,6443");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->ToString(), "10254,2379-2380,6443");
  EXPECT_TRUE(list->Overlaps(2380, 2400));
  EXPECT_FALSE(list->Overlaps(2381, 6442));
  for (const char* bad : {"0", "65536", "10-5", "http", "1-2-3x"}) {
    EXPECT_FALSE(PortList::Parse(bad).ok()) << bad;
  }
}

// --- Agents ---------------------------------------------------------------

TEST(AgentRegistryTest, StalenessFollowsTheMonotonicClockAndDriftTheLiveHash) {
  absl::Duration now = absl::Seconds(1000);
  AgentRegistry agents(absl::Seconds(45), [&] { return now; });
  agents.SetExpected({.live_hash = "sha256:b"});
  v1::AgentStatus a, b;
  a.set_node("a");
  a.set_applied_hash("sha256:a");
  b.set_node("b");
  b.set_applied_hash("sha256:b");
  ASSERT_TRUE(agents.Report(a).ok());
  now += absl::Seconds(40);
  ASSERT_TRUE(agents.Report(b).ok());
  std::vector<v1::AgentState> states = agents.States();
  ASSERT_EQ(states.size(), 2u);
  EXPECT_TRUE(states[0].drifted());
  EXPECT_FALSE(states[0].stale());
  EXPECT_FALSE(states[1].drifted());
  now += absl::Seconds(10);  // a: 50 s without a report; b: 10 s
  states = agents.States();
  EXPECT_TRUE(states[0].stale());
  EXPECT_FALSE(states[1].stale());
  // The wall clock plays no part: a registry is only as stale as its clock.
}

// A canary's drift is judged against the version it should run, and its
// drop rates are per applied version, from its last two reports on each.
TEST(AgentRegistryTest, CanariesAreJudgedByTheirVersionAndRatesArePerVersion) {
  absl::Duration now = absl::Seconds(1000);
  AgentRegistry agents(absl::Seconds(45), [&] { return now; });
  v1::Rollout rollout;
  rollout.add_nodes("a");
  agents.SetExpected({.live_hash = "sha256:new", .stable_hash = "sha256:old", .rollout = rollout});
  auto report = [&](const std::string& node, uint64_t version, const std::string& hash,
                    uint64_t closed) {
    v1::AgentStatus s;
    s.set_node(node);
    s.set_applied_version(version);
    s.set_applied_hash(hash);
    v1::CounterSummary* c = s.add_counters();
    c->set_verdict("drop");
    c->set_reason("port_closed");
    c->set_packets(closed);
    ASSERT_TRUE(agents.Report(s).ok());
  };
  report("a", 7, "sha256:old", 10);
  report("b", 7, "sha256:old", 0);
  now += absl::Seconds(2);
  report("a", 7, "sha256:old", 14);  // 2/s before
  EXPECT_EQ(agents.DropRate("a", 7, {"port_closed"}), 2.0);
  EXPECT_FALSE(agents.DropRate("a", 8, {"port_closed"}).has_value()) << "no report on 8 yet";
  EXPECT_FALSE(agents.DropRate("b", 7, {"port_closed"}).has_value()) << "one report only";
  report("a", 8, "sha256:new", 14);
  now += absl::Seconds(4);
  report("a", 8, "sha256:new", 214);  // 50/s after
  EXPECT_EQ(agents.DropRate("a", 8, {"port_closed"}), 50.0);
  EXPECT_EQ(agents.DropRate("a", 8, {"blocklist"}), 0.0);
  EXPECT_EQ(agents.DropRate("a", 7, {"port_closed"}), 2.0) << "kept beside the new version's";
  const std::vector<v1::AgentState> states = agents.States();
  ASSERT_EQ(states.size(), 2u);
  EXPECT_TRUE(states[0].canary());
  EXPECT_FALSE(states[0].drifted()) << "a canary runs the new version";
  EXPECT_FALSE(states[1].canary());
  EXPECT_FALSE(states[1].drifted()) << "the others keep the old one";
}

// Reports of 25 MB each, and node names carrying terminal escapes, made
// `status` fail for every viewer. Reports are bounded, names are node names,
// and nodes silent for an hour are forgotten.
TEST(AgentRegistryTest, ReportsAreBoundedAndSilentNodesForgotten) {
  absl::Duration now = absl::Seconds(1000);
  AgentRegistry agents(
      absl::Seconds(45), [&] { return now; }, absl::Hours(1));
  v1::AgentStatus s;
  s.set_node("node\x1b[2J");
  EXPECT_EQ(
      agents.Report(s).message(),
      "\"node\\033[2J\" is not a node name (at most 253 letters, digits, '.', '-', '_', ':')");
  s.set_node(std::string(254, 'n'));
  EXPECT_TRUE(absl::IsInvalidArgument(agents.Report(s)));
  s.set_node("big");
  s.set_last_error(std::string(AgentRegistry::kMaxReportBytes, 'e'));
  EXPECT_THAT(agents.Report(s).message(), HasSubstr("bytes; the limit is 16384"));
  s.clear_last_error();
  ASSERT_TRUE(agents.Report(s).ok());
  now += absl::Minutes(59);
  EXPECT_EQ(agents.States().size(), 1u) << "stale, but still shown";
  now += absl::Minutes(2);
  EXPECT_TRUE(agents.States().empty()) << "silent for an hour: forgotten";
}

// Reports sweep out silent nodes at most once a second (a sweep walks every
// node), but a full registry sweeps at once: a node forgotten makes room
// for a new one within the same second.
TEST(AgentRegistryTest, AFullRegistryForgetsSilentNodesBeforeRefusingANewOne) {
  absl::Duration now = absl::Seconds(1000);
  AgentRegistry agents(
      absl::Seconds(45), [&] { return now; }, absl::Hours(1));
  v1::AgentStatus s;
  s.set_node("old-0");
  ASSERT_TRUE(agents.Report(s).ok());
  // The others report just before old-0 has been silent for an hour: the
  // first of them sweeps (too early to forget it), the rest do not.
  now += absl::Hours(1) - absl::Milliseconds(500);
  for (size_t i = 1; i < AgentRegistry::kMaxAgents; ++i) {
    s.set_node(absl::StrCat("node-", i));
    ASSERT_TRUE(agents.Report(s).ok()) << i;
  }
  now += absl::Milliseconds(600);  // old-0 is past the hour; no second since the sweep
  s.set_node("newcomer");
  EXPECT_TRUE(agents.Report(s).ok()) << "the registry is full: it swept, and old-0 made room";
  s.set_node("second-newcomer");
  EXPECT_TRUE(absl::IsResourceExhausted(agents.Report(s))) << "full again, none silent";
  EXPECT_EQ(agents.States().size(), AgentRegistry::kMaxAgents);
}

// --- Roles ------------------------------------------------------------------

TEST(RoleMapTest, FirstMatchingGlobDecides) {
  auto map = RoleMap::Parse(
      "roles:\n  - {subject: alice, role: admin}\n  - {subject: \"node-*\", role: agent}\n"
      "  - {subject: \"*\", role: viewer}\n",
      "roles.yaml");
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->RoleOf("alice"), Role::kAdmin);
  EXPECT_EQ(map->RoleOf("node-7"), Role::kAgent);
  EXPECT_EQ(map->RoleOf("bob"), Role::kViewer);
  auto strict = RoleMap::Parse("roles:\n  - {subject: alice, role: admin}\n", "roles.yaml");
  EXPECT_EQ(strict->RoleOf("bob"), std::nullopt);
}

TEST(RoleMapTest, ErrorsNameFileLineAndColumn) {
  auto bad = RoleMap::Parse("roles:\n  - {subject: alice, role: root}\n", "roles.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(std::string(bad.status().message()),
            "roles.yaml:2:28: \"root\" is not one of: viewer, editor, admin, agent");
  EXPECT_TRUE(RoleMap::Parse(kDevRoleMap, "dev").ok());
}

TEST(RolesTest, PermissionsFollowTheProductRoles) {
  struct Case {
    Role role;
    bool read, edit, rollback, agent;
  };
  for (const Case& c :
       {Case{Role::kViewer, true, false, false, false},
        Case{Role::kEditor, true, true, false, false}, Case{Role::kAdmin, true, true, true, false},
        Case{Role::kAgent, false, false, false, true}}) {
    SCOPED_TRACE(std::string(RoleName(c.role)));
    EXPECT_EQ(Allows(c.role, Permission::kRead), c.read);
    EXPECT_EQ(Allows(c.role, Permission::kEdit), c.edit);
    EXPECT_EQ(Allows(c.role, Permission::kRollback), c.rollback);
    EXPECT_EQ(Allows(c.role, Permission::kAgent), c.agent);
  }
}

}  // namespace
}  // namespace portcullis::control
