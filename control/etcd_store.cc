#include "control/etcd_store.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "control/etcd_agents.h"

namespace portcullis::control {
namespace {

// How often one change is planned again because other replicas changed the
// head first, before it gives up (each loss means another change won).
constexpr int kMaxAttempts = 64;

void Put(etcdserverpb::TxnRequest& txn, std::string key, const std::string& value) {
  etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
  put->set_key(std::move(key));
  put->set_value(value);
}

// Fails the transaction unless `key` does not exist yet: records are
// written once and never changed.
void Absent(etcdserverpb::TxnRequest& txn, std::string key) {
  etcdserverpb::Compare* c = txn.add_compare();
  c->set_key(std::move(key));
  c->set_target(etcdserverpb::Compare::CREATE);
  c->set_result(etcdserverpb::Compare::EQUAL);
  c->set_create_revision(0);
}

void Range(etcdserverpb::TxnRequest& txn, std::string key) {
  txn.add_success()->mutable_request_range()->set_key(std::move(key));
}

// The value of the only key of `r`, or nullopt.
std::optional<std::string> ValueOf(const etcdserverpb::RangeResponse& r) {
  if (r.kvs_size() == 0) return std::nullopt;
  return r.kvs(0).value();
}

int64_t NowNanos() { return absl::ToUnixNanos(absl::Now()); }

absl::Status Damaged(const std::string& key) {
  return absl::DataLossError(absl::StrCat("etcd key ", key, " cannot be decoded"));
}

}  // namespace

std::unique_ptr<AgentShare> EtcdStore::ShareAgents(AgentRegistry& registry) {
  static std::atomic<int> shares{0};
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return std::make_unique<EtcdAgentShare>(
      *client_, prefix_, absl::StrCat(host, "/", getpid(), "/", shares++), registry);
}

absl::StatusOr<std::unique_ptr<EtcdStore>> EtcdStore::Open(const EtcdOptions& options,
                                                           const std::string& prefix) {
  if (prefix.empty() || prefix.front() != '/' || prefix.back() == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("--etcd-prefix ", prefix, ": must start with / and not end with one"));
  }
  auto client = EtcdClient::Create(options);
  if (!client.ok()) return client.status();
  std::unique_ptr<EtcdStore> store(new EtcdStore(*std::move(client), prefix));
  if (auto head = store->ReadHead(); !head.ok()) {
    return absl::Status(
        head.status().code(),
        absl::StrCat("--store etcd (", store->client_->Describe(), "): ", head.status().message()));
  }
  return store;
}

std::string EtcdStore::Key(const char* kind, uint64_t n) const {
  return absl::StrFormat("%s/%s/%020u", prefix_, kind, n);
}

absl::StatusOr<EtcdStore::Head> EtcdStore::ReadHead() {
  etcdserverpb::RangeRequest req;
  req.set_key(prefix_ + "/head");
  auto got = client_->Range(req);
  if (!got.ok()) return got.status();
  Head head;
  if (got->kvs_size() == 0) return head;
  if (!head.record.ParseFromString(got->kvs(0).value())) return Damaged(req.key());
  head.mod_revision = got->kvs(0).mod_revision();
  return head;
}

absl::StatusOr<store::EtcdHead> EtcdStore::Change(AuditRecord audit, const Plan& plan) {
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    auto head = ReadHead();
    if (!head.ok()) return head.status();
    store::EtcdHead next = head->record;
    etcdserverpb::TxnRequest txn;
    AuditRecord record = audit;
    if (absl::Status s = plan(next, txn, record); !s.ok()) return s;
    const v1::AuditEntry entry =
        ChainEntry(std::move(record), next.audit_seq() + 1, next.audit_hash(), NowNanos());
    next.set_audit_seq(entry.seq());
    next.set_audit_hash(entry.hash());
    const std::string audit_key = Key("audit", entry.seq());
    Absent(txn, audit_key);
    Put(txn, audit_key, entry.SerializeAsString());
    Put(txn, prefix_ + "/head", next.SerializeAsString());
    etcdserverpb::Compare* c = txn.add_compare();
    c->set_key(prefix_ + "/head");
    c->set_target(etcdserverpb::Compare::MOD);
    c->set_result(etcdserverpb::Compare::EQUAL);
    c->set_mod_revision(head->mod_revision);  // 0 = the head does not exist yet
    auto committed = client_->Txn(txn);
    if (!committed.ok()) return committed.status();
    if (committed->succeeded()) return next;
    // The head moved. If the client's retry on another member is what
    // found it moved, this very change may be the one that moved it: its
    // audit entry (unique by time and content) tells.
    etcdserverpb::RangeRequest mine;
    mine.set_key(audit_key);
    auto written = client_->Range(mine);
    if (!written.ok()) return written.status();
    if (auto value = ValueOf(*written)) {
      v1::AuditEntry stored;
      if (stored.ParseFromString(*value) && stored.hash() == entry.hash()) return next;
    }
  }
  return absl::AbortedError(
      absl::StrCat("the store changed ", kMaxAttempts,
                   " times under this change; nothing was stored, try again"));
}

absl::StatusOr<std::optional<v1::PolicyVersion>> EtcdStore::Live() {
  return ReadLive(/*with_policy=*/true);
}

absl::StatusOr<std::optional<v1::PolicyVersion>> EtcdStore::LiveHeader() {
  return ReadLive(/*with_policy=*/false);
}

absl::StatusOr<std::optional<v1::PolicyVersion>> EtcdStore::ReadLive(bool with_policy) {
  auto head = ReadHead();
  if (!head.ok()) return head.status();
  if (head->record.live_version() == 0) return std::nullopt;
  return Read(head->record.live_version(), with_policy);
}

absl::StatusOr<v1::PolicyVersion> EtcdStore::Get(uint64_t version) {
  return Read(version, /*with_policy=*/true);
}

absl::StatusOr<v1::PolicyVersion> EtcdStore::Read(uint64_t version, bool with_policy) {
  // One transaction of reads: one revision of all its records.
  etcdserverpb::TxnRequest txn;
  Range(txn, Key("versions", version));
  Range(txn, Key("confirmations", version));
  if (with_policy) Range(txn, Key("policies", version));
  auto got = client_->Txn(txn);
  if (!got.ok()) return got.status();
  const auto meta = ValueOf(got->responses(0).response_range());
  if (!meta) return absl::NotFoundError(absl::StrCat("there is no version ", version));
  v1::PolicyVersion v;
  if (!v.ParseFromString(*meta)) return Damaged(Key("versions", version));
  if (with_policy) {
    const auto policy = ValueOf(got->responses(2).response_range());
    if (!policy || !v.mutable_policy()->ParseFromString(*policy)) {
      return absl::DataLossError(absl::StrCat("version ", version, " cannot be decoded"));
    }
  }
  if (const auto confirmed = ValueOf(got->responses(1).response_range())) {
    int64_t at = 0;
    if (!absl::SimpleAtoi(*confirmed, &at)) return Damaged(Key("confirmations", version));
    v.set_confirmed_unix_nanos(at);
  }
  return v;
}

absl::StatusOr<std::vector<v1::PolicyVersion>> EtcdStore::History(uint32_t limit) {
  etcdserverpb::TxnRequest txn;
  etcdserverpb::RangeRequest* versions = txn.add_success()->mutable_request_range();
  versions->set_key(prefix_ + "/versions/");
  versions->set_range_end(EtcdPrefixEnd(prefix_ + "/versions/"));
  versions->set_sort_order(etcdserverpb::RangeRequest::DESCEND);
  versions->set_sort_target(etcdserverpb::RangeRequest::KEY);
  versions->set_limit(limit);
  etcdserverpb::RangeRequest* confirmations = txn.add_success()->mutable_request_range();
  confirmations->set_key(prefix_ + "/confirmations/");
  confirmations->set_range_end(EtcdPrefixEnd(prefix_ + "/confirmations/"));
  auto got = client_->Txn(txn);
  if (!got.ok()) return got.status();
  std::map<std::string, int64_t> confirmed;  // by the version's key suffix
  for (const mvccpb::KeyValue& kv : got->responses(1).response_range().kvs()) {
    int64_t at = 0;
    if (!absl::SimpleAtoi(kv.value(), &at)) return Damaged(kv.key());
    confirmed[kv.key().substr(kv.key().rfind('/') + 1)] = at;
  }
  std::vector<v1::PolicyVersion> out;
  for (const mvccpb::KeyValue& kv : got->responses(0).response_range().kvs()) {
    v1::PolicyVersion& v = out.emplace_back();
    if (!v.ParseFromString(kv.value())) return Damaged(kv.key());
    if (auto it = confirmed.find(kv.key().substr(kv.key().rfind('/') + 1)); it != confirmed.end()) {
      v.set_confirmed_unix_nanos(it->second);
    }
  }
  return out;
}

absl::StatusOr<uint64_t> EtcdStore::Generation() {
  auto head = ReadHead();
  if (!head.ok()) return head.status();
  return head->record.audit_seq();
}

absl::StatusOr<uint64_t> EtcdStore::AwaitChange(uint64_t generation, absl::Duration timeout) {
  auto head = ReadHead();
  if (!head.ok()) return head.status();
  if (head->record.audit_seq() != generation) return head->record.audit_seq();
  const absl::Time deadline = absl::Now() + timeout;
  if (!client_->AwaitWrite(prefix_ + "/head", head->mod_revision + 1, timeout).ok()) {
    // No stream: wait out the time here rather than spin, then read.
    absl::SleepFor(std::min(deadline - absl::Now(), absl::Milliseconds(500)));
  }
  // A linearizable read: it fails when etcd has no quorum.
  return Generation();
}

absl::StatusOr<v1::PolicyVersion> EtcdStore::AddVersion(v1::PolicyVersion version,
                                                        AuditRecord audit,
                                                        std::optional<uint64_t> checked_at) {
  v1::PolicyVersion stored;
  auto head = Change(std::move(audit), [&](store::EtcdHead& head, etcdserverpb::TxnRequest& txn,
                                           AuditRecord& record) {
    if (checked_at && head.audit_seq() != *checked_at) {
      return StoreMovedError(*checked_at, head.audit_seq());
    }
    stored = version;
    stored.set_version(head.live_version() + 1);
    stored.set_created_unix_nanos(NowNanos());
    head.set_live_version(stored.version());
    // It ends the shadow candidate (judged against the version before) and
    // the rollout in progress; a canary starts its own.
    head.set_shadow_id(0);
    head.clear_rollout();
    if (stored.has_rollout()) {
      stored.mutable_rollout()->set_version(stored.version());
      *head.mutable_rollout() = stored.rollout();
    }
    v1::PolicyVersion meta = stored;
    meta.clear_policy();
    meta.clear_confirmed_unix_nanos();
    for (const char* kind : {"versions", "policies"}) Absent(txn, Key(kind, stored.version()));
    Put(txn, Key("versions", stored.version()), meta.SerializeAsString());
    Put(txn, Key("policies", stored.version()), stored.policy().SerializeAsString());
    record.version = stored.version();
    record.content_hash = stored.content_hash();
    return absl::OkStatus();
  });
  if (!head.ok()) return head.status();
  return stored;
}

absl::Status EtcdStore::AppendAudit(AuditRecord audit) {
  return Change(std::move(audit), [](store::EtcdHead&, etcdserverpb::TxnRequest&,
                                     AuditRecord&) { return absl::OkStatus(); })
      .status();
}

absl::StatusOr<v1::PolicyVersion> EtcdStore::Confirm(uint64_t version, AuditRecord audit) {
  auto current = Get(version);
  if (!current.ok()) return current.status();
  if (current->confirmed_unix_nanos() != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("version ", version, " is already confirmed"));
  }
  int64_t at = 0;
  auto head = Change(std::move(audit), [&](store::EtcdHead& head, etcdserverpb::TxnRequest& txn,
                                           AuditRecord& record) {
    if (head.live_version() != version) {
      return absl::FailedPreconditionError(absl::StrCat("version ", version, " is no longer live"));
    }
    // Another replica's confirmation, stored since, fails the compare
    // below; planned again, this one is refused here.
    etcdserverpb::RangeRequest req;
    req.set_key(Key("confirmations", version));
    req.set_count_only(true);
    auto exists = client_->Range(req);
    if (!exists.ok()) return exists.status();
    if (exists->count() != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("version ", version, " is already confirmed"));
    }
    at = NowNanos();
    Absent(txn, Key("confirmations", version));
    Put(txn, Key("confirmations", version), absl::StrCat(at));
    record.version = version;
    return absl::OkStatus();
  });
  if (!head.ok()) return head.status();
  return Get(version);
}

absl::StatusOr<v1::ShadowCandidate> EtcdStore::AddShadow(v1::ShadowCandidate candidate,
                                                         AuditRecord audit) {
  v1::ShadowCandidate stored;
  auto head = Change(std::move(audit), [&](store::EtcdHead& head, etcdserverpb::TxnRequest& txn,
                                           AuditRecord& record) {
    stored = candidate;
    stored.set_id(head.last_shadow_id() + 1);
    stored.set_created_unix_nanos(NowNanos());
    head.set_last_shadow_id(stored.id());
    head.set_shadow_id(stored.id());
    Absent(txn, Key("shadows", stored.id()));
    Put(txn, Key("shadows", stored.id()), stored.SerializeAsString());
    // The candidate is no version: the chain covers its hash in the detail.
    absl::StrAppend(&record.detail, "; shadow ", stored.id(), " ", stored.content_hash());
    return absl::OkStatus();
  });
  if (!head.ok()) return head.status();
  return stored;
}

absl::StatusOr<std::optional<v1::ShadowCandidate>> EtcdStore::Shadow() {
  auto head = ReadHead();
  if (!head.ok()) return head.status();
  if (head->record.shadow_id() == 0) return std::nullopt;
  etcdserverpb::RangeRequest req;
  req.set_key(Key("shadows", head->record.shadow_id()));
  auto got = client_->Range(req);
  if (!got.ok()) return got.status();
  v1::ShadowCandidate c;
  const auto value = ValueOf(*got);
  if (!value || !c.ParseFromString(*value)) {
    return absl::DataLossError(
        absl::StrCat("shadow candidate ", head->record.shadow_id(), " cannot be decoded"));
  }
  return c;
}

absl::Status EtcdStore::DiscardShadow(uint64_t id, AuditRecord audit) {
  return Change(std::move(audit),
                [&](store::EtcdHead& head, etcdserverpb::TxnRequest&, AuditRecord&) {
                  if (id == 0 || head.shadow_id() != id) {
                    return absl::NotFoundError(
                        absl::StrCat("shadow candidate ", id, " is not the current one"));
                  }
                  head.set_shadow_id(0);
                  return absl::OkStatus();
                })
      .status();
}

absl::StatusOr<std::optional<v1::Rollout>> EtcdStore::Rollout() {
  auto head = ReadHead();
  if (!head.ok()) return head.status();
  if (!head->record.has_rollout()) return std::nullopt;
  return head->record.rollout();
}

absl::Status EtcdStore::PromoteRollout(uint64_t version, AuditRecord audit) {
  return Change(std::move(audit),
                [&](store::EtcdHead& head, etcdserverpb::TxnRequest&, AuditRecord& record) {
                  if (!head.has_rollout() || head.rollout().version() != version) {
                    return absl::NotFoundError(
                        absl::StrCat("version ", version, " is not a canary in progress"));
                  }
                  head.clear_rollout();
                  record.version = version;
                  return absl::OkStatus();
                })
      .status();
}

absl::Status EtcdStore::UpdateRollout(const v1::Rollout& rollout, AuditRecord audit) {
  return Change(std::move(audit),
                [&](store::EtcdHead& head, etcdserverpb::TxnRequest&, AuditRecord& record) {
                  if (!head.has_rollout() || head.rollout().version() != rollout.version()) {
                    return absl::NotFoundError(absl::StrCat("version ", rollout.version(),
                                                            " is not a canary in progress"));
                  }
                  if (absl::Status s = CheckNextStep(head.rollout(), rollout); !s.ok()) return s;
                  *head.mutable_rollout() = rollout;
                  record.version = rollout.version();
                  return absl::OkStatus();
                })
      .status();
}

absl::StatusOr<std::vector<v1::AuditEntry>> EtcdStore::Audit(uint64_t after_seq, uint32_t limit) {
  etcdserverpb::RangeRequest req;
  req.set_key(Key("audit", after_seq + 1));
  req.set_range_end(EtcdPrefixEnd(prefix_ + "/audit/"));
  req.set_limit(limit);
  auto got = client_->Range(req);
  if (!got.ok()) return got.status();
  std::vector<v1::AuditEntry> out;
  out.reserve(got->kvs_size());
  for (const mvccpb::KeyValue& kv : got->kvs()) {
    if (!out.emplace_back().ParseFromString(kv.value())) return Damaged(kv.key());
  }
  return out;
}

}  // namespace portcullis::control
